/**
 * report.html: one self-contained page (no network: SVG charts and styles inline) with, per
 * analysis and layer, the charts and the same sentences and tables as the Markdown report.
 */
import type { EvalResults } from './results.js';
import { esc } from './card-svg.js';
import { chartsForLayer, chartsForAnalysis, type RenderedChart } from './chart-set.js';
import type { CardsResult } from '../analysis/cards.js';
import { cardAnchor, FEATURE_BROWSER_SCRIPT, FEATURE_BROWSER_STYLE } from './feature-browser.js';
import { analysisTitle, fmt, pct, stepsLine } from './sections.js';
import { layerContext, sectionLines, viewFor } from './views.js';


function inline(s: string): string {
  // Links are in-page only (`[text](#anchor)`: the cards), so nothing on the page points off it.
  return esc(s).replace(/`([^`]+)`/g, '<code>$1</code>').replace(/\[([^\]]+)\]\(#([A-Za-z0-9_-]+)\)/g, '<a class="card-link" href="#$2">$1</a>');
}

/** The Markdown subset the report writes (paragraphs and pipe tables) as HTML. */
export function markdownToHtml(input: string[]): string {
  // Sections push whole tables (mdTable) as one multi-line entry.
  const lines = input.flatMap((l) => l.split('\n'));
  const out: string[] = [];
  let i = 0;
  const cells = (l: string) => l.replace(/^\||\|$/g, '').split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.startsWith('|')) {
      const rows: string[] = [];
      while (i < lines.length && lines[i]!.startsWith('|')) rows.push(lines[i++]!);
      const [head, , ...body] = rows;
      out.push(`<table><thead><tr>${cells(head!).map((c) => `<th>${inline(c)}</th>`).join('')}</tr></thead><tbody>`);
      for (const r of body) out.push(`<tr>${cells(r).map((c) => `<td>${inline(c)}</td>`).join('')}</tr>`);
      out.push('</tbody></table>');
      continue;
    }
    if (line.trim() !== '') out.push(`<p>${inline(line)}</p>`);
    i++;
  }
  return out.join('\n');
}

const STYLE = `
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f4f5f7}
header{background:#2f3e4e;color:#fff;padding:16px 28px}header h1{margin:0 0 4px;font-size:22px}header div{font-size:14px;color:#cdd6e0}
nav{margin-top:8px}nav a{color:#fff;margin-right:14px;font-size:14px;text-decoration:none;border-bottom:1px dotted #9ab}
main{padding:8px 28px 40px;max-width:1280px}
section.analysis{margin-top:26px}h2{border-bottom:2px solid #dde;padding-bottom:4px;font-size:20px}
article.layer{background:#fff;border:1px solid #e1e3e8;border-radius:8px;padding:10px 16px;margin:12px 0}article.layer h3{margin:4px 0 8px;font-size:15px}
.layer-body{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start}.layer-body .text{flex:1 1 380px;min-width:320px}
figure.chart{margin:6px 0;display:inline-block;vertical-align:top}
figure.chart svg{max-width:100%;height:auto}
p{font-size:14px;line-height:1.45;margin:6px 0}
table{border-collapse:collapse;margin:6px 0;font-size:12.5px}td,th{border:1px solid #ddd;padding:2px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0}code{background:#f0f0f0;padding:0 3px;border-radius:3px}header code{background:none;color:#fff}
p.error{color:#b00}details.latents summary{cursor:pointer;color:#2f3e4e;margin:6px 0;font-size:14px}
`;

/**
 * Every top latent with each of its top-activating samples on its own row (shard, step, row,
 * value), so a reader can go back to the exact rows; the Markdown table above only lists a few.
 */
export function saeLatentTable(r: Record<string, unknown>, layer = '', cards?: CardsResult): string {
  const top = (Array.isArray(r.top_latents) ? r.top_latents : []) as { latent: number; frequency: number; top_rows?: { shard: string | null; global_step: number | null; row: number; value: number }[] }[];
  if (top.length === 0) return '';
  // A latent with a card links to it (its top examples on the eval data); the rows stay, so each can be found in the shards.
  const carded = new Set((Array.isArray(cards?.cards) ? cards.cards : []).map((c) => c.index));
  const body = top.map((t) => {
    const rows = t.top_rows ?? [];
    const n = Math.max(1, rows.length);
    const card = carded.has(t.latent) ? `<a class="card-link" href="#${cardAnchor(layer, t.latent)}">card</a>` : '–';
    const head = `<td rowspan="${n}"><b>${t.latent}</b></td><td rowspan="${n}">${pct(t.frequency)}</td><td rowspan="${n}">${card}</td>`;
    if (rows.length === 0) return `<tr data-latent="${t.latent}">${head}<td colspan="4">–</td></tr>`;
    return rows.map((x, i) => `<tr data-latent="${t.latent}">${i === 0 ? head : ''}<td><code>${esc(x.shard ?? '–')}</code></td><td>${fmt(x.global_step)}</td><td>${fmt(x.row)}</td><td>${fmt(x.value)}</td></tr>`).join('');
  });
  return `<details class="latents"><summary>Top-activating samples (shard, step, row, activation) of the ${top.length} top latents</summary><table data-table="sae-top-latents"><thead><tr><th>latent</th><th>active in</th><th>card (examples)</th><th>shard</th><th>step</th><th>row</th><th>activation</th></tr></thead><tbody>${body.join('')}</tbody></table></details>`;
}

function figure(c: RenderedChart): string {
  // The chart draws its own title; the label names it for screen readers.
  return `<figure class="chart" data-chart="${esc(c.id)}" role="img" aria-label="${esc(c.title)}">${c.svg}</figure>`;
}

/** Renders the whole page; `charts` are the ones chartSet made (so the Markdown can share the files). */
export async function renderHtml(results: EvalResults, meta: { shards_path?: string; created?: string; missing_shards?: string[] } = {}): Promise<{ html: string; charts: RenderedChart[] }> {
  const all: RenderedChart[] = [];
  const sections: string[] = [];
  for (const [name, byLayer] of Object.entries(results.analyses)) {
    const parts = [`<section class="analysis" id="${esc(name)}" data-analysis="${esc(name)}"><h2>${esc(analysisTitle(name))}</h2>`];
    if (typeof byLayer.error === 'string') {
      parts.push(`<p class="error">Not run: ${inline(byLayer.error)}</p></section>`);
      sections.push(parts.join('\n'));
      continue;
    }
    const shared = await chartsForAnalysis(name, byLayer as Record<string, Record<string, unknown>>);
    all.push(...shared);
    parts.push(...shared.map(figure));
    for (const [layer, result] of Object.entries(byLayer)) {
      const r = result as Record<string, unknown>;
      parts.push(`<article class="layer" data-layer="${esc(layer)}"><h3><code>${esc(layer)}</code></h3>`);
      if (typeof r.error === 'string') parts.push(`<p class="error">Failed: ${inline(r.error)}</p>`);
      else {
        const charts = await chartsForLayer(name, layer, r);
        all.push(...charts);
        const steps = stepsLine(r);
        const ctx = layerContext(results.analyses as Record<string, Record<string, unknown>>, layer);
        parts.push(`<div class="layer-body"><div class="figs">${charts.map(figure).join('\n')}</div><div class="text">${markdownToHtml([...(steps ? [steps] : []), ...sectionLines(name, layer, r, ctx)])}</div></div>`);
        if (name === 'sae') parts.push(saeLatentTable(r, layer, ctx.layerResults?.cards as CardsResult | undefined));
        parts.push(viewFor(name).html?.(layer, r, { hash: true }) ?? '');
      }
      parts.push('</article>');
    }
    parts.push('</section>');
    sections.push(parts.join('\n'));
  }
  const names = Object.keys(results.analyses);
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mechint report</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}${FEATURE_BROWSER_STYLE}</style></head>
<body><header><h1>Mechanistic interpretability report</h1><div>${meta.shards_path ? `Shards: <code>${esc(meta.shards_path)}</code>. ` : ''}${meta.created ? `Run ${esc(meta.created)}.` : ''}${meta.missing_shards?.length ? ` <strong>Partial:</strong> ${meta.missing_shards.length} listed shard(s) were missing and not read: ${meta.missing_shards.map((f) => `<code>${esc(f)}</code>`).join(', ')}.` : ''}</div>
<nav>${names.map((n) => `<a href="#${esc(n)}">${esc(analysisTitle(n))}</a>`).join('')}</nav></header>
<main>${sections.join('\n')}</main><script>${FEATURE_BROWSER_SCRIPT}</script></body></html>
`;
  return { html, charts: all };
}
