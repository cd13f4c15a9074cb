/**
 * The dashboard's browser script (compiled by `npm run build` to dist/dashboard/app.js and served
 * by the server at /dashboard/app.js). Everything comes from the HTTP API: the layers from
 * `GET /interpret/layers`, each view from `POST /interpret`, and its charts (SVG) and sentences
 * from `POST /dashboard/render`. It imports nothing, so the browser loads this one file.
 */

type Json = Record<string, unknown>;

interface LayerInfo {
  name: string;
  shape: number[];
  dim: number;
  rows: number;
  shards: number;
  steps: number[];
}

interface Rendered {
  charts: { id: string; title: string; svg: string }[];
  html: string;
}

interface AnalysisInfo {
  name: string;
  title: string;
  runnable: boolean;
  wide: boolean;
}

/** The views, in page order: every analysis the server can run (from GET /interpret/analyses). */
let PANELS: { analysis: string; title: string; wide?: boolean }[] = [];

const KEY_STORAGE = 'mechint.apiKey';
const authRequired = document.body.dataset.auth === 'required';
const keyInput = document.getElementById('api-key') as HTMLInputElement | null;
const info = document.getElementById('info')!;
const layerList = document.getElementById('layer-list')!;
const views = document.getElementById('views')!;

/** Results by `analysis\0layer`: switching back to a layer does not run its analyses again. */
const results = new Map<string, Promise<Json>>();
let layers: LayerInfo[] = [];
let current: string | null = null;

class ApiError extends Error {}

async function api<T>(path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  const key = keyInput?.value || sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(path, body === undefined ? { headers } : { method: 'POST', headers, body: JSON.stringify(body) });
  const data = (await res.json().catch(() => ({}))) as Json;
  if (!res.ok) throw new ApiError(typeof data.message === 'string' ? data.message : `${res.status} ${res.statusText}`);
  return data as T;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmt = (v: unknown, digits = 3): string => (typeof v === 'number' && Number.isFinite(v) ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : '–');
const pct = (v: unknown): string => (typeof v === 'number' && Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '–');

function interpret(analysis: string, layer: string): Promise<Json> {
  const key = `${analysis}\u0000${layer}`;
  let p = results.get(key);
  if (!p) {
    p = api<{ results: Json }>('/interpret', { analysis_type: analysis, layer_name: layer }).then((r) => r.results);
    // A failure is not cached: the next visit to the layer tries again (e.g. after entering the key).
    p.catch(() => results.delete(key));
    results.set(key, p);
  }
  return p;
}

/** What the charts and sentences need; the big arrays (PCA components, centroids) stay behind. */
function slim(analysis: string, r: Json): Json {
  if (analysis !== 'feature') return r;
  const { components: _c, ...rest } = r;
  const clusters = rest.clusters as Json | undefined;
  if (clusters && typeof clusters === 'object') {
    const { centroids: _k, ...c } = clusters;
    rest.clusters = c;
  }
  return rest;
}

function fillCharts(target: HTMLElement, rendered: Rendered): void {
  target.replaceChildren(
    ...rendered.charts.map((c) => {
      const fig = el('figure', { 'data-chart': c.id, title: c.title });
      // The SVG comes from our own server's Vega renderer, which escapes the text it draws.
      fig.innerHTML = c.svg;
      return fig;
    }),
  );
}

function panelFor(analysis: string): HTMLElement {
  return views.querySelector<HTMLElement>(`section[data-panel="${analysis}"]`)!;
}

function setStatus(panel: HTMLElement, state: 'loading' | 'done' | 'error', text: string): void {
  panel.dataset.state = state;
  const status = panel.querySelector<HTMLElement>('.status')!;
  status.textContent = text;
  status.className = `status${state === 'error' ? ' error' : ''}`;
}

async function showLatent(layer: string, sae: Json, latent: number): Promise<void> {
  const panel = panelFor('sae');
  const detail = panel.querySelector<HTMLElement>('.latent-detail')!;
  for (const tr of panel.querySelectorAll<HTMLElement>('tr[data-latent]')) tr.classList.toggle('selected', tr.dataset.latent === String(latent));
  detail.dataset.state = 'loading';
  try {
    const rendered = await api<Rendered>('/dashboard/render', { analysis: 'sae', layer, result: sae, latent });
    if (current !== layer) return;
    const charts = el('div', { class: 'charts' });
    fillCharts(charts, rendered);
    const text = el('div');
    text.innerHTML = rendered.html;
    detail.replaceChildren(charts, text);
    detail.dataset.latent = String(latent);
    detail.dataset.state = 'done';
  } catch (err) {
    detail.replaceChildren(el('p', { class: 'status error' }, (err as Error).message));
    detail.dataset.state = 'error';
  }
}

/** The SAE's top latents as a clickable list; a click shows the latent's histogram and samples. */
function latentList(layer: string, sae: Json): HTMLElement {
  const top = (Array.isArray(sae.top_latents) ? sae.top_latents : []) as Json[];
  const maxFreq = Math.max(1e-9, ...top.map((t) => Number(t.frequency) || 0));
  const table = el('table', { class: 'latents' });
  const head = el('tr');
  for (const h of ['latent', 'active in', 'top activation']) head.append(el('th', {}, h));
  table.append(el('thead'), el('tbody'));
  table.tHead!.append(head);
  for (const t of top) {
    const tr = el('tr', { 'data-latent': String(t.latent), title: 'Show this latent\'s activation histogram and top samples' });
    const bar = el('span', { class: 'bar', style: `width:${Math.round((60 * (Number(t.frequency) || 0)) / maxFreq)}px` });
    const freq = el('td');
    freq.append(bar, document.createTextNode(pct(t.frequency)));
    const best = (Array.isArray(t.top_rows) ? t.top_rows : [])[0] as Json | undefined;
    tr.append(el('td', {}, `latent ${String(t.latent)}`), freq, el('td', {}, fmt(best?.value)));
    tr.addEventListener('click', () => void showLatent(layer, sae, Number(t.latent)));
    table.tBodies[0]!.append(tr);
  }
  return table;
}

/** The cards view sets each covariate's best card beside the probe's R² for it: it gets the layer's probe result. */
async function contextFor(analysis: string, layer: string): Promise<{ context?: Json }> {
  if (analysis !== 'cards' || !PANELS.some((p) => p.analysis === 'probe')) return {};
  const probe = await interpret('probe', layer).catch(() => null);
  return probe ? { context: { probe } } : {};
}

async function fillPanel(analysis: string, layer: string): Promise<void> {
  const panel = panelFor(analysis);
  setStatus(panel, 'loading', `Running the ${analysis} analysis on ${layer}…`);
  try {
    const result = await interpret(analysis, layer);
    const rendered = await api<Rendered>('/dashboard/render', { analysis, layer, result: slim(analysis, result), ...(await contextFor(analysis, layer)) });
    if (current !== layer) return;
    fillCharts(panel.querySelector<HTMLElement>('.charts')!, rendered);
    panel.querySelector<HTMLElement>('.text')!.innerHTML = rendered.html;
    if (analysis === 'sae') {
      const extra = panel.querySelector<HTMLElement>('.extra')!;
      const detail = el('div', { class: 'latent-detail' });
      const list = el('div');
      list.append(el('p', {}, 'Top latents (click one):'), latentList(layer, result));
      extra.replaceChildren(el('div', { class: 'cols' }));
      extra.firstElementChild!.append(list, detail);
      const first = (result.top_latents as Json[] | undefined)?.[0];
      if (first) void showLatent(layer, result, Number(first.latent));
    }
    setStatus(panel, 'done', '');
  } catch (err) {
    if (current !== layer) return;
    setStatus(panel, 'error', err instanceof ApiError ? err.message : `Failed: ${(err as Error).message}`);
  }
}

function selectLayer(name: string): void {
  current = name;
  history.replaceState(null, '', `#layer=${encodeURIComponent(name)}`);
  for (const b of layerList.querySelectorAll<HTMLButtonElement>('button')) b.classList.toggle('selected', b.dataset.layer === name);
  views.dataset.layer = name;
  views.replaceChildren(
    ...PANELS.map((p) => {
      const section = el('section', { class: p.wide ? 'panel wide' : 'panel', 'data-panel': p.analysis, 'data-layer': name });
      const body = el('div', { class: 'body' });
      body.append(el('div', { class: 'charts' }), el('div', { class: 'text' }));
      section.append(el('h2', {}, p.title), el('div', { class: 'status' }), body, el('div', { class: 'extra' }));
      return section;
    }),
  );
  for (const p of PANELS) void fillPanel(p.analysis, name);
}

async function start(): Promise<void> {
  if (keyInput) {
    keyInput.value = sessionStorage.getItem(KEY_STORAGE) ?? '';
    keyInput.addEventListener('change', () => {
      sessionStorage.setItem(KEY_STORAGE, keyInput.value);
      void start();
    });
    if (authRequired && !keyInput.value) {
      info.textContent = 'This server needs an API key: enter it on the right.';
      return;
    }
  }
  try {
    const known = await api<{ analyses: AnalysisInfo[] }>('/interpret/analyses');
    PANELS = known.analyses.filter((a) => a.runnable).map((a) => ({ analysis: a.name, title: a.title, wide: a.wide }));
    const listing = await api<{ layers: LayerInfo[]; total_shards: number }>('/interpret/layers');
    layers = listing.layers;
    const steps = [...new Set(layers.flatMap((l) => l.steps))].sort((a, b) => a - b);
    info.textContent = `${layers.length} layer(s), ${listing.total_shards} shard(s)${steps.length ? `, global steps ${steps[0]}–${steps.at(-1)}` : ''}`;
  } catch (err) {
    info.textContent = `Cannot list layers: ${(err as Error).message}`;
    return;
  }
  layerList.replaceChildren(
    ...layers.map((l) => {
      const b = el('button', { 'data-layer': l.name, type: 'button' });
      b.append(el('code', {}, l.name), el('small', {}, `${l.rows.toLocaleString('en')} rows × ${l.dim} units, ${l.shards} shard(s)`));
      b.addEventListener('click', () => selectLayer(l.name));
      return b;
    }),
  );
  const fromHash = decodeURIComponent(/^#layer=(.*)$/.exec(location.hash)?.[1] ?? '');
  const first = layers.find((l) => l.name === fromHash) ?? layers[0];
  if (first) selectLayer(first.name);
  else views.replaceChildren(el('p', {}, 'The activation cache has no layers yet.'));
}

// The search "which latents encode <covariate>?": it runs (or reuses) the cards of every layer,
// and the server's feature-browser view lists the cards whose |r| beats their chance level.
const searchForm = document.getElementById('search-form') as HTMLFormElement | null;
const covariateInput = document.getElementById('covariate') as HTMLInputElement | null;
const covariateNames = document.getElementById('covariate-names');
const searchResults = document.getElementById('search-results');
let allCards: Promise<Json> | null = null;

function cardsOfEveryLayer(): Promise<Json> {
  if (!PANELS.some((p) => p.analysis === 'cards')) return Promise.resolve({});
  allCards ??= Promise.all(layers.map((l) => interpret('cards', l.name).then((r) => [l.name, r] as const, () => null))).then((pairs) => {
    const ok = pairs.filter((p): p is readonly [string, Json] => p !== null);
    // A failed layer is asked again next time.
    if (ok.length < layers.length) allCards = null;
    return Object.fromEntries(ok) as Json;
  });
  return allCards;
}

async function search(covariate?: string): Promise<void> {
  if (!searchResults) return;
  if (covariate) {
    searchResults.dataset.state = 'loading';
    searchResults.textContent = `Running the cards of ${layers.length} layer(s)…`;
  }
  try {
    const results = await cardsOfEveryLayer();
    const found = await api<{ covariates: string[]; html: string }>('/dashboard/cards-search', { results, ...(covariate ? { covariate } : {}) });
    covariateNames?.replaceChildren(...found.covariates.map((c) => el('option', { value: c })));
    if (!covariate) return;
    searchResults.innerHTML = found.html;
    searchResults.dataset.covariate = covariate;
    searchResults.dataset.state = 'done';
  } catch (err) {
    if (!covariate) return;
    searchResults.textContent = `Search failed: ${(err as Error).message}`;
    searchResults.dataset.state = 'error';
  }
}

covariateInput?.addEventListener('focus', () => void search());
searchForm?.addEventListener('submit', (e) => {
  e.preventDefault();
  const c = covariateInput?.value.trim();
  if (c) void search(c);
});

void start();
