/**
 * The dashboard of a running server (127.0.0.1, port 0) on a small demo run's cache and model, in
 * real headless Chromium: every view fills from the API with charts that have data marks, clicking
 * a layer and a latent updates the views, no console errors, screenshots in test-output/.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { slug } from '../src/report/charts.js';
import { buildApp } from '../src/server/app.js';
import { buildFitData } from '../src/demo/neurofmx-mini.js';
import { DEMO_LAYERS, runDemo, type DemoSummary } from '../src/demo/run.js';
import { TEST_OUTPUT, chartMarks, launchChromium, requireChromium, total, watchErrors } from './browser-helpers.js';

/** Every analysis the server can run gets a panel, in the registry's order (GET /interpret/analyses). */
const PANELS = ['neuron', 'feature', 'sae', 'dynamics', 'probe', 'causal', 'circuit', 'steering', 'cards'];

let dir: string;
let demo: DemoSummary;
let evalData: ReturnType<typeof buildFitData>;
let app: FastifyInstance;
let url: string;
let browser: Browser;

before(async () => {
  requireChromium();
  dir = await mkdtemp(join(tmpdir(), 'mechint-browser-dashboard-'));
  demo = await runDemo({ out: dir, trials: 60, epochs: 2, saeEpochs: 1 });
  evalData = buildFitData(demo.heldOut, { seed: 1 });
  app = await buildApp({
    apiKey: null,
    dashboard: true,
    cache: demo.cacheDir,
    model: demo.model,
    evalData: {
      inputs: evalData.inputs,
      targets: [evalData.targets.behavior_head, evalData.targets.reconstruction_head],
      probeTargets: { latents: { data: demo.heldOut.latents, shape: demo.heldOut.shapes.latents }, behavior: { data: demo.heldOut.behavior, shape: demo.heldOut.shapes.behavior } },
    },
    config: { sampleLayers: DEMO_LAYERS, analysisOptions: { sae: { epochs: 1, k: 8, seed: 0 } } },
    jobs: { concurrency: 1 },
  });
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await app?.close();
  evalData?.dispose();
  demo?.model.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Waits until every view of `layer` has finished (done or error) and returns their states. */
async function settled(page: Page, layer: string): Promise<Record<string, string>> {
  await page.waitForFunction(
    ({ layer, n }) => {
      const panels = [...document.querySelectorAll<HTMLElement>('section.panel')];
      return panels.length === n && panels.every((p) => p.dataset.layer === layer && (p.dataset.state === 'done' || p.dataset.state === 'error'));
    },
    { layer, n: PANELS.length },
    { timeout: 45_000, polling: 200 },
  );
  const states = await page.$$eval('section.panel', (ps) => ps.map((p) => [(p as HTMLElement).dataset.panel!, `${(p as HTMLElement).dataset.state}: ${p.querySelector('.status')?.textContent ?? ''}`]));
  return Object.fromEntries(states);
}

async function assertViews(page: Page, layer: string): Promise<void> {
  const states = await settled(page, layer);
  for (const p of PANELS) assert.match(states[p]!, /^done/, `the ${p} view of ${layer} rendered (${states[p]})`);
  const s = slug(layer);
  for (const id of [`neuron-frequency-${s}`, `feature-pca-${s}`, `dynamics-${s}`, `sae-training-${s}`, `sae-latents-${s}`, `causal-ablation-${s}`, `circuit-graph-${s}`, 'probe-r2', `steering-${s}`]) {
    const marks = await chartMarks(page, `section.panel figure[data-chart="${id}"]`);
    assert.ok(total(marks) > 0, `chart ${id} has data marks: ${JSON.stringify(marks)}`);
  }
  const circuit = await chartMarks(page, `figure[data-chart="circuit-graph-${s}"]`);
  assert.ok((circuit.rule ?? 0) > 0 && (circuit.symbol ?? 0) > 1, `circuit links and nodes: ${JSON.stringify(circuit)}`);
}

async function latentShown(page: Page, layer: string, latent: string): Promise<void> {
  await page.waitForFunction(({ latent }) => {
    const d = document.querySelector<HTMLElement>('.latent-detail');
    return d?.dataset.state === 'done' && d.dataset.latent === latent;
  }, { latent }, { timeout: 15_000 });
  const marks = await chartMarks(page, `.latent-detail figure[data-chart="sae-latent-${slug(layer)}-${latent}"]`);
  assert.ok((marks.rect ?? 0) > 0, `latent ${latent} histogram bars: ${JSON.stringify(marks)}`);
  const samples = await page.$$eval('.latent-detail table tbody tr', (trs) => trs.map((tr) => tr.textContent ?? ''));
  assert.ok(samples.length > 0 && samples[0]!.includes('.safetensors'), `top samples of latent ${latent}: ${samples[0]}`);
  assert.equal(await page.getAttribute(`tr[data-latent="${latent}"]`, 'class'), 'selected');
}

test('the dashboard shows every view of a layer, and follows clicks on a layer and a latent', { timeout: 80_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = watchErrors(page);
  const offsite: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(url) && !r.url().startsWith('data:')) offsite.push(r.url());
  });
  await page.goto(`${url}/`);
  await page.waitForSelector('#layer-list button', { timeout: 15_000 });

  const layers = await page.$$eval('#layer-list button', (bs) => bs.map((b) => (b as HTMLElement).dataset.layer!));
  assert.deepEqual([...layers].sort(), [...DEMO_LAYERS].sort());
  const first = layers[0]!;
  await assertViews(page, first);
  const firstLatent = await page.getAttribute('tr[data-latent] >> nth=0', 'data-latent');
  await latentShown(page, first, firstLatent!);

  // Another layer: every view is redrawn for it.
  const other = DEMO_LAYERS.at(-1)!;
  assert.notEqual(other, first);
  await page.click(`#layer-list button[data-layer="${other}"]`);
  assert.equal(await page.getAttribute(`#layer-list button[data-layer="${other}"]`, 'class'), 'selected');
  await assertViews(page, other);
  assert.equal(await page.$(`figure[data-chart="neuron-frequency-${slug(first)}"]`), null, 'the first layer\'s charts are gone');

  // Another latent: its histogram and samples replace the first one's.
  const latents = await page.$$eval('tr[data-latent]', (trs) => trs.map((t) => (t as HTMLElement).dataset.latent!));
  assert.ok(latents.length >= 2, `top latents listed: ${latents.join(', ')}`);
  await latentShown(page, other, latents[0]!);
  await page.click(`tr[data-latent="${latents[1]}"]`);
  await latentShown(page, other, latents[1]!);

  await page.screenshot({ path: join(TEST_OUTPUT, 'dashboard.png'), fullPage: true });
  await page.screenshot({ path: join(TEST_OUTPUT, 'dashboard-top.png') });
  assert.deepEqual(errors, [], 'no console errors');
  assert.deepEqual(offsite, [], 'the dashboard loads nothing from other origins');
  await page.close();
});

test('the dashboard is opt-in for buildApp, and its page is public while the API keeps its key', async () => {
  const plain = await buildApp({ apiKey: null, cache: demo.cacheDir });
  assert.equal((await plain.inject({ url: '/' })).statusCode, 404);
  await plain.close();

  const keyed = await buildApp({ apiKey: 'dashboard-test-key', dashboard: true, cache: demo.cacheDir });
  const home = await keyed.inject({ url: '/' });
  assert.equal(home.statusCode, 200);
  assert.match(home.body, /data-auth="required"/);
  assert.equal((await keyed.inject({ url: '/dashboard/app.js' })).statusCode, 200);
  const render = { analysis: 'neuron', layer: 'x', result: { sparsity: [0.5, 0] } };
  assert.equal((await keyed.inject({ method: 'POST', url: '/dashboard/render', payload: render })).statusCode, 401);
  const ok = await keyed.inject({ method: 'POST', url: '/dashboard/render', payload: render, headers: { authorization: 'Bearer dashboard-test-key' } });
  assert.equal(ok.statusCode, 200);
  assert.match(ok.json().charts[0].svg, /^<svg/);
  assert.equal((await keyed.inject({ url: '/interpret/layers' })).statusCode, 401);
  await keyed.close();
});
