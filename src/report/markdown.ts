/**
 * The human-readable report: per analysis and layer, short sentences and tables of what matters
 * (top PCs, dead units, SAE sparsity and reconstruction), never JSON dumped into code fences.
 */
import type { EvalResults } from './results.js';

export const fmt = (v: unknown, digits = 3): string => {
  if (typeof v !== 'number') return v === null || v === undefined ? '–' : String(v);
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : v.toFixed(digits);
};
export const pct = (v: unknown): string => (typeof v === 'number' && Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '–');

export function mdTable(header: string[], rows: (string | number)[][]): string {
  const esc = (c: string | number) => String(c).replace(/\|/g, '\\|').replace(/\n/g, ' ');
  return [`| ${header.map(esc).join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

type Obj = Record<string, unknown>;
const num = (o: Obj, k: string): number => (typeof o[k] === 'number' ? (o[k] as number) : NaN);
const arr = (o: Obj, k: string): number[] => (Array.isArray(o[k]) ? (o[k] as number[]) : []);

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

function neuronSection(layer: string, r: Obj): string[] {
  const meanAct = arr(r, 'mean_activation');
  const freq = arr(r, 'sparsity');
  const dead = arr(r, 'dead_units');
  const units = num(r, 'n_units') || meanAct.length;
  const out = [
    `${units} units over ${fmt(num(r, 'n_rows'))} rows. Mean activation ${fmt(mean(meanAct))}; on average a unit is active (> 0) in ${pct(mean(freq))} of rows. ` +
      (dead.length === 0 ? 'No dead units (active in under 1% of rows).' : `${dead.length} dead unit(s) (active in under ${pct(num(r, 'dead_threshold') || 0.01)} of rows): ${dead.slice(0, 20).join(', ')}${dead.length > 20 ? ', …' : ''}.`),
    '',
  ];
  const order = meanAct.map((_, i) => i).sort((a, b) => Math.abs(meanAct[b]!) - Math.abs(meanAct[a]!)).slice(0, 10);
  out.push('Most active units (by |mean activation|):', '');
  out.push(mdTable(['unit', 'mean', 'std', 'max', 'active in'], order.map((i) => [i, fmt(meanAct[i]), fmt(arr(r, 'std_activation')[i]), fmt(arr(r, 'max_activation')[i]), pct(freq[i])])));
  return out;
}

function featureSection(layer: string, r: Obj): string[] {
  const ev = arr(r, 'explained_variance');
  const top10 = ev.slice(0, 10).reduce((a, b) => a + b, 0);
  const k90 = (() => {
    let c = 0;
    for (let i = 0; i < ev.length; i++) if ((c += ev[i]!) >= 0.9) return i + 1;
    return null;
  })();
  const out = [
    `The top 10 principal components explain ${pct(top10)} of the variance` +
      (k90 ? `; ${k90} component(s) reach 90%` : `; the ${ev.length} computed components reach ${pct(ev.reduce((a, b) => a + b, 0))}`) +
      `. Participation ratio ${fmt(num(r, 'participation_ratio'), 2)} (effective dimensionality, out of ${fmt(num(r, 'n_units'))} units).`,
    '',
  ];
  let cum = 0;
  out.push(mdTable(['PC', 'explained variance', 'cumulative'], ev.slice(0, 10).map((v, i) => [i + 1, pct(v), pct((cum += v))])));
  const c = r.clusters as Obj | undefined;
  if (c && Array.isArray(c.sizes)) {
    const sizes = c.sizes as number[];
    const total = sizes.reduce((a, b) => a + b, 0);
    out.push('', `k-means with ${fmt(c.n_clusters)} clusters on the top ${fmt(c.n_dims)} PCs (${fmt(c.n_rows_sampled)} sampled rows, inertia ${fmt(c.inertia)}): cluster sizes ${sizes.map((s) => pct(s / total)).join(', ')}.`);
  }
  return out;
}

function saeSection(layer: string, r: Obj): string[] {
  const arch = String(r.architecture ?? 'topk');
  const out = [
    `${arch === 'topk' ? `TopK (k = ${fmt(r.k)})` : 'ReLU + L1'} sparse autoencoder with ${fmt(r.n_latents)} latents on ${fmt(num(r, 'dim'))}-dimensional rows (${fmt(r.n_rows)} rows, ${fmt(r.epochs)} epochs). ` +
      `On average ${fmt(num(r, 'final_l0'), 2)} latents are active per row; the reconstruction explains ${pct(r.explained_variance)} of the variance; ${pct(r.dead_fraction)} of latents never fire.`,
    '',
    mdTable(['final L0', 'explained variance', 'MSE', 'dead latents', 'final loss'], [[fmt(num(r, 'final_l0'), 2), pct(r.explained_variance), fmt(r.mse), pct(r.dead_fraction), fmt(r.final_loss)]]),
  ];
  const stats = r.training_stats as Record<string, number[]> | undefined;
  const loss = stats?.[`${layer}/loss`] ?? [];
  const l0 = stats?.[`${layer}/l0_sparsity`] ?? [];
  if (loss.length > 0) {
    const pick = loss.length <= 8 ? loss.map((_, i) => i) : [0, 1, 2, Math.floor(loss.length / 2), loss.length - 2, loss.length - 1];
    out.push('', 'Training:', '', mdTable(['epoch', 'loss', 'L0'], pick.map((i) => [i + 1, fmt(loss[i]), fmt(l0[i], 2)])));
  }
  const top = (r.top_latents as { latent: number; frequency: number; top_rows: { shard: string | null; global_step: number | null; row: number; value: number }[] }[] | undefined) ?? [];
  if (top.length > 0) {
    out.push('', 'Most used latents and their top-activating rows:', '');
    out.push(mdTable(['latent', 'active in', 'top rows (shard step, row: value)'], top.slice(0, 10).map((t) => [
      t.latent,
      pct(t.frequency),
      t.top_rows.slice(0, 3).map((x) => `step ${x.global_step ?? "?"} row ${x.row}: ${fmt(x.value)}`).join("; "),
    ])));
  }
  if (typeof r.weights_file === 'string') out.push('', `Weights: \`${r.weights_file}\`.`);
  return out;
}

function probeSection(_layer: string, r: Obj): string[] {
  const targets = (r.targets ?? {}) as Record<string, Obj>;
  const rows = Object.entries(targets).map(([name, t]) => [name, fmt(num(t, 'r2')), fmt(num(t, 'control_r2_shuffled')), String(t.alignment ?? ''), fmt(num(t, 'n_rows'))]);
  const best = Object.entries(targets).sort((a, b) => num(b[1], 'r2') - num(a[1], 'r2'))[0];
  return [
    best ? `Best decoded: \`${best[0]}\` with cross-validated R² ${fmt(num(best[1], 'r2'))} (shuffled-trial control ${fmt(num(best[1], 'control_r2_shuffled'))}).` : 'No targets.',
    '',
    mdTable(['target', 'R²', 'shuffled control R²', 'alignment', 'rows'], rows),
  ];
}

/** Other analyses: their scalar results as a table. */
function genericSection(_layer: string, r: Obj): string[] {
  const scalars = Object.entries(r).filter(([, v]) => typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean');
  return scalars.length ? [mdTable(['result', 'value'], scalars.map(([k, v]) => [k, fmt(v)]))] : ['(no scalar results)'];
}

export type SectionRenderer = (layer: string, result: Record<string, unknown>) => string[];

const renderers: Readonly<Record<string, SectionRenderer>> = { neuron: neuronSection, feature: featureSection, sae: saeSection, probe: probeSection };

const titles: Readonly<Record<string, string>> = {
  neuron: 'Neuron statistics',
  feature: 'Features: PCA and clusters',
  sae: 'Sparse autoencoders',
  probe: 'Linear probes',
  causal: 'Causal analysis',
  circuit: 'Circuits',
  steering: 'Feature steering',
};

export function renderMarkdown(results: EvalResults, meta: { shards_path?: string; created?: string; seconds?: number } = {}): string {
  const out: string[] = ['# Mechanistic interpretability report', ''];
  const cfg = results.config;
  const layers = new Set<string>();
  for (const a of Object.values(results.analyses)) for (const k of Object.keys(a)) if (k !== 'error') layers.add(k);
  out.push(
    `Shards: \`${meta.shards_path ?? String(cfg.storage_path ?? '')}\`. Layers: ${[...layers].map((l) => `\`${l}\``).join(', ') || '–'}. ` +
      `Analyses: ${Object.keys(results.analyses).join(', ') || '–'}.` +
      (meta.created ? ` Run ${meta.created}${meta.seconds !== undefined ? ` in ${meta.seconds.toFixed(1)} s` : ''}.` : ''),
    '',
  );
  for (const [name, byLayer] of Object.entries(results.analyses)) {
    out.push(`## ${titles[name] ?? name}`, '');
    if (typeof byLayer.error === 'string') {
      out.push(`Not run: ${byLayer.error}`, '');
      continue;
    }
    for (const [layer, result] of Object.entries(byLayer)) {
      out.push(`### \`${layer}\``, '');
      const r = result as Obj;
      if (typeof r.error === 'string') out.push(`Failed: ${r.error}`);
      else out.push(...(renderers[name] ?? genericSection)(layer, r));
      out.push('');
    }
  }
  return out.join('\n').replace(/\n{3,}/g, '\n\n');
}
