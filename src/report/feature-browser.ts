/**
 * The feature browser, one view for report.html and the dashboard: per layer a sortable table of
 * the latent cards and a page per card (histogram, covariates against their chance level, top
 * examples with their context, input window and traces, output effects, neighbours), plus the
 * cross-layer search "which latents encode <covariate>?". Everything is an HTML string; the one
 * small script (FEATURE_BROWSER_SCRIPT) sorts tables and opens card pages by event delegation, so
 * it works on a static page and on HTML the dashboard inserts later alike.
 */
import type { CardsResult, LatentCard, TopExample } from '../analysis/cards.js';
import { barsVsControlSvg, esc, fmtNum, histogramSvg, rasterSvg, sparklineSvg } from './card-svg.js';
import { slug } from './charts.js';

/** Fields the lead is adding to TopExample; read when present (older results lack them). */
export type BrowsedExample = TopExample & {
  input?: { start: number; values: (number | null)[][] };
  traces?: Record<string, (number | null)[]>;
};

/** A result read back from JSON (or a render body) may lack a list its type promises. */
const list = <T>(v: readonly T[] | null | undefined): readonly T[] => (Array.isArray(v) ? v : []);
const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const pct = (v: unknown): string => (num(v) ? `${(v * 100).toFixed(1)}%` : '–');
const sym = (c: LatentCard, name: string) => (c.best_covariate?.name === name && c.best_covariate.statistic === 'eta' ? 'η' : 'r');

/** The anchor (report.html) and key (dashboard) of one card. */
export function cardAnchor(layer: string, index: number): string {
  return `card-${slug(layer)}-${index}`;
}

/** Escaped text with the description's `name` spans as code. */
const code = (s: string) => esc(s).replace(/`([^`]+)`/g, '<code>$1</code>');

function cardLink(layer: string, index: number, text: string): string {
  return `<a class="card-link" href="#${cardAnchor(layer, index)}" data-layer="${esc(layer)}" data-index="${index}">${esc(text)}</a>`;
}

/** The loss change when the latent's contribution is removed (null without targets). */
const lossChange = (c: LatentCard): number | null => c.output_effects?.removal?.loss_change ?? null;

function cell(text: string, value: string | number | null, html = false): string {
  return `<td data-value="${esc(value === null ? '' : String(value))}">${html ? text : esc(text)}</td>`;
}

/** The sortable table of one layer's cards: a click on a header sorts, a click on a row opens its page. */
export function cardTableHtml(layer: string, r: CardsResult): string {
  const cols: [string, 'num' | 'text'][] = [['latent', 'num'], ['density', 'num'], ['best covariate', 'text'], ['|r|', 'num'], ['chance', 'num'], ['loss change on removal', 'num'], ['description', 'text']];
  const head = cols.map(([h, kind], i) => `<th data-sort="${kind}" data-col="${i}" title="Sort by ${esc(h)}">${esc(h)}</th>`).join('');
  const rows = list(r.cards).map((c) => {
    const b = c.best_covariate;
    const absR = b && num(b.r) ? Math.abs(b.r) : null;
    return `<tr data-card="${cardAnchor(layer, c.index)}" data-index="${c.index}">` +
      cell(cardLink(layer, c.index, String(c.index)), c.index, true) +
      cell(pct(c.density), c.density) +
      cell(b ? b.name : '–', b ? b.name : '') +
      cell(b ? `${b.statistic === 'eta' ? 'η' : 'r'} ${fmtNum(b.r)}` : '–', absR) +
      cell(fmtNum(b?.control_r), b?.control_r ?? null) +
      cell(fmtNum(lossChange(c)), lossChange(c)) +
      cell(code(c.description ?? ''), c.description ?? '', true) +
      '</tr>';
  });
  return `<table class="cards" data-table="cards" data-layer="${esc(layer)}"><thead><tr>${head}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function exampleHtml(layer: string, card: LatentCard, e: BrowsedExample, i: number): string {
  const title = `sample ${e.sample}, position ${e.position}: ${fmtNum(e.value)}`;
  const parts = [`<div class="example" data-sample="${e.sample}" data-position="${e.position}"><div class="example-head"><b>#${i + 1}</b> ${esc(title)}</div>`];
  const values = list(e.values);
  if (values.length > 1) parts.push(`<div class="trace"><span>latent ${card.index}</span>${sparklineSvg(values, `Latent ${card.index} over the positions of sample ${e.sample}`, { mark: e.position, color: '#72b7b2' })}</div>`);
  const input = e.input;
  if (input && Array.isArray(input.values) && input.values.length > 0) {
    const at = e.position - (input.start ?? 0);
    const span = input.values.length === 1 ? 'input (flat)' : `input ${input.start}–${input.start + input.values.length - 1}`;
    parts.push(`<div class="trace input"><span>${span}</span>${rasterSvg(input.values, `Model input around position ${e.position} of sample ${e.sample} (positions across, input channels down)`, { mark: at })}</div>`);
    for (const [name, tr] of Object.entries(e.traces ?? {})) {
      if (Array.isArray(tr) && tr.length > 0) parts.push(`<div class="trace"><span>${esc(name)}</span>${sparklineSvg(tr, `${name} around position ${e.position}`, { mark: at, height: 30, color: '#f58518' })}</div>`);
    }
  } else {
    for (const [name, tr] of Object.entries(e.traces ?? {})) {
      if (Array.isArray(tr) && tr.length > 0) parts.push(`<div class="trace"><span>${esc(name)}</span>${sparklineSvg(tr, `${name} of sample ${e.sample}`, { height: 30, color: '#f58518' })}</div>`);
    }
  }
  const ctx = Object.entries(e.context ?? {});
  if (ctx.length) parts.push(`<table class="context"><tbody>${ctx.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${fmtNum(v)}</td></tr>`).join('')}</tbody></table>`);
  parts.push('</div>');
  return parts.join('');
}

function effectsHtml(c: LatentCard): string {
  const removal = c.output_effects?.removal;
  const steering = c.output_effects?.steering;
  const rows = list(removal?.heads).map((h) => {
    const s = list(steering?.heads).find((x) => x.head === h.head);
    const top = list(s?.top_units).slice(0, 3).map((u) => `${u} (${fmtNum(s?.slope?.[u])})`).join(', ');
    return `<tr><td><code>${esc(h.head)}</code></td><td>${fmtNum(h.rms_change)}</td><td>${top || '–'}</td></tr>`;
  });
  const loss = lossChange(c);
  const bars = barsVsControlSvg(list(removal?.heads).map((h) => ({ name: h.head, value: h.rms_change, control: null })), `Output RMS change when latent ${c.index} is removed`, 'output RMS change when the latent is removed');
  return `<p>Removing the latent's contribution ${loss === null ? 'moves the outputs as below (no targets, so no loss change)' : `changes the eval loss by <b>${loss >= 0 ? '+' : ''}${fmtNum(loss)}</b>`}; steering along its decoder row moves each output unit by the slope (per unit of added activation).</p>` +
    `<figure class="card-chart" data-card-chart="effects">${bars}</figure>` +
    `<table class="effects"><thead><tr><th>output</th><th>RMS change on removal</th><th>most steered units (slope)</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** One card's page (hidden until the script opens it: a click, or the URL's hash on load). */
export function cardPageHtml(layer: string, r: CardsResult, c: LatentCard): string {
  const id = cardAnchor(layer, c.index);
  const known = new Set(list(r.cards).map((x) => x.index));
  const covs = Object.entries(c.covariates ?? {})
    .map(([name, v]) => ({ name, value: v, control: c.covariate_controls?.[name] ?? null }))
    .sort((a, b) => Math.abs(b.value ?? 0) - Math.abs(a.value ?? 0))
    .slice(0, 16);
  const b = c.best_covariate;
  const h = c.histogram;
  const neighbours = list(c.neighbours).map((n) => (known.has(n.index) ? cardLink(layer, n.index, `latent ${n.index}`) : `latent ${n.index}`) + ` (cosine ${fmtNum(n.cosine)})`);
  return `<section class="card-page" id="${id}" data-card-id="${id}" data-layer="${esc(layer)}" data-index="${c.index}">` +
    `<h4>Latent ${c.index} of <code>${esc(layer)}</code> <a class="card-back" href="#cards-${slug(layer)}">back to the table</a></h4>` +
    `<p class="description">${code(c.description ?? '')}</p>` +
    `<p>Active on ${pct(c.density)} of eval rows; mean ${fmtNum(c.mean_activation)}, mean when active ${fmtNum(c.mean_active_activation)}, max ${fmtNum(c.max_activation)}.` +
    (b ? ` Best covariate <code>${esc(b.name)}</code>: ${sym(c, b.name)} = ${fmtNum(b.r)} against a shuffled-sample chance of ${fmtNum(b.control_r)}.` : '') + '</p>' +
    '<div class="card-figs">' +
    `<figure class="card-chart" data-card-chart="histogram"><figcaption>Activation when active (${h?.n_zero ?? '–'} rows at 0)</figcaption>${histogramSvg(list(h?.bin_edges), list(h?.counts), `Activation histogram of latent ${c.index}`)}</figure>` +
    `<figure class="card-chart" data-card-chart="covariates"><figcaption>Covariates: |r| against chance</figcaption>${barsVsControlSvg(covs, `Covariate correlations of latent ${c.index}`)}</figure>` +
    '</div>' +
    `<h5>Top examples</h5><div class="examples">${list(c.top_examples).map((e, i) => exampleHtml(layer, c, e as BrowsedExample, i)).join('') || '<p>No examples.</p>'}</div>` +
    `<h5>Output effects</h5>${effectsHtml(c)}` +
    `<h5>Neighbours (decoder cosine)</h5><p class="neighbours">${neighbours.join(', ') || '–'}</p>` +
    '</section>';
}

/** One layer's browser: the table, then every card's page. `hash`: opening a card sets the URL's hash (report.html). */
export function featureBrowserHtml(layer: string, r: CardsResult, opts: { hash?: boolean } = {}): string {
  const cards = list(r.cards);
  if (cards.length === 0) return '';
  return `<div class="feature-browser" id="cards-${slug(layer)}" data-layer="${esc(layer)}"${opts.hash ? ' data-hash="1"' : ''}>` +
    `<p class="hint">Feature browser: click a column header to sort, a row to open its card.</p>${cardTableHtml(layer, r)}` +
    `<div class="card-pages">${cards.map((c) => cardPageHtml(layer, r, c)).join('')}</div></div>`;
}

export interface CovariateHit {
  layer: string;
  index: number;
  r: number;
  control: number | null;
}

/** Every covariate some card was related to, sorted. */
export function covariateNames(byLayer: Record<string, CardsResult>): string[] {
  const names = new Set<string>();
  for (const r of Object.values(byLayer)) for (const c of list(r?.cards)) for (const k of Object.keys(c.covariates ?? {})) names.add(k);
  return [...names].sort();
}

/** The cards, across layers, whose |r| with `covariate` beats its shuffled-sample chance level, strongest first. */
export function searchCovariate(byLayer: Record<string, CardsResult>, covariate: string): CovariateHit[] {
  const hits: CovariateHit[] = [];
  for (const [layer, r] of Object.entries(byLayer)) {
    for (const c of list(r?.cards)) {
      const v = c.covariates?.[covariate];
      const control = c.covariate_controls?.[covariate] ?? null;
      if (num(v) && Math.abs(v) > (control ?? 0)) hits.push({ layer, index: c.index, r: v, control });
    }
  }
  return hits.sort((a, b) => Math.abs(b.r) - Math.abs(a.r));
}

/** The search's answer: a table of hits linking to their card pages, which come along (hidden). */
export function covariateSearchHtml(byLayer: Record<string, CardsResult>, covariate: string): string {
  const hits = searchCovariate(byLayer, covariate);
  const layers = Object.keys(byLayer).length;
  if (hits.length === 0) return `<div class="feature-browser covariate-search" data-covariate="${esc(covariate)}"><p>No card of the ${layers} layer(s) with cards relates to <code>${esc(covariate)}</code> beyond its chance level.</p></div>`;
  const rows = hits.map((h) => `<tr data-card="${cardAnchor(h.layer, h.index)}"><td><code>${esc(h.layer)}</code></td><td>${cardLink(h.layer, h.index, `latent ${h.index}`)}</td><td>${fmtNum(h.r)}</td><td>${fmtNum(h.control)}</td></tr>`);
  const pages = hits.map((h) => {
    const r = byLayer[h.layer]!;
    return cardPageHtml(h.layer, r, list(r.cards).find((c) => c.index === h.index)!);
  });
  return `<div class="feature-browser covariate-search" data-covariate="${esc(covariate)}"><p>${hits.length} card(s) in ${layers} layer(s) encode <code>${esc(covariate)}</code> beyond chance (|r| above the shuffled control), strongest first:</p>` +
    `<table data-table="covariate-search"><thead><tr><th>layer</th><th>card</th><th>r</th><th>chance</th></tr></thead><tbody>${rows.join('')}</tbody></table><div class="card-pages">${pages.join('')}</div></div>`;
}

export const FEATURE_BROWSER_STYLE = `
.feature-browser table.cards th[data-sort]{cursor:pointer;user-select:none}.feature-browser th[aria-sort=ascending]::after{content:' ▲'}.feature-browser th[aria-sort=descending]::after{content:' ▼'}
.feature-browser tr[data-card]{cursor:pointer}.feature-browser tr[data-card]:hover{background:#f3f7fb}.feature-browser tr.selected{background:#d3e3f5}
.feature-browser td:last-child{max-width:520px}.feature-browser p.hint{color:#666;font-size:12.5px}
.card-page{display:none;border:1px solid #cfd8e3;border-radius:8px;padding:8px 14px;margin:10px 0;background:#fbfcfe}.card-page.shown{display:block}
.card-page h4{margin:4px 0;font-size:15px}.card-page h5{margin:10px 0 4px;font-size:13px}.card-page a.card-back{font-size:12px;font-weight:normal;margin-left:10px}
.card-figs{display:flex;flex-wrap:wrap;gap:8px 24px}.card-chart{margin:4px 0}.card-chart figcaption{font-size:12px;color:#555}
.examples{display:flex;flex-wrap:wrap;gap:10px}.example{border:1px solid #e1e3e8;border-radius:6px;padding:4px 8px;background:#fff;font-size:12px}
.example .trace{display:flex;align-items:center;gap:6px}.example .trace span{width:80px;color:#555;font-size:11px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
table.context td{padding:0 5px;font-size:11px}
`;

/** Sorting and opening cards, by delegation on the document (HTML inserted later is covered too). */
export const FEATURE_BROWSER_SCRIPT = `(function(){
if (window.__mechintFeatureBrowser) return; window.__mechintFeatureBrowser = true;
function show(root, id, setHash){
  var hit = null;
  root.querySelectorAll('.card-page').forEach(function(p){ var on = p.getAttribute('data-card-id') === id; p.classList.toggle('shown', on); if (on) hit = p; });
  if (!hit) return false;
  root.querySelectorAll('tr[data-card]').forEach(function(tr){ tr.classList.toggle('selected', tr.getAttribute('data-card') === id); });
  if (setHash && root.getAttribute('data-hash') === '1') history.replaceState(null, '', '#' + id);
  hit.scrollIntoView({ block: 'nearest' });
  return true;
}
function sortBy(th){
  var table = th.closest('table'), col = Number(th.getAttribute('data-col')), numeric = th.getAttribute('data-sort') === 'num';
  var dir = th.getAttribute('aria-sort') === 'descending' ? 'ascending' : 'descending';
  table.querySelectorAll('th[data-sort]').forEach(function(h){ h.removeAttribute('aria-sort'); });
  th.setAttribute('aria-sort', dir);
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var key = function(tr){ var v = tr.cells[col].getAttribute('data-value') || ''; if (!numeric) return v; var n = parseFloat(v); return isNaN(n) ? -Infinity : n; };
  rows.sort(function(a, b){ var x = key(a), y = key(b); var c = numeric ? (x < y ? -1 : x > y ? 1 : 0) : String(x).localeCompare(String(y)); return dir === 'ascending' ? c : -c; });
  rows.forEach(function(r){ body.appendChild(r); });
  table.setAttribute('data-sorted', col + ':' + dir);
}
function fromHash(){
  var id = decodeURIComponent(location.hash.slice(1));
  if (id.indexOf('card-') !== 0) return;
  var page = document.getElementById(id), root = page && page.closest('.feature-browser');
  if (root) show(root, id, false);
}
document.addEventListener('click', function(e){
  var t = e.target; if (!(t instanceof Element)) return;
  var th = t.closest('.feature-browser table.cards th[data-sort]');
  if (th) { sortBy(th); return; }
  var root = t.closest('.feature-browser');
  var a = t.closest('a.card-link, a.card-back');
  if (a && a.classList.contains('card-back')) {
    if (!root) return;
    root.querySelectorAll('.card-page.shown').forEach(function(p){ p.classList.remove('shown'); });
    if (root.getAttribute('data-hash') !== '1') { e.preventDefault(); root.scrollIntoView({ block: 'nearest' }); }
    return;
  }
  var id = a ? (a.getAttribute('href') || '').slice(1) : null;
  if (!id) { var tr = root && t.closest('tr[data-card]'); id = tr ? tr.getAttribute('data-card') : null; }
  if (!id) return;
  // A link outside a browser (the SAE table, the probe comparison) opens the card where it lives.
  var sel = '.card-page[data-card-id="' + id + '"]';
  var target = root && root.querySelector(sel) ? root : null;
  if (!target) {
    var scope = t.closest('section.panel, article.layer');
    var page = (scope && scope.querySelector(sel)) || document.querySelector(sel);
    target = page && page.closest('.feature-browser');
  }
  if (target && show(target, id, true) && a) e.preventDefault();
});
window.addEventListener('hashchange', fromHash);
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fromHash); else fromHash();
})();`;
