/**
 * What the report says about each analysis and layer: short sentences and tables of what matters
 * (top PCs, dead units, SAE sparsity and reconstruction, ablation rankings, circuit edges), never
 * JSON dumped into code fences. Shared by the Markdown and the HTML report.
 */
import { getAnalysis } from '../analysis/registry.js';
import type { CardsResult } from '../analysis/cards.js';
import type { CausalResult } from '../analysis/causal.js';
import type { CircuitResult } from '../analysis/circuit.js';
import type { DynamicsResult } from '../analysis/dynamics.js';
import type { FeatureAnalysisResult } from '../analysis/feature.js';
import type { NeuronAnalysisResult } from '../analysis/neuron.js';
import type { ProbeResult } from '../analysis/probe.js';
import type { SaeResult } from '../analysis/sae.js';
import type { SteeringResult } from '../analysis/steering.js';
import { cardRef, cardsVsProbeLines } from './card-sections.js';

/** What a section may read beside its own result: the other analyses' results for the same layer. */
export interface SectionContext {
  layerResults?: Readonly<Record<string, unknown>>;
}

/** Another analysis' result for the layer, when it ran and did not fail. */
function sibling<T>(ctx: SectionContext | undefined, analysis: string): T | undefined {
  const r = ctx?.layerResults?.[analysis];
  return r && typeof r === 'object' && typeof (r as Obj).error !== 'string' ? (r as T) : undefined;
}

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
/** Results read back from JSON say null where a number was not finite. */
const n = (v: number | null | undefined): number => (typeof v === 'number' ? v : NaN);
/** …and a result from an older file (or the dashboard's render body) may lack a list its type promises. */
const list = <T>(v: readonly T[] | null | undefined): readonly T[] => (Array.isArray(v) ? v : []);

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

export function neuronSection(_layer: string, r: NeuronAnalysisResult): string[] {
  const meanAct = list(r.mean_activation);
  const freq = list(r.sparsity);
  const dead = list(r.dead_units);
  const units = r.n_units || meanAct.length;
  const out = [
    `${units} units over ${fmt(r.n_rows)} rows. Mean activation ${fmt(mean(meanAct))}; on average a unit is active (> 0) in ${pct(mean(freq))} of rows. ` +
      (dead.length === 0 ? 'No dead units (active in under 1% of rows).' : `${dead.length} dead unit(s) (active in under ${pct(r.dead_threshold || 0.01)} of rows): ${dead.slice(0, 20).join(', ')}${dead.length > 20 ? ', …' : ''}.`),
    '',
  ];
  const order = meanAct.map((_, i) => i).sort((a, b) => Math.abs(meanAct[b]!) - Math.abs(meanAct[a]!)).slice(0, 10);
  out.push('Most active units (by |mean activation|):', '');
  out.push(mdTable(['unit', 'mean', 'std', 'max', 'active in'], order.map((i) => [i, fmt(meanAct[i]), fmt(list(r.std_activation)[i]), fmt(list(r.max_activation)[i]), pct(freq[i])])));
  return out;
}

export function featureSection(_layer: string, r: FeatureAnalysisResult): string[] {
  const ev = list(r.explained_variance);
  const top10 = ev.slice(0, 10).reduce((a, b) => a + b, 0);
  const k90 = (() => {
    let c = 0;
    for (let i = 0; i < ev.length; i++) if ((c += ev[i]!) >= 0.9) return i + 1;
    return null;
  })();
  const out = [
    `The top 10 principal components explain ${pct(top10)} of the variance` +
      (k90 ? `; ${k90} component(s) reach 90%` : `; the ${ev.length} computed components reach ${pct(ev.reduce((a, b) => a + b, 0))}`) +
      `. Participation ratio ${fmt(r.participation_ratio, 2)} (effective dimensionality, out of ${fmt(r.n_units)} units).`,
    '',
  ];
  let cum = 0;
  out.push(mdTable(['PC', 'explained variance', 'cumulative'], ev.slice(0, 10).map((v, i) => [i + 1, pct(v), pct((cum += v))])));
  const c = r.clusters;
  if (c && Array.isArray(c.sizes)) {
    const sizes = c.sizes;
    const total = sizes.reduce((a, b) => a + b, 0);
    out.push('', `k-means with ${fmt(c.n_clusters)} clusters on the top ${fmt(c.n_dims)} PCs (${fmt(c.n_rows_sampled)} sampled rows, inertia ${fmt(c.inertia)}): cluster sizes ${sizes.map((s) => pct(s / total)).join(', ')}.`);
  }
  return out;
}

export function saeSection(layer: string, r: SaeResult, ctx?: SectionContext): string[] {
  const arch = r.architecture ?? 'topk';
  const out = [
    `${arch === 'topk' ? `TopK (k = ${fmt(r.k)})` : 'ReLU + L1'} sparse autoencoder with ${fmt(r.n_latents)} latents on ${fmt(r.dim)}-dimensional rows (${fmt(r.n_rows)} rows, ${fmt(r.epochs)} epochs). ` +
      `On average ${fmt(n(r.final_l0), 2)} latents are active per row; the reconstruction explains ${pct(r.explained_variance)} of the variance; ${pct(r.dead_fraction)} of latents never fire.`,
    '',
    mdTable(['final L0', 'explained variance', 'MSE', 'dead latents', 'final loss'], [[fmt(n(r.final_l0), 2), pct(r.explained_variance), fmt(r.mse), pct(r.dead_fraction), fmt(r.final_loss)]]),
  ];
  const stats = r.training_stats;
  const loss = stats?.[`${layer}/loss`] ?? [];
  const l0 = stats?.[`${layer}/l0_sparsity`] ?? [];
  if (loss.length > 0) {
    const pick = loss.length <= 8 ? loss.map((_, i) => i) : [0, 1, 2, Math.floor(loss.length / 2), loss.length - 2, loss.length - 1];
    out.push('', 'Training:', '', mdTable(['epoch', 'loss', 'L0'], pick.map((i) => [i + 1, fmt(loss[i]), fmt(l0[i], 2)])));
  }
  const top = list(r.top_latents);
  if (top.length > 0) {
    // A top activation is only useful with its example: the latent's card shows them; without one, say where the row is.
    const carded = new Set(list(sibling<CardsResult>(ctx, 'cards')?.cards).map((c) => c.index));
    out.push('', `Most used latents and their top-activating rows${carded.size ? ' (a linked card shows its top examples)' : ''}:`, '');
    out.push(mdTable(['latent', 'active in', 'top activation', 'top rows (shard, step, row: value) or card'], top.slice(0, 10).map((t) => {
      const rows = list(t.top_rows);
      return [
        t.latent,
        pct(t.frequency),
        fmt(rows[0]?.value),
        carded.has(t.latent)
          ? `examples in ${cardRef(layer, t.latent, `card of latent ${t.latent}`)}`
          : rows.slice(0, 3).map((x) => `\`${x.shard ?? '?'}\` step ${x.global_step ?? '?'} row ${x.row}: ${fmt(x.value)}`).join('; ') || '–',
      ];
    })));
  }
  if (typeof r.weights_file === 'string') out.push('', `Weights: \`${r.weights_file}\`.`);
  return out;
}

export function probeSection(_layer: string, r: ProbeResult): string[] {
  const targets = r.targets ?? {};
  const rows = Object.entries(targets).map(([name, t]) => [name, fmt(n(t.r2)), fmt(n(t.control_r2_shuffled)), String(t.alignment ?? ''), fmt(n(t.n_rows))]);
  const best = Object.entries(targets).sort((a, b) => n(b[1].r2) - n(a[1].r2))[0];
  return [
    best ? `Best decoded: \`${best[0]}\` with cross-validated R² ${fmt(n(best[1].r2))} (shuffled-trial control ${fmt(n(best[1].control_r2_shuffled))}).` : 'No targets.',
    '',
    mdTable(['target', 'R²', 'shuffled control R²', 'alignment', 'rows'], rows),
  ];
}

export function dynamicsSection(_layer: string, r: DynamicsResult): string[] {
  const steps = Array.isArray(r.steps) ? r.steps : [];
  if (steps.length === 0) return ['No steps.'];
  const first = steps[0]!;
  const last = steps.at(-1)!;
  return [
    `${steps.length} training step(s) from ${fmt(first.global_step)} to ${fmt(last.global_step)}: the mean activation frequency went from ${pct(first.mean_frequency)} to ${pct(last.mean_frequency)}, ` +
      `dead units from ${pct(first.dead_fraction)} to ${pct(last.dead_fraction)}, and the top 10 PCs' share of the variance from ${pct(first.top10_explained_variance)} to ${pct(last.top10_explained_variance)}.`,
    '',
    mdTable(['step', 'rows', 'mean frequency', 'mean |activation|', 'dead units', 'top-10 PC variance', 'participation ratio'], steps.map((s) => [
      fmt(s.global_step), fmt(s.n_rows), pct(s.mean_frequency), fmt(s.mean_abs_activation), pct(s.dead_fraction), pct(s.top10_explained_variance), fmt(s.participation_ratio, 2),
    ])),
  ];
}

/** Other analyses: their scalar results as a table. */
export function genericSection(_layer: string, r: Obj): string[] {
  const scalars = Object.entries(r).filter(([, v]) => typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean');
  return scalars.length ? [mdTable(['result', 'value'], scalars.map(([k, v]) => [k, fmt(v)]))] : ['(no scalar results)'];
}

// Intervention analyses (causal, circuit, steering): sentences that say what the numbers mean, then a table.

const val = (v: unknown): number => (typeof v === 'number' ? v : NaN);
const unitName = (kind: unknown, unit: unknown) => `${kind === 'sae_latent' ? 'latent' : kind === 'output' ? 'output unit' : 'unit'} ${String(unit)}`;

export function causalSection(layer: string, r: CausalResult): string[] {
  const effects = list(r.unit_effects);
  const loss = r.metric === 'loss_change';
  const how = r.ablation === 'zero' ? 'zeroing' : 'mean-ablating';
  const say = (v: number) => (loss ? `${v >= 0 ? 'raises' : 'lowers'} the eval loss by ${fmt(Math.abs(v))}` : `changes the outputs by ${fmt(v)} (RMS)`);
  const out: string[] = [];
  const sentences: string[] = [];
  const [first, second] = effects;
  if (first && first.effect !== null) {
    sentences.push(`${how[0]!.toUpperCase()}${how.slice(1)} unit ${first.unit} of \`${layer}\` ${say(first.effect)} (the largest effect of ${fmt(r.n_units_tested)} units tested${r.unit_selection === 'all' ? '' : `, the most active of ${fmt(r.n_units)}`})`);
    if (second && second.effect !== null) sentences[0] += `; next is unit ${second.unit} (${fmt(second.effect)})`;
    sentences[0] += '.';
    const top = Math.abs(first.effect);
    const negligible = effects.filter((e) => Math.abs(e.effect ?? 0) < 0.01 * top).length;
    if (negligible > 0) sentences.push(`${negligible} unit(s) have effects under 1% of the largest: the output barely depends on them.`);
  }
  if (typeof r.layer_effect === 'number') sentences.push(`Ablating the whole layer ${say(r.layer_effect)}${loss && typeof r.baseline_loss === 'number' ? ` (clean loss ${fmt(r.baseline_loss)})` : ''}.`);
  out.push(sentences.join(' ') || 'No unit effects.', '');
  if (effects.length) out.push(mdTable(['rank', 'unit', loss ? 'loss change' : 'output RMS change', 'mean activation'], effects.slice(0, 10).map((e, i) => [i + 1, e.unit, fmt(e.effect), fmt(e.mean_activation)])), '');
  const p = r.patching;
  if (p && 'error' in p) out.push(`Activation patching did not run: ${p.error}`);
  else if (p) {
    const corr = p.corruption === 'given' ? 'the given corrupted inputs' : p.corruption === 'noise' ? 'noise-corrupted inputs' : 'inputs shuffled across samples';
    const units = list(p.units);
    const frac = val(p.restored_fraction);
    const verdict = frac >= 0.9 ? 'the layer carries nearly everything that differs between the two runs' : Math.abs(frac) < 0.1 ? 'what differs between the runs reaches the output without passing through this layer' : 'the layer carries part of the difference';
    let s = `Patching the clean activations of \`${layer}\` into runs on ${corr} restores ${pct(frac)} of the clean–corrupted output difference (RMS ${fmt(p.output_difference_rms)}): ${verdict}.`;
    const best = [...units].sort((a, b) => val(b.restored_fraction) - val(a.restored_fraction))[0];
    if (best) s += ` Patching unit ${best.unit} alone restores ${pct(best.restored_fraction)}.`;
    out.push(s);
    const perHead = Object.entries(p.restored_fraction_per_head ?? {});
    if (perHead.length > 1) out.push('', `Per output: ${perHead.map(([h, v]) => `\`${h}\` ${pct(v)}`).join(', ')}.`);
  }
  return out;
}

export function circuitSection(layer: string, r: CircuitResult): string[] {
  const edges = list(r.edges);
  const basis = r.basis;
  if (!basis) return [String(r.note ?? 'No downstream layer.')];
  const down = r.downstream === 'output' ? 'the model outputs' : `\`${String(r.downstream)}\``;
  const kinds = `${basis.upstream.replace('_', ' ')} → ${basis.downstream.replace('_', ' ')}`;
  if (edges.length === 0) return [`No edge from \`${layer}\` to ${down} has a non-zero attribution (${kinds}, ${fmt(r.n_samples)} samples).`];
  const e = edges[0]!;
  const src = unitName(basis.upstream === 'sae_latents' ? 'sae_latent' : 'unit', e.source_unit);
  const dst = `${unitName(basis.downstream === 'sae_latents' ? 'sae_latent' : basis.downstream === 'output_units' ? 'output' : 'unit', e.target_unit)}${basis.downstream === 'output_units' ? ` of \`${String(e.target_layer)}\`` : ''}`;
  const agree = edges.filter((x) => x.agrees === true).length;
  const out = [
    `From \`${layer}\` to ${down} (${kinds}), the ${edges.length} strongest of ${fmt(r.n_candidate_edges)} candidate edges by gradient × activation over ${fmt(r.n_samples)} samples are kept. ` +
      `The strongest is ${src} → ${dst}: attribution ${fmt(e.attribution)} (${val(e.attribution) >= 0 ? 'it drives' : 'it suppresses'} the target); removing ${src} changes the target by ${fmt(val(e.ablation_effect) === 0 ? 0 : -val(e.ablation_effect))}${e.agrees ? ', which confirms it' : ', which does not confirm it'}. ` +
      `Ablation confirms ${agree} of ${edges.length} kept edges (same sign as the attribution).`,
    '',
    mdTable(['source', 'target', 'attribution', 'ablation effect', 'confirmed'], edges.slice(0, 15).map((x) => [
      `${String(x.source_layer)}:${String(x.source_unit)}`, `${String(x.target_layer)}:${String(x.target_unit)}`, fmt(x.attribution), fmt(x.ablation_effect), x.agrees ? 'yes' : 'no',
    ])),
    '',
    'Ablation effect = mean of the target with the source present minus with it removed (its share of the target).',
  ];
  return out;
}

export function steeringSection(layer: string, r: SteeringResult): string[] {
  const latents = list(r.latents);
  if (latents.length === 0) return [`No SAE latent of \`${layer}\` fires on the eval inputs, so none was steered.`];
  const rows: (string | number)[][] = [];
  const sentences: string[] = [];
  for (const l of latents) {
    const mult = list(l.alpha_multipliers);
    const iMax = mult.reduce((best, m, i) => (m > mult[best]! ? i : best), 0);
    const heads = list(l.heads);
    const parts = heads.map((h) => {
      const u = h.top_units[0] ?? 0;
      rows.push([l.latent, pct(l.frequency), h.head, u, fmt(h.slope[u]), fmt(h.rms_change[iMax])]);
      return `\`${h.head}\` by RMS ${fmt(h.rms_change[iMax])} (most along unit ${u}, slope ${fmt(h.slope[u])})`;
    });
    const unit = r.alpha_units === 'latent' ? `${fmt(mult[iMax])}× its typical activation ${fmt(l.mean_active_activation)}` : `α = ${fmt(mult[iMax])}`;
    sentences.push(`Adding latent ${String(l.latent)}'s decoder direction (it fires in ${pct(l.frequency)} of rows) at ${unit} moves ${parts.join(' and ')}.`);
  }
  return [
    sentences.join(' '),
    '',
    mdTable(['latent', 'fires in', 'output', 'most moved unit', 'slope (per unit of added activation)', 'RMS change at largest α'], rows),
  ];
}

export function cardsSection(layer: string, r: CardsResult, ctx?: SectionContext): string[] {
  const cards = list(r.cards);
  if (cards.length === 0) return [`No SAE latent of \`${layer}\` fires on the eval inputs, so there are no cards.`];
  const matched = cards.filter((c) => c.best_covariate && Math.abs(n(c.best_covariate.r)) > n(c.best_covariate.control_r)).length;
  const rows = cards.map((c) => {
    const b = c.best_covariate;
    const top = [...list(c.output_effects?.removal?.heads)].sort((x, y) => n(y.rms_change) - n(x.rms_change))[0];
    return [
      cardRef(layer, c.index, String(c.index)), pct(c.density), fmt(c.max_activation),
      b ? `${b.name} (${b.statistic === 'eta' ? 'η' : 'r'} ${fmt(b.r, 2)}, chance ${fmt(b.control_r, 2)})` : '–',
      top ? `${top.head}: RMS ${fmt(top.rms_change)}` : '–',
      fmt(c.output_effects?.removal?.loss_change),
      list(c.neighbours).map((x) => `${x.index} (${fmt(x.cosine, 2)})`).join(', '),
    ];
  });
  return [
    `${cards.length} card(s) for the most active of ${fmt(r.n_latents)} SAE latents of \`${layer}\` on ${fmt(r.n_samples)} eval samples (${fmt(r.n_rows)} rows); ${matched} track a covariate beyond its shuffled-sample chance level.`,
    '',
    mdTable(['latent', 'active in', 'max', 'best covariate', 'removal moves', 'loss change', 'neighbours (cosine)'], rows),
    '',
    ...cards.slice(0, 8).map((c) => `- ${c.description}`),
    ...(() => {
      const vs = cardsVsProbeLines(layer, r, sibling<ProbeResult>(ctx, 'probe'));
      return vs.length ? ['', ...vs] : [];
    })(),
  ];
}

/** Which training steps a layer's result read, when the executor says so. */
export function stepsLine(result: { step_selection?: { selection: unknown; read: readonly number[] } }): string | null {
  const s = result.step_selection;
  if (!s || !Array.isArray(s.read) || s.read.length === 0) return null;
  const range = s.read.length === 1 ? `global step ${s.read[0]}` : `global steps ${s.read[0]}–${s.read.at(-1)} (${s.read.length} steps)`;
  const how = s.selection === 'last' ? 'the last step' : Array.isArray(s.selection) ? `steps ${s.selection[0]}–${s.selection[1]}` : 'every captured step';
  return `Rows of ${range}: ${how}.`;
}

/** The heading of an analysis: its definition's title. */
export function analysisTitle(name: string): string {
  return getAnalysis(name)?.title ?? name;
}
