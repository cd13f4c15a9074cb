/**
 * The feature browser in real headless Chromium, on cards of a planted world (sparse covariates
 * c_i written into a hidden layer along fixed directions, as in cards.test.ts): in report.html and
 * in the dashboard the card table renders, a header click sorts it, a row opens the card's page
 * with its charts, examples (input window and traces) and neighbour links, and the dashboard's
 * search "which latents encode c_i?" finds the planted latents. No console errors, no network.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { initBackend, tf } from '../src/backend.js';
import type { CardsResult } from '../src/analysis/cards.js';
import { executeAnalyses } from '../src/analysis/executor.js';
import { matrixSource } from '../src/analysis/sources.js';
import type { EvalData } from '../src/analysis/types.js';
import { MechIntConfig } from '../src/config.js';
import { recordActivations } from '../src/model/interventions.js';
import { createRng } from '../src/random.js';
import { renderHtml } from '../src/report/html.js';
import { buildApp } from '../src/server/app.js';
import { TEST_OUTPUT, launchChromium, requireChromium, watchErrors } from './browser-helpers.js';
import { unitDirections } from './helpers.js';

const F = 6; // planted covariates
const D = 8; // hidden units
const N = 1500;

let dir: string;
let cards: Record<string, CardsResult>;
let reportFile: string;
let app: FastifyInstance;
let url: string;
let browser: Browser;

/** A linear model whose `hidden` layer is Σ c_i u_i; cards on `hidden` and on its 2-unit readout `out`. */
async function plantedCards(outputDir: string): Promise<Record<string, CardsResult>> {
  await initBackend();
  const rng = createRng(7);
  const U = unitDirections(rng, F, D);
  const C = new Float32Array(N * F);
  for (let r = 0; r < N; r++) for (let i = 0; i < F; i++) if (rng.uniform() < 0.1) C[r * F + i] = 0.5 + rng.uniform();
  const x = tf.input({ shape: [F] });
  const hidden = tf.layers.dense({ units: D, useBias: false, name: 'hidden' });
  const out = tf.layers.dense({ units: 2, name: 'out' });
  const model = tf.model({ inputs: x, outputs: out.apply(hidden.apply(x)) as tf.SymbolicTensor });
  hidden.setWeights([tf.tensor2d(U, [F, D])]);
  model.compile({ optimizer: 'sgd', loss: 'meanSquaredError' });
  const inputs = tf.tensor2d(C, [N, F]);
  const targets = tf.tidy(() => tf.add(model.predict(inputs) as tf.Tensor, tf.randomNormal([N, 2], 0, 0.1, 'float32', 3)));
  const covariates: NonNullable<EvalData['covariates']> = {};
  for (let i = 0; i < F; i++) covariates[`c_${i}`] = { data: Float32Array.from({ length: N }, (_, r) => C[r * F + i]!), shape: [N] };
  covariates.noise = { data: Float32Array.from({ length: N }, () => rng.normal()), shape: [N] };
  const acts = await recordActivations(model, ['hidden', 'out'], inputs);
  try {
    const outcome = await executeAnalyses(
      {
        analyses: ['cards'], layers: ['hidden', 'out'], config: new MechIntConfig({ sampleLayers: ['hidden', 'out'], verbose: false }),
        options: { sae: { n_latents: 16, k: 2, epochs: 30, batch_size: 64, lr: 0.004, normalize: 'none', seed: 2 }, cards: { max_cards: 16, max_samples: N, control_shuffles: 10 } },
      },
      { source: matrixSource({ hidden: { rows: acts.hidden!.data, dim: D }, out: { rows: acts.out!.data, dim: 2 } }, 'planted'), model, evalData: { inputs, targets: [targets], covariates }, outputDir, throwOnError: true },
    );
    return outcome.analyses.cards as Record<string, CardsResult>;
  } finally {
    inputs.dispose();
    targets.dispose();
    model.dispose();
  }
}

before(async () => {
  requireChromium();
  dir = await mkdtemp(join(tmpdir(), 'mechint-browser-cards-'));
  cards = await plantedCards(dir);
  // The input window and traces the cards analysis is gaining: drawn when an example has them.
  const e = cards.hidden!.cards[0]!.top_examples[0]! as unknown as Record<string, unknown>;
  e.input = { start: 0, values: [[1, 0, 2], [0, 1, 0], [3, 0, null]] };
  e.traces = { speed: [0.1, 0.5, 0.2] };
  const { html } = await renderHtml({ config: {}, analyses: { cards } } as never);
  reportFile = join(dir, 'report.html');
  await writeFile(reportFile, html);
  app = await buildApp({ apiKey: null, dashboard: true, cache: join(dir, 'no-cache') });
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await app?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const firstColumn = (page: Page, table: string) => page.$$eval(`${table} tbody tr`, (trs) => trs.map((tr) => Number((tr as HTMLTableRowElement).dataset.index)));

/** Sorting by |r|: descending, then ascending, each a different order than the original one. */
async function checkSorting(page: Page, root: string, layer: string): Promise<void> {
  const table = `${root} table.cards[data-layer="${layer}"]`;
  const before = await firstColumn(page, table);
  assert.equal(before.length, cards[layer]!.cards.length, 'one row per card');
  const absR = new Map(cards[layer]!.cards.map((c) => [c.index, Math.abs(c.best_covariate?.r ?? -Infinity)]));
  await page.click(`${table} th[data-col="3"]`);
  const desc = await firstColumn(page, table);
  assert.deepEqual(desc.map((i) => absR.get(i)), [...desc.map((i) => absR.get(i)!)].sort((a, b) => b - a), 'sorted by |r|, largest first');
  await page.click(`${table} th[data-col="3"]`);
  const asc = await firstColumn(page, table);
  assert.deepEqual(asc.map((i) => absR.get(i)), [...asc.map((i) => absR.get(i)!)].sort((a, b) => a - b), 'a second click: smallest first');
  assert.notDeepEqual(desc, asc);
  await page.click(`${table} th[data-col="0"]`);
  const byIndex = await firstColumn(page, table);
  assert.deepEqual(byIndex, [...before].sort((a, b) => b - a), 'sorted by latent index');
}

/** A row click opens its card: histogram bars, covariate bars, examples, neighbour links. */
async function checkCardPage(page: Page, root: string, layer: string, index: number): Promise<void> {
  await page.click(`${root} table.cards[data-layer="${layer}"] tr[data-index="${index}"] td:nth-child(2)`);
  const card = `${root} .card-page.shown[data-layer="${layer}"][data-index="${index}"]`;
  await page.waitForSelector(card, { timeout: 5_000 });
  assert.equal(await page.$$eval(`${root} .card-page.shown`, (ps) => ps.length), 1, 'one card page open');
  assert.ok((await page.$$eval(`${card} figure[data-card-chart="histogram"] rect.bar`, (r) => r.length)) > 0, 'histogram bars');
  assert.ok((await page.$$eval(`${card} figure[data-card-chart="covariates"] rect.bar`, (r) => r.length)) >= F, 'a bar per covariate');
  assert.ok((await page.$$eval(`${card} figure[data-card-chart="covariates"] line.control`, (r) => r.length)) >= F, 'a chance tick per covariate');
  assert.ok((await page.$$eval(`${card} .example`, (r) => r.length)) > 0, 'top examples');
  assert.ok((await page.$$eval(`${card} .example table.context tr`, (r) => r.length)) > 0, 'example context');
  const neighbour = await page.$(`${card} .neighbours a.card-link`);
  if (neighbour) {
    const target = await neighbour.getAttribute('data-index');
    await neighbour.click();
    await page.waitForSelector(`${root} .card-page.shown[data-index="${target}"]`, { timeout: 5_000 });
  }
}

test('report.html: the card table sorts, a row opens its card page, the input window is drawn; no errors, no network', { timeout: 60_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = watchErrors(page);
  const requests: string[] = [];
  await page.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith('file:') || u.startsWith('data:')) return route.continue();
    requests.push(u);
    return route.abort();
  });
  await page.goto(pathToFileURL(reportFile).href, { waitUntil: 'load' });
  for (const layer of ['hidden', 'out']) assert.ok(await page.$(`.feature-browser table.cards[data-layer="${layer}"]`), `a card table for ${layer}`);
  assert.equal(await page.$$eval('.card-page.shown', (p) => p.length), 0, 'card pages start closed');
  await checkSorting(page, 'article[data-layer="hidden"]', 'hidden');
  await checkCardPage(page, 'article[data-layer="hidden"]', 'hidden', cards.hidden!.cards[1]!.index);

  const first = cards.hidden!.cards[0]!.index;
  await page.click(`table.cards[data-layer="hidden"] tr[data-index="${first}"] a.card-link`);
  const card = `.card-page.shown[data-index="${first}"][data-layer="hidden"]`;
  await page.waitForSelector(card);
  assert.ok((await page.$$eval(`${card} .example svg rect.raster`, (r) => r.length)) > 0, 'the input window as a raster');
  assert.ok((await page.$$eval(`${card} .example .trace path.line`, (r) => r.length)) >= 1, 'the traces as lines');
  assert.equal(new URL(page.url()).hash, `#card-hidden-${first}`, 'the URL names the open card');

  // Opened by its address.
  await page.goto(`${pathToFileURL(reportFile).href}#card-out-${cards.out!.cards[0]!.index}`, { waitUntil: 'load' });
  await page.waitForSelector(`.card-page.shown[data-layer="out"][data-index="${cards.out!.cards[0]!.index}"]`, { timeout: 5_000 });
  await page.screenshot({ path: join(TEST_OUTPUT, 'feature-browser-report.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no console errors');
  assert.deepEqual(requests, [], 'report.html requests nothing from the network');
  await page.close();
});

test('the dashboard: the cards view has the feature browser, and the covariate search finds the planted latents across layers', { timeout: 60_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = watchErrors(page);
  const offsite: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(url) && !r.url().startsWith('data:')) offsite.push(r.url());
  });
  // The API answers with the planted world's cards (the server renders them, as for any result).
  const asked: string[] = [];
  await page.route(`${url}/interpret/analyses`, (route) => route.fulfill({ json: { analyses: [{ name: 'cards', title: 'Latent cards', runnable: true, wide: true }] } }));
  await page.route(`${url}/interpret/layers`, (route) => route.fulfill({
    json: { total_shards: 1, layers: Object.keys(cards).map((name) => ({ name, shape: [1], dim: 1, rows: N, shards: 1, steps: [0] })) },
  }));
  await page.route(`${url}/interpret`, (route) => {
    const body = route.request().postDataJSON() as { analysis_type: string; layer_name: string };
    asked.push(`${body.analysis_type}:${body.layer_name}`);
    return route.fulfill({ json: { results: cards[body.layer_name] } });
  });
  await page.goto(`${url}/`);
  await page.waitForSelector('section.panel[data-panel="cards"][data-state="done"]', { timeout: 20_000 });
  const layer = (await page.getAttribute('section.panel[data-panel="cards"]', 'data-layer'))!;
  await checkSorting(page, 'section.panel[data-panel="cards"]', layer);
  await checkCardPage(page, 'section.panel[data-panel="cards"]', layer, cards[layer]!.cards[0]!.index);
  assert.match(new URL(page.url()).hash, /^#layer=/, 'opening a card keeps the dashboard\'s address');

  // The covariate names come as a datalist once the input has focus.
  await page.focus('#covariate');
  await page.waitForFunction(() => document.querySelectorAll('#covariate-names option').length > 0, null, { timeout: 20_000 });
  const names = await page.$$eval('#covariate-names option', (os) => os.map((o) => (o as HTMLOptionElement).value));
  for (let i = 0; i < F; i++) assert.ok(names.includes(`c_${i}`), `c_${i} is offered: ${names.join(', ')}`);

  for (let i = 0; i < F; i++) {
    await page.fill('#covariate', `c_${i}`);
    await page.click('#search-form button[type="submit"]');
    await page.waitForFunction((c) => {
      const r = document.getElementById('search-results')!;
      return r.dataset.state === 'done' && r.dataset.covariate === c;
    }, `c_${i}`, { timeout: 20_000 });
    const hits = await page.$$eval('#search-results table[data-table="covariate-search"] tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')));
    assert.ok(hits.length > 0, `a card encodes c_${i}`);
    const rs = hits.map((h) => Math.abs(Number(h[2])));
    assert.deepEqual(rs, [...rs].sort((a, b) => b - a), 'strongest first');
    assert.equal(hits[0]![0], 'hidden', `the strongest c_${i} card is in the planted layer`);
    assert.ok(rs[0]! >= 0.7, `c_${i}: best |r| ${rs[0]}`);
    const keys = await page.$$eval('#search-results table[data-table="covariate-search"] tbody tr a.card-link', (as) => as.map((a) => [(a as HTMLElement).dataset.layer!, Number((a as HTMLElement).dataset.index)] as const));
    for (const [l, index] of keys) {
      const c = cards[l]!.cards.find((x) => x.index === index)!;
      assert.ok(Math.abs(c.covariates[`c_${i}`]!) > c.covariate_controls[`c_${i}`]!, `${l} latent ${index} beats its chance level for c_${i}`);
    }
    // …and no card beyond chance is left out.
    const expected = Object.values(cards).reduce((n, r) => n + r.cards.filter((c) => Math.abs(c.covariates[`c_${i}`] ?? 0) > (c.covariate_controls[`c_${i}`] ?? Infinity)).length, 0);
    assert.equal(keys.length, expected, `every card beyond chance for c_${i} is listed`);
  }
  // A hit opens its card page in place.
  await page.click('#search-results table[data-table="covariate-search"] tbody tr >> nth=0');
  await page.waitForSelector('#search-results .card-page.shown', { timeout: 5_000 });
  assert.ok(asked.includes('cards:hidden') && asked.includes('cards:out'), `the search ran the cards of every layer: ${asked.join(', ')}`);

  await page.screenshot({ path: join(TEST_OUTPUT, 'feature-browser-dashboard.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no console errors');
  assert.deepEqual(offsite, [], 'nothing from other origins');
  await page.close();
});
