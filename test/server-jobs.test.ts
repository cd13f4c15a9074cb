/** Long analyses run in worker threads: async jobs (202, progress, result, cancel) and a responsive /health meanwhile. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';
import { getJson, postJson, startServer } from './server-helpers.js';

const root = await tempDir('mechint-server-jobs-');
const cache = join(root, 'cache');
{
  const writer = new ShardWriter({ dir: cache });
  for (let s = 0; s < 2; s++) {
    await writer.write({ layers: { wide: { shape: [2000, 32], data: seededMatrix(2000, 32, 5 + s) }, small: { shape: [64, 8], data: seededMatrix(64, 8, 9 + s) } }, globalStep: s * 100 });
  }
  await writer.finish();
}
// Feature always goes to a worker here, to check that path too.
const { url } = await startServer({ cache, inlineLimits: { feature: 0 }, jobs: { concurrency: 2 } });

const LONG_SAE = { n_latents: 128, k: 8, epochs: 40, batch_size: 64, seed: 1 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function job(id: string): Promise<Record<string, unknown>> {
  return (await getJson(`${url}/interpret/jobs/${id}`)).json;
}

async function waitFor(id: string, pred: (j: Record<string, unknown>) => boolean, timeoutMs = 40_000): Promise<Record<string, unknown>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const j = await job(id);
    if (pred(j)) return j;
    if (Date.now() > end) throw new Error(`job ${id} never reached the state; last ${JSON.stringify(j).slice(0, 300)}`);
    await sleep(50);
  }
}

test('an async SAE job answers 202, reports progress, and /health answers in under 100 ms while it runs', async () => {
  const start = await postJson(`${url}/interpret`, { analysis_type: 'sae', layer_name: 'wide', config: LONG_SAE, async: true });
  assert.equal(start.status, 202, JSON.stringify(start.json));
  const id = start.json.job_id as string;
  assert.equal(start.json.status_url, `/interpret/jobs/${id}`);
  await waitFor(id, (j) => j.state === 'running');

  const latencies: number[] = [];
  const fractions: number[] = [];
  let last: Record<string, unknown> = {};
  while (latencies.length < 200) {
    const t = performance.now();
    const res = await fetch(`${url}/health`);
    await res.json();
    const ms = performance.now() - t;
    last = await job(id);
    if (last.state !== 'running') break;
    latencies.push(ms);
    fractions.push((last.progress as { fraction: number }).fraction);
    await sleep(20);
  }
  assert.ok(latencies.length >= 5, `the job ran long enough to measure (${latencies.length} samples)`);
  assert.ok(Math.max(...latencies) < 100, `/health took ${Math.max(...latencies).toFixed(1)} ms at worst (${latencies.length} samples)`);
  assert.ok(fractions.at(-1)! > 0, 'progress moved');

  const done = await waitFor(id, (j) => j.state !== 'running');
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  const result = done.result as { analysis_type: string; layer_name: string; results: { final_l0: number; n_rows: number; epochs: number; step_selection: { selection: string; read: number[] } } };
  assert.equal(result.analysis_type, 'sae');
  assert.equal(result.layer_name, 'wide');
  // An SAE reads the last step's shards by default: 2,000 of the 4,000 rows.
  assert.equal(result.results.step_selection.selection, 'last');
  assert.equal(result.results.step_selection.read.length, 1);
  assert.equal(result.results.n_rows, 2000);
  assert.ok(result.results.final_l0 <= 8 + 1e-9);
  assert.equal((done.progress as { fraction: number }).fraction, 1);
});

test('DELETE cancels a running job and stops its worker', async () => {
  const start = await postJson(`${url}/interpret`, { analysis_type: 'sae', layer_name: 'wide', config: { ...LONG_SAE, epochs: 500 }, async: true });
  const id = start.json.job_id as string;
  await waitFor(id, (j) => j.state === 'running');
  const del = await getJson(`${url}/interpret/jobs/${id}`, { method: 'DELETE' });
  assert.equal(del.status, 200);
  assert.equal(del.json.state, 'cancelled');
  const after = await job(id);
  assert.equal(after.state, 'cancelled');
  assert.equal((after.error as { code: string }).code, 'MECHINT_ERR_JOB_CANCELLED');
  const health = await getJson(`${url}/health`);
  assert.equal((health.json.jobs as Record<string, number>).running, 0);
  // Deleting a finished job forgets it.
  assert.equal((await getJson(`${url}/interpret/jobs/${id}`, { method: 'DELETE' })).status, 200);
  assert.equal((await getJson(`${url}/interpret/jobs/${id}`)).status, 404);
});

test('a synchronous SAE request waits for its worker and answers 200 with the result', async () => {
  const res = await postJson(`${url}/interpret`, { analysis_type: 'sae', layer_name: 'small', config: { n_latents: 16, k: 2, epochs: 2, batch_size: 32 } });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  const r = res.json.results as { final_l0: number; n_latents: number; training_stats: unknown };
  assert.equal(r.n_latents, 16);
  assert.ok(r.final_l0 <= 2 + 1e-9);
});

test('an analysis error inside a worker comes back with its status and code', async () => {
  const res = await postJson(`${url}/interpret`, { analysis_type: 'sae', layer_name: 'small', config: { k: 0 } });
  assert.equal(res.status, 400, JSON.stringify(res.json));
  assert.equal(res.json.code, 'MECHINT_ERR_CONFIG');
  assert.match(res.json.message as string, /k/);
});

test('a feature analysis in a worker, and an async upload job, answer with their results', async () => {
  const sync = await postJson(`${url}/interpret`, { analysis_type: 'feature', layer_name: 'small', config: { n_clusters: 2 } });
  assert.equal(sync.status, 200, JSON.stringify(sync.json));
  const ev = (sync.json.results as { explained_variance: number[] }).explained_variance;
  assert.equal(ev.length, 8);

  const pt = await readFile(join(import.meta.dirname, 'fixtures', 'torch', 'activations_shard_000000_step_0.pt'));
  const form = new FormData();
  form.append('file', new Blob([pt]), 'activations.pt');
  form.append('analysis_type', 'feature');
  form.append('async', 'true');
  const accepted = await getJson(`${url}/interpret/upload`, { method: 'POST', body: form });
  assert.equal(accepted.status, 202, JSON.stringify(accepted.json));
  const done = await waitFor(accepted.json.job_id as string, (j) => j.state !== 'queued' && j.state !== 'running');
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  const results = (done.result as { results: Record<string, { n_rows: number }> }).results;
  assert.equal(results['encoder.layer0']!.n_rows, 4);
  assert.equal(results['mamba_backbone.blocks.1']!.n_rows, 6);
});

test('a client that hangs up on a synchronous long analysis cancels its job', async () => {
  const counts = async () => (await getJson(`${url}/health`)).json.jobs as Record<string, number>;
  const cancelledBefore = (await counts()).cancelled!;
  const abort = new AbortController();
  const req = fetch(`${url}/interpret`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ analysis_type: 'sae', layer_name: 'wide', config: { ...LONG_SAE, epochs: 500 } }), signal: abort.signal }).catch(() => null);
  const end = Date.now() + 20_000;
  while ((await counts()).running! < 1 && Date.now() < end) await sleep(20);
  abort.abort();
  await req;
  while ((await counts()).running! > 0 && Date.now() < end) await sleep(20);
  const after = await counts();
  assert.equal(after.running, 0);
  assert.equal(after.cancelled, cancelledBefore + 1);
});
