/**
 * The report, the CLI and the HTTP API (as the dashboard calls it) give the same answer: they all
 * go through one executor and the results store, so `mechint serve` on the demo's cache answers
 * from what the demo computed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { runDemo, DEMO_LAYERS, type DemoSummary } from '../src/demo/run.js';
import { buildApp } from '../src/server/app.js';
import { readEvalDataFile } from '../src/report/eval-data-file.js';
import { registerLayerModule } from '../src/model/registry.js';

const execFileP = promisify(execFile);
type Obj = Record<string, any>;

let dir: string;
let demo: DemoSummary;
let exported: Obj;
let app: FastifyInstance;
let base: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mechint-one-executor-'));
  demo = await runDemo({ out: join(dir, 'demo'), trials: 60, epochs: 2, saeEpochs: 1 });
  exported = JSON.parse(await readFile(demo.files.json, 'utf8')) as Obj;
  registerLayerModule(new URL('../src/demo/neurofmx-mini.ts', import.meta.url).href);
  // As `mechint serve --cache … --model checkpoints/best --eval-data eval_data.safetensors` starts it: no config given.
  app = await buildApp({ cache: demo.cacheDir, modelPath: join(demo.checkpointsDir, 'best'), evalData: await readEvalDataFile(demo.evalDataFile), apiKey: null, logger: false });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await app?.close();
  await rm(dir, { recursive: true, force: true });
});

async function interpret(analysis: string, layer: string, config?: Obj): Promise<{ status: number; body: Obj }> {
  const res = await fetch(`${base}/interpret`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ analysis_type: analysis, layer_name: layer, ...(config ? { config } : {}) }) });
  return { status: res.status, body: (await res.json()) as Obj };
}

test('the server answers the demo\'s SAE, causal and circuit results from the store, equal to the exported results', async () => {
  for (const layer of DEMO_LAYERS) {
    const sae = await interpret('sae', layer);
    assert.equal(sae.status, 200, JSON.stringify(sae.body));
    assert.equal(sae.body.origin, 'stored', `${layer}: the demo's SAE is reused`);
    const want = exported.analyses.sae[layer];
    for (const key of ['k', 'n_latents', 'final_l0', 'explained_variance', 'dead_fraction']) assert.equal(sae.body.results[key], want[key], `sae ${layer} ${key}`);
    assert.equal(sae.body.results.k, 8, 'the demo\'s k, not the default');

    const causal = await interpret('causal', layer);
    assert.equal(causal.status, 200, JSON.stringify(causal.body));
    assert.equal(causal.body.origin, 'stored');
    const wantCausal = exported.analyses.causal[layer];
    assert.equal(causal.body.results.baseline_loss, wantCausal.baseline_loss);
    assert.equal(causal.body.results.loss_kind, 'compiled');
    assert.deepEqual(causal.body.results.unit_effects[0], wantCausal.unit_effects[0], 'top ablation');

    const circuit = await interpret('circuit', layer);
    assert.equal(circuit.status, 200, JSON.stringify(circuit.body));
    assert.equal(circuit.body.origin, 'stored');
    const wantCircuit = exported.analyses.circuit[layer];
    assert.equal(circuit.body.results.downstream, wantCircuit.downstream, `${layer}: the same next layer`);
    assert.deepEqual(circuit.body.results.basis, wantCircuit.basis);
    assert.deepEqual(circuit.body.results.edges.slice(0, 5), wantCircuit.edges.slice(0, 5), 'top edges');
  }
});

test('steering after sae returns 200 with curves, using the stored SAE', async () => {
  const layer = 'popt';
  const r = await interpret('steering', layer, { n_latents: 2 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.origin, 'computed');
  assert.ok(r.body.results.latents.length > 0 && r.body.results.latents[0].heads.length > 0, 'curves');
  assert.deepEqual(r.body.depends_on, [{ analysis: 'sae', layer, origin: 'stored' }]);
  // The same request again is answered from the result just recorded.
  const again = await interpret('steering', layer, { n_latents: 2 });
  assert.equal(again.body.origin, 'stored');
  assert.deepEqual(again.body.results.latents.map((l: Obj) => l.latent), r.body.results.latents.map((l: Obj) => l.latent));
});

test('steering with no stored SAE computes one and says so', async () => {
  const other = await buildApp({ cache: demo.cacheDir, modelPath: join(demo.checkpointsDir, 'best'), evalData: await readEvalDataFile(demo.evalDataFile), apiKey: null, logger: false, config: { analysisOptions: { sae: { epochs: 1, k: 4, n_latents: 64 } } } });
  try {
    const res = await other.inject({ method: 'POST', url: '/interpret', payload: { analysis_type: 'steering', layer_name: 'perceiver', config: { n_latents: 1 } } });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json() as Obj;
    assert.deepEqual(body.depends_on, [{ analysis: 'sae', layer: 'perceiver', origin: 'computed' }]);
    assert.equal(body.results.latents.length, 1);
    // …and the SAE it computed is now stored for the next request.
    const sae = await other.inject({ method: 'POST', url: '/interpret', payload: { analysis_type: 'sae', layer_name: 'perceiver' } });
    assert.equal((sae.json() as Obj).origin, 'stored');
    assert.equal((sae.json() as Obj).results.k, 4);
  } finally {
    await other.close();
  }
});

test('a typo in a request\'s config is a 400 naming the key and the nearest one', async () => {
  const r = await interpret('sae', 'popt', { n_latnets: 10 });
  assert.equal(r.status, 400);
  assert.match(r.body.message, /Unknown SAE option `n_latnets`; did you mean `n_latents`\?/);
});

test('mechint analyze --model --eval-data runs causal, circuit, steering and probe on the demo\'s files', async () => {
  const out = join(dir, 'cli-out');
  const { stdout } = await execFileP(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'bin', 'mechint.js'), 'analyze', demo.cacheDir, '--out', out, '--model', join(demo.checkpointsDir, 'best'), '--eval-data', demo.evalDataFile, '--analyses', 'causal,circuit,steering,probe', '--layers', 'perceiver,popt', '--json'], { maxBuffer: 1 << 24 });
  const summary = JSON.parse(stdout) as Obj;
  assert.deepEqual(summary.errors, []);
  const res = JSON.parse(await readFile(join(out, 'mechint_results.json'), 'utf8')) as Obj;
  for (const a of ['causal', 'circuit', 'steering', 'probe']) for (const l of ['perceiver', 'popt']) assert.equal(res.analyses[a][l].error, undefined, `${a} ${l}`);
  assert.equal(res.analyses.causal.popt.baseline_loss, exported.analyses.causal.popt.baseline_loss, 'the same loss as the demo\'s report');
});

test('a custom analysis runs from analysesToRun, mechint analyze --plugin and POST /interpret, with a generic report section', async () => {
  const plugin = join(dir, 'plugin.mjs');
  const src = new URL('../src/index.ts', import.meta.url).href;
  await writeFile(plugin, `import { defineAnalysis, defineOptions, int } from ${JSON.stringify(src)};
export const analyses = [defineAnalysis({
  name: 'rowcount',
  title: 'Row count',
  description: 'rows and their mean, every stride-th row',
  options: defineOptions('rowcount option', { stride: int({ min: 1, default: 1, doc: 'Count every stride-th row.' }) }),
  async run(rows, o) {
    let n = 0, sum = 0;
    for await (const b of rows()) for (let r = 0; r < b.nRows; r += o.stride) { n++; sum += b.rows[r * b.dim]; }
    return { n_rows: n, first_unit_mean: sum / n, stride: o.stride };
  },
})];
`);
  const out = join(dir, 'plugin-out');
  await execFileP(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'bin', 'mechint.js'), 'analyze', demo.cacheDir, '--out', out, '--plugin', plugin, '--analyses', 'rowcount,neuron', '--layers', 'popt'], { maxBuffer: 1 << 24 });
  const res = JSON.parse(await readFile(join(out, 'mechint_results.json'), 'utf8')) as Obj;
  assert.equal(res.analyses.rowcount.popt.n_rows, exported.analyses.neuron.popt.n_rows);
  assert.ok(Math.abs(res.analyses.rowcount.popt.first_unit_mean - exported.analyses.neuron.popt.mean_activation[0]) < 1e-4);
  const md = await readFile(join(out, 'mechint_report.md'), 'utf8');
  assert.match(md, /## Row count/);
  assert.match(md, /\| n_rows \| \d+ \|/);

  // In-process: registered, then named in analysesToRun and asked over HTTP.
  const { analyses } = (await import(plugin)) as { analyses: Obj[] };
  const { registerAnalysis, unregisterAnalysis } = await import('../src/analysis/registry.js');
  const { MechIntConfig } = await import('../src/config.js');
  registerAnalysis(analyses[0] as never);
  try {
    assert.deepEqual(new MechIntConfig({ analysesToRun: ['rowcount'], analysisOptions: { rowcount: { stride: 2 } } }).analysesToRun, ['rowcount']);
    assert.throws(() => new MechIntConfig({ analysisOptions: { rowcount: { strid: 2 } } }), /Unknown rowcount option `strid`; did you mean `stride`\?/);
    const web = await buildApp({ cache: demo.cacheDir, apiKey: null, logger: false });
    try {
      const r = await web.inject({ method: 'POST', url: '/interpret', payload: { analysis_type: 'rowcount', layer_name: 'popt', config: { stride: 2 } } });
      assert.equal(r.statusCode, 200, r.body);
      assert.equal((r.json() as Obj).results.stride, 2);
    } finally {
      await web.close();
    }
  } finally {
    unregisterAnalysis('rowcount');
  }
});
