/**
 * report.html from a small demo run, opened in real headless Chromium: no console errors, no
 * network requests (the page is self-contained), every expected chart present with data marks,
 * the SAE latent table with its samples, and a screenshot in test-output/.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import type { Browser } from 'playwright-core';
import { slug } from '../src/report/charts.js';
import { DEMO_LAYERS, runDemo, type DemoSummary } from '../src/demo/run.js';
import { TEST_OUTPUT, chartMarks, launchChromium, requireChromium, total, watchErrors } from './browser-helpers.js';

type Obj = Record<string, any>;

let dir: string;
let demo: DemoSummary;
let results: Obj;
let browser: Browser;

before(async () => {
  requireChromium();
  dir = await mkdtemp(join(tmpdir(), 'mechint-browser-report-'));
  demo = await runDemo({ out: dir, trials: 60, epochs: 2, saeEpochs: 1 });
  results = JSON.parse(await readFile(demo.files.json, 'utf8')) as Obj;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  demo?.model.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('report.html opens with no console errors and no network requests', { timeout: 60_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = watchErrors(page);
  const requests: string[] = [];
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('file:') || url.startsWith('data:')) return route.continue();
    requests.push(url);
    return route.abort();
  });
  await page.goto(pathToFileURL(demo.files.html).href, { waitUntil: 'load' });

  const a = results.analyses as Obj;
  const expected: Record<string, (marks: Record<string, number>) => void> = {};
  for (const layer of DEMO_LAYERS) {
    const s = slug(layer);
    expected[`neuron-frequency-${s}`] = (m) => assert.ok((m.rect ?? 0) >= 2, 'frequency bars');
    expected[`feature-pca-${s}`] = (m) => {
      assert.equal(m.rect, (a.feature[layer].explained_variance as number[]).length, 'one bar per PC');
      assert.equal(m.line, 1, 'the cumulative line');
    };
    expected[`dynamics-${s}`] = (m) => assert.equal(m.line, 3, 'one line per metric across the steps');
    expected[`sae-training-${s}`] = (m) => assert.ok(total(m) >= 2, 'loss and L0 points');
    expected[`sae-latents-${s}`] = (m) => assert.ok((m.rect ?? 0) >= (a.sae[layer].top_latents as unknown[]).length, 'histogram bars for each top latent');
    expected[`causal-ablation-${s}`] = (m) => assert.equal(m.rect, Math.min(15, (a.causal[layer].unit_effects as unknown[]).length), 'one bar per ranked unit');
    expected[`steering-${s}`] = (m) => assert.ok((m.line ?? 0) >= 2, 'α curves per latent and head');
  }
  expected['probe-r2'] = (m) => assert.ok((m.rect ?? 0) >= 2 * DEMO_LAYERS.length, 'probe and control bars per layer');
  const edges = DEMO_LAYERS.reduce((n, l) => n + (a.circuit[l].edges as unknown[]).length, 0);
  expected['circuit-graph'] = (m) => {
    assert.equal(m.rule, edges, 'one link per kept edge');
    assert.ok((m.symbol ?? 0) >= 2 && m.text === m.symbol, 'a labelled node per unit');
  };

  const present = await page.$$eval('figure[data-chart]', (figs) => figs.map((f) => (f as HTMLElement).dataset.chart!));
  for (const [id, check] of Object.entries(expected)) {
    assert.ok(present.includes(id), `chart ${id} is in the page (present: ${present.join(', ')})`);
    const marks = await chartMarks(page, `figure[data-chart="${id}"]`);
    assert.ok(total(marks) > 0, `chart ${id} has data marks`);
    check(marks);
  }

  // The SAE latent table: every top latent with its samples (shard, step, row, value).
  await page.click('details.latents >> nth=0 >> summary');
  const first = DEMO_LAYERS[0]!;
  const cells = await page.$$eval(`article[data-layer="${first}"] table[data-table="sae-top-latents"] tbody tr`, (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')));
  const topRows = (a.sae[first].top_latents as Obj[]).reduce((n, t) => n + (t.top_rows as unknown[]).length, 0);
  assert.equal(cells.length, topRows, 'one table row per top-activating sample');
  assert.ok(cells[0]!.some((c) => c.endsWith('.safetensors')), `the shard is named: ${cells[0]!.join(' | ')}`);

  // The Markdown report embeds the same charts as files beside it.
  const md = await readFile(demo.files.markdown, 'utf8');
  for (const id of Object.keys(expected)) assert.ok(md.includes(`charts/${id}.svg`), `mechint_report.md embeds charts/${id}.svg`);

  await page.screenshot({ path: join(TEST_OUTPUT, 'report.png'), fullPage: true });
  await page.screenshot({ path: join(TEST_OUTPUT, 'report-top.png') });
  assert.deepEqual(errors, [], 'no console errors');
  assert.deepEqual(requests, [], 'report.html requests nothing from the network');
  await page.close();
});
