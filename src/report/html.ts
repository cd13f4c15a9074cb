/**
 * report.html: one self-contained page (no network: SVG charts and styles inline) with, per
 * analysis and layer, the charts and the same sentences and tables as the Markdown report.
 */
import type { EvalResults } from './results.js';
import { chartsForLayer, chartsForAnalysis, type RenderedChart } from './chart-set.js';
import { analysisTitle, sectionLines } from './sections.js';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function inline(s: string): string {
  return esc(s).replace(/`([^`]+)`/g, '<code>$1</code>');
}

/** The Markdown subset the report writes (paragraphs and pipe tables) as HTML. */
export function markdownToHtml(lines: string[]): string {
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
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#2f3e4e;color:#fff;padding:16px 28px}header h1{margin:0 0 4px;font-size:22px}
main{padding:8px 28px 40px;max-width:1100px}
section.analysis{margin-top:28px}h2{border-bottom:2px solid #ddd;padding-bottom:4px}
article.layer{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px 16px;margin:14px 0}
figure.chart{margin:8px 0;display:inline-block;vertical-align:top}figure.chart figcaption{font-size:12px;color:#666}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f0f0f0}code{background:#f0f0f0;padding:0 3px;border-radius:3px}nav a{color:#cde;margin-right:12px}
p.error{color:#b00}
`;

function figure(c: RenderedChart): string {
  return `<figure class="chart" data-chart="${esc(c.id)}">${c.svg}<figcaption>${esc(c.title)}</figcaption></figure>`;
}

/** Renders the whole page; `charts` are the ones chartSet made (so the Markdown can share the files). */
export async function renderHtml(results: EvalResults, meta: { shards_path?: string; created?: string } = {}): Promise<{ html: string; charts: RenderedChart[] }> {
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
        parts.push(...charts.map(figure), markdownToHtml(sectionLines(name, layer, r)));
      }
      parts.push('</article>');
    }
    parts.push('</section>');
    sections.push(parts.join('\n'));
  }
  const names = Object.keys(results.analyses);
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mechint report</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}</style></head>
<body><header><h1>Mechanistic interpretability report</h1><div>${meta.shards_path ? `Shards: <code>${esc(meta.shards_path)}</code>. ` : ''}${meta.created ? `Run ${esc(meta.created)}.` : ''}</div>
<nav>${names.map((n) => `<a href="#${esc(n)}">${esc(analysisTitle(n))}</a>`).join('')}</nav></header>
<main>${sections.join('\n')}</main></body></html>
`;
  return { html, charts: all };
}
