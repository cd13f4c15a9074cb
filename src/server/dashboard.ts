/**
 * The dashboard: a page at `/` whose script (src/dashboard/app.ts, compiled by the project's build
 * to dist/dashboard/app.js) calls the HTTP API (`GET /interpret/layers`, `POST /interpret`) and
 * asks `POST /dashboard/render` to draw each result. Charts are drawn here, with the report's own
 * Vega-Lite specs and Vega's SVG renderer, so the browser loads no charting library and nothing
 * from the network.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { chartsForLayer } from '../report/chart-set.js';
import { latentHistogramChart, renderSvg } from '../report/charts.js';
import { markdownToHtml } from '../report/html.js';
import { fmt, pct } from '../report/sections.js';
import { covariateNames, covariateSearchHtml, FEATURE_BROWSER_SCRIPT, FEATURE_BROWSER_STYLE } from '../report/feature-browser.js';
import { sectionLines, viewFor } from '../report/views.js';
import type { CardsResult } from '../analysis/cards.js';
import { BadRequestError } from '../errors.js';
import type { TopLatent } from '../analysis/sae-top-rows.js';

/** Paths that carry no data (the page and its script); they stay open when an API key is set, the page asks for it. */
export const DASHBOARD_PUBLIC_PATHS = ['/', '/dashboard/app.js'] as const;

export interface DashboardOptions {
  /** Whether the server checks an API key (the page then asks for it). */
  readonly auth: boolean;
}

/** Where the compiled script is: beside this module in dist/, or in dist/ when this runs from src/ (tsx). */
const SCRIPT_CANDIDATES = [new URL('../dashboard/app.js', import.meta.url), new URL('../../dist/dashboard/app.js', import.meta.url)];

async function loadScript(): Promise<string | null> {
  for (const url of SCRIPT_CANDIDATES) {
    const text = await readFile(fileURLToPath(url), 'utf8').catch(() => null);
    if (text !== null) return text;
  }
  return null;
}

const STYLE = `
*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f4f5f7}
header{background:#2f3e4e;color:#fff;padding:10px 20px;display:flex;align-items:center;gap:18px}
header h1{font-size:18px;margin:0}header .info{font-size:13px;color:#cdd6e0;flex:1}
header input{font:inherit;padding:3px 6px;border-radius:4px;border:0;width:220px}
.wrap{display:flex;align-items:flex-start}
nav#layers{width:250px;padding:12px;position:sticky;top:0}
nav#layers h2{font-size:13px;text-transform:uppercase;color:#666;margin:4px 0 8px}
nav#layers button{display:block;width:100%;text-align:left;background:#fff;border:1px solid #dde;border-radius:6px;padding:7px 9px;margin:0 0 6px;cursor:pointer;font:inherit}
nav#layers button small{display:block;color:#777;font-size:11px}
nav#layers button.selected{border-color:#4c78a8;background:#e8f0f9;box-shadow:inset 3px 0 0 #4c78a8}
main{flex:1;padding:12px 18px 40px;min-width:0;display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px;align-items:start}
section.panel{background:#fff;border:1px solid #e1e3e8;border-radius:8px;padding:10px 14px;min-width:0}
section.panel.wide{grid-column:1/-1}
section.panel.wide .body{display:flex;flex-wrap:wrap;gap:4px 22px;align-items:flex-start}section.panel.wide .body .text{flex:1 1 360px}
section.panel h2{font-size:16px;margin:2px 0 8px}
.status{color:#777;font-size:13px}.status:empty{display:none}section.panel[data-state=loading] .status::before{content:'';display:inline-block;width:9px;height:9px;margin-right:7px;border:2px solid #ccd;border-top-color:#4c78a8;border-radius:50%;animation:spin 0.9s linear infinite;vertical-align:-1px}@keyframes spin{to{transform:rotate(360deg)}}.status.error{color:#b00}
.charts figure{display:inline-block;vertical-align:top;margin:4px 10px 4px 0}
.charts svg{max-width:100%;height:auto}
table{border-collapse:collapse;margin:6px 0;font-size:12.5px}td,th{border:1px solid #ddd;padding:2px 7px;text-align:left}th{background:#f0f0f0}
code{background:#f0f0f0;padding:0 3px;border-radius:3px}p{font-size:13.5px;line-height:1.45;margin:6px 0}
.cols{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
table.latents tr[data-latent]{cursor:pointer}table.latents tr[data-latent]:hover{background:#f3f7fb}
table.latents tr.selected{background:#d3e3f5;font-weight:600}
.bar{display:inline-block;height:9px;background:#72b7b2;vertical-align:middle;margin-right:4px}
.content{flex:1;min-width:0}main{flex:none}
section#covariate-search{background:#fff;border:1px solid #e1e3e8;border-radius:8px;padding:8px 14px;margin:12px 18px 0}
section#covariate-search form{display:flex;gap:8px;align-items:center;font-size:14px}section#covariate-search input{font:inherit;padding:2px 6px;width:220px}
${FEATURE_BROWSER_STYLE}`;

function page(auth: boolean): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mechint dashboard</title><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><style>${STYLE}</style></head>
<body data-auth="${auth ? 'required' : 'none'}">
<header><h1>mechint dashboard</h1><div class="info" id="info">Loading layers…</div>${auth ? '<label>API key <input id="api-key" type="password" autocomplete="off"></label>' : ''}</header>
<div class="wrap"><nav id="layers"><h2>Layers</h2><div id="layer-list"></div></nav><div class="content">
<section id="covariate-search"><form id="search-form"><label for="covariate">Which latents encode</label><input id="covariate" list="covariate-names" placeholder="a covariate, e.g. latent_0" autocomplete="off"><datalist id="covariate-names"></datalist><span>? (across every layer's cards)</span><button type="submit">Search</button></form><div id="search-results"></div></section>
<main id="views"></main></div></div>
<script>${FEATURE_BROWSER_SCRIPT}</script>
<script type="module" src="/dashboard/app.js"></script>
</body></html>
`;
}

interface RenderBody {
  analysis: string;
  layer: string;
  result: Record<string, unknown>;
  latent?: number;
  context?: Record<string, unknown>;
}

interface SearchBody {
  results: Record<string, CardsResult>;
  covariate?: string;
}

const searchSchema = {
  summary: 'The feature browser\'s search: which latents (cards, across layers) encode a covariate beyond chance, as HTML; and every covariate the cards know',
  tags: ['dashboard'],
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['results'],
    properties: {
      results: { type: 'object', additionalProperties: { type: 'object', additionalProperties: true }, description: 'Cards results by layer (from POST /interpret)' },
      covariate: { type: 'string', minLength: 1, maxLength: 256 },
    },
  },
} as const;

const renderSchema = {
  summary: 'Draw one analysis result as the report does: SVG charts and the report\'s sentences and tables as HTML (the dashboard\'s renderer)',
  tags: ['dashboard'],
  body: {
    type: 'object',
    additionalProperties: false,
    required: ['analysis', 'layer', 'result'],
    properties: {
      analysis: { type: 'string', minLength: 1, maxLength: 64 },
      layer: { type: 'string', minLength: 1, maxLength: 512 },
      result: { type: 'object', additionalProperties: true },
      latent: { type: 'integer', minimum: 0, description: 'With `analysis: "sae"`: draw this top latent alone (activation histogram and top samples)' },
      context: { type: 'object', additionalProperties: { type: 'object', additionalProperties: true }, description: 'Other analyses\' results for the same layer, by analysis (the cards view compares with `probe`)' },
    },
  },
} as const;

/** One latent of an SAE result: its histogram and its top-activating samples. */
async function renderLatent(layer: string, result: Record<string, unknown>, latent: number) {
  // The body is an SAE result the page got from /interpret; what it lacks is drawn as empty.
  const top = (Array.isArray(result.top_latents) ? result.top_latents : []) as Partial<TopLatent>[];
  const t = top.find((x) => x.latent === latent) as TopLatent | undefined;
  if (!t) throw new BadRequestError(`Latent ${latent} is not among the result's top_latents (${top.map((x) => String(x.latent)).join(', ') || 'none'})`);
  const chart = latentHistogramChart(layer, t);
  const rows = Array.isArray(t.top_rows) ? t.top_rows : [];
  const lines = [
    `Latent ${latent} is active in ${pct(t.frequency)} of rows. Its top-activating samples:`,
    '',
    '| shard | step | row | activation |',
    '| --- | --- | --- | --- |',
    ...rows.map((r) => `| \`${String(r.shard ?? '–')}\` | ${fmt(r.global_step)} | ${fmt(r.row)} | ${fmt(r.value)} |`),
  ];
  return { charts: chart ? [{ id: chart.id, title: chart.title, svg: await renderSvg(chart.spec) }] : [], html: markdownToHtml(lines) };
}

export const dashboardRoutes: FastifyPluginAsync<DashboardOptions> = async (app: FastifyInstance, opts: DashboardOptions) => {
  app.get('/', { schema: { hide: true } }, async (_request, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(page(opts.auth)));

  app.get('/dashboard/app.js', { schema: { hide: true } }, async (_request, reply) => {
    const script = await loadScript();
    // From a source checkout the script exists once `npm run build` has compiled it; say so on the page.
    const text = script ?? `document.getElementById('info').textContent = 'The dashboard script is not built: run \`npm run build\` and reload.';`;
    return reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-store').send(text);
  });

  app.post<{ Body: RenderBody }>('/dashboard/render', { schema: renderSchema, bodyLimit: 16 * 1024 * 1024 }, async (request) => {
    const { analysis, layer, result, latent, context } = request.body;
    if (latent !== undefined) {
      if (analysis !== 'sae') throw new BadRequestError(`\`latent\` goes with \`analysis: "sae"\`; got \`${analysis}\``);
      return renderLatent(layer, result, latent);
    }
    const charts = await chartsForLayer(analysis, layer, result, { standalone: true });
    const extra = viewFor(analysis).html?.(layer, result, { hash: false }) ?? '';
    return { charts: charts.map((c) => ({ id: c.id, title: c.title, svg: c.svg })), html: markdownToHtml(sectionLines(analysis, layer, result, { layerResults: context ?? {} })) + extra };
  });

  app.post<{ Body: SearchBody }>('/dashboard/cards-search', { schema: searchSchema, bodyLimit: 64 * 1024 * 1024 }, async (request) => {
    const { results, covariate } = request.body;
    return { covariates: covariateNames(results), html: covariate === undefined ? '' : covariateSearchHtml(results, covariate) };
  });
};
