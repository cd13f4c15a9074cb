/**
 * The Markdown that ties the cards to the rest of the report: the best card per probed covariate
 * next to the linear probe's R² for it (does some single latent carry what the probe decodes?),
 * and, for report.md, each card's top examples under an anchor the SAE section links to.
 */
import type { CardsResult, LatentCard } from '../analysis/cards.js';
import type { ProbeResult } from '../analysis/probe.js';
import { fmtNum } from './card-svg.js';
import { cardAnchor, type BrowsedExample } from './feature-browser.js';
import { mdTable } from './sections.js';

const list = <T>(v: readonly T[] | null | undefined): readonly T[] => (Array.isArray(v) ? v : []);
const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** A Markdown link to a card; report.html turns it into a link that opens the card's page. */
export function cardRef(layer: string, index: number, text = `latent ${index}`): string {
  return `[${text}](#${cardAnchor(layer, index)})`;
}

/**
 * The probe's R² for one covariate: `name_j` is dimension j of the probe target `name` (or of
 * `names`, so the demo's `latent_0` finds target `latents`); a covariate named like a target is it.
 */
export function probeR2For(covariate: string, probe: ProbeResult | undefined): { target: string; r2: number | null } | null {
  const targets = probe?.targets ?? {};
  const m = /^(.*)_(\d+)$/.exec(covariate);
  if (m) {
    const [, base, j] = m;
    for (const name of [base!, `${base}s`]) {
      const t = targets[name];
      if (t && Array.isArray(t.r2_per_dim) && Number(j) < t.r2_per_dim.length) return { target: `${name}[${j}]`, r2: t.r2_per_dim[Number(j)] ?? null };
    }
  }
  const t = targets[covariate];
  return t ? { target: covariate, r2: t.r2 ?? null } : null;
}

/** The card with the largest |r| with a covariate (any card, beyond chance or not: the table says which). */
export function bestCardFor(r: CardsResult, covariate: string): { card: LatentCard; r: number; control: number | null } | null {
  let best: { card: LatentCard; r: number; control: number | null } | null = null;
  for (const c of list(r.cards)) {
    const v = c.covariates?.[covariate];
    if (num(v) && (!best || Math.abs(v) > Math.abs(best.r))) best = { card: c, r: v, control: c.covariate_controls?.[covariate] ?? null };
  }
  return best;
}

/** One row per covariate the probe also decoded: the best card's r, its chance level, and the probe R². */
export function cardsVsProbeLines(layer: string, r: CardsResult, probe: ProbeResult | undefined): string[] {
  if (!probe?.targets) return [];
  const names = [...new Set(list(r.cards).flatMap((c) => Object.keys(c.covariates ?? {})))];
  const rows: string[][] = [];
  for (const name of names) {
    const p = probeR2For(name, probe);
    if (!p) continue;
    const best = bestCardFor(r, name);
    const beats = best !== null && Math.abs(best.r) > (best.control ?? 0);
    rows.push([`\`${name}\``, best ? cardRef(layer, best.card.index) : '–', best ? fmtNum(best.r) : '–', best ? fmtNum(best.control) : '–', best ? (beats ? 'yes' : 'no') : '–', `${fmtNum(p.r2)} (\`${p.target}\`)`]);
  }
  if (rows.length === 0) return [];
  return [
    'Best single card per probed covariate (max |r| over this layer\'s cards) next to the linear probe\'s cross-validated R² on the whole layer: a card r² near the probe R² means one latent carries what the probe decodes.',
    '',
    mdTable(['covariate', 'best card', 'card r', 'chance', 'beyond chance', 'probe R²'], rows),
  ];
}

function exampleLine(e: BrowsedExample): string {
  const ctx = Object.entries(e.context ?? {}).slice(0, 8).map(([k, v]) => `${k} ${fmtNum(v)}`).join(', ');
  const input = e.input && Array.isArray(e.input.values) ? `; input window ${e.input.start}–${e.input.start + e.input.values.length - 1}` : '';
  return `sample ${e.sample}, position ${e.position}: ${fmtNum(e.value)}${ctx ? ` (${ctx})` : ''}${input}`;
}

/** report.md only: each card's top examples, under the anchor SAE-section links point at. */
export function cardExamplesMarkdown(layer: string, r: CardsResult): string[] {
  const cards = list(r.cards);
  if (cards.length === 0) return [];
  const out = ['Top examples of each card:', ''];
  for (const c of cards) {
    out.push(`<a id="${cardAnchor(layer, c.index)}"></a>**Latent ${c.index}**: ${list(c.top_examples).map((e) => exampleLine(e as BrowsedExample)).join('; ') || 'no examples'}.`, '');
  }
  return out;
}
