/**
 * Stopping work: a cancelled job's worker thread exits (and the process stops spending CPU on it),
 * a client that hangs up frees its worker and slot, a job past its timeout fails with its own code,
 * and closing the app (or SIGTERM on `mechint serve`) ends within a bound while a job runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { buildApp, clientSignal } from '../src/server/app.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';
import { getJson, postJson, spawnServe, startServer } from './server-helpers.js';

const root = await tempDir('mechint-server-cancel-');
const cache = join(root, 'cache');
{
  const writer = new ShardWriter({ dir: cache });
  for (let s = 0; s < 2; s++) {
    await writer.write({ layers: { wide: { shape: [2000, 32], data: seededMatrix(2000, 32, 5 + s) }, small: { shape: [64, 8], data: seededMatrix(64, 8, 9 + s) } }, globalStep: s * 100 });
  }
  await writer.finish();
}

/** An SAE that runs for minutes unless stopped. */
const ENDLESS_SAE = { analysis_type: 'sae', layer_name: 'wide', config: { n_latents: 128, k: 8, epochs: 5000, batch_size: 64, seed: 1 } };
const SMALL_SAE = { analysis_type: 'sae', layer_name: 'small', config: { n_latents: 16, k: 2, epochs: 1, batch_size: 32 } };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, get: () => Promise<T>, pred: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (pred(v)) return v;
    if (Date.now() > end) throw new Error(`${what} did not happen within ${timeoutMs} ms; last ${JSON.stringify(v).slice(0, 300)}`);
    await sleep(50);
  }
}

const health = async (url: string) => (await getJson(`${url}/health`)).json as { jobs: Record<string, number>; worker_threads: number };
const jobView = async (url: string, id: string) => (await getJson(`${url}/interpret/jobs/${id}`)).json;
/** CPU seconds this process (all its threads) spends over `ms`. */
async function cpuOver(ms: number): Promise<number> {
  const start = process.cpuUsage();
  await sleep(ms);
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1e6;
}

test('DELETE on a running job terminates its worker thread: the thread exits and the CPU it used stops', async () => {
  const { url } = await startServer({ cache, jobs: { concurrency: 1 } });
  const start = await postJson(`${url}/interpret`, { ...ENDLESS_SAE, async: true });
  assert.equal(start.status, 202, JSON.stringify(start.json));
  const id = start.json.job_id as string;
  // Training has begun (an epoch reported), so the worker is busy.
  await until('the SAE reporting an epoch', () => jobView(url, id), (j) => (j.progress as { stage: string }).stage === 'epoch');
  assert.equal((await health(url)).worker_threads, 1);
  const busy = await cpuOver(1000);

  const del = await getJson(`${url}/interpret/jobs/${id}`, { method: 'DELETE' });
  assert.equal(del.status, 200);
  assert.equal(del.json.state, 'cancelled');
  await until('the worker thread exiting', () => health(url), (h) => h.worker_threads === 0, 5000);
  const idle = await cpuOver(1000);
  assert.ok(idle < 0.3, `after cancel the process used ${idle.toFixed(2)} s of CPU in 1 s (while training: ${busy.toFixed(2)} s)`);
  const after = await jobView(url, id);
  assert.equal(after.state, 'cancelled');
  assert.equal((after.error as { code: string }).code, 'MECHINT_ERR_JOB_CANCELLED');
});

test('a client that hangs up on a synchronous request frees the worker thread and the slot for the next job', async () => {
  const { url } = await startServer({ cache, jobs: { concurrency: 1 } });
  const abort = new AbortController();
  const req = fetch(`${url}/interpret`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ENDLESS_SAE), signal: abort.signal }).catch(() => null);
  await until('the job running', () => health(url), (h) => h.jobs.running === 1 && h.worker_threads === 1);
  abort.abort();
  await req;
  const h = await until('the worker thread exiting', () => health(url), (v) => v.worker_threads === 0 && v.jobs.running === 0, 5000);
  assert.equal(h.jobs.cancelled, 1);
  // The one slot is free: a small job runs at once.
  const next = await postJson(`${url}/interpret`, SMALL_SAE);
  assert.equal(next.status, 200, JSON.stringify(next.json));
});

test('a job that runs past jobs.timeoutMs fails with MECHINT_ERR_JOB_TIMEOUT (504) and its worker stops', async () => {
  const { url } = await startServer({ cache, jobs: { concurrency: 2, timeoutMs: 1500 } });
  const start = await postJson(`${url}/interpret`, { ...ENDLESS_SAE, async: true });
  const id = start.json.job_id as string;
  const done = await until('the job failing', () => jobView(url, id), (j) => j.state !== 'queued' && j.state !== 'running', 20_000);
  assert.equal(done.state, 'failed');
  const error = done.error as { statusCode: number; code: string; message: string };
  assert.equal(error.code, 'MECHINT_ERR_JOB_TIMEOUT');
  assert.equal(error.statusCode, 504);
  assert.match(error.message, /1\.5 s/);
  await until('the worker thread exiting', () => health(url), (h) => h.worker_threads === 0, 5000);
  // A synchronous request gets the same error as its answer.
  const sync = await postJson(`${url}/interpret`, ENDLESS_SAE);
  assert.equal(sync.status, 504, JSON.stringify(sync.json));
  assert.equal(sync.json.code, 'MECHINT_ERR_JOB_TIMEOUT');
  // A short job is not affected.
  assert.equal((await postJson(`${url}/interpret`, SMALL_SAE)).status, 200);
});

test('app.close() with a running job answers the waiting request, stops the worker and resolves within the grace', async () => {
  const app = await buildApp({ apiKey: null, cache, jobs: { concurrency: 1 }, shutdownGraceMs: 500 });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const waiting = fetch(`${url}/interpret`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ENDLESS_SAE) }).then(
    async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }),
    (err: unknown) => ({ status: 0, body: { error: String(err) } as Record<string, unknown> }),
  );
  await until('the job running', () => health(url), (h) => h.worker_threads === 1);
  const t0 = Date.now();
  await app.close();
  const took = Date.now() - t0;
  assert.ok(took < 10_000, `close took ${took} ms`);
  const answer = await waiting;
  assert.equal(answer.status, 409, JSON.stringify(answer.body));
  assert.equal(answer.body.code, 'MECHINT_ERR_JOB_CANCELLED');
  assert.equal(app.mechintJobs.liveWorkers(), 0);
});

test('a job submitted with the client\'s signal is cancelled when the client hangs up, even while queued', async () => {
  const app = await buildApp({ apiKey: null, cache, jobs: { concurrency: 1 } });
  const jobs = app.mechintJobs;
  // A route as routes.ts would write it: submit with clientSignal(request), then wait.
  const queuedTask = { analysisType: 'sae', layers: ['wide'] } as never; // never runs: the one slot stays busy
  app.post('/test/queued', async (request) => {
    const view = jobs.submit(queuedTask, { layerName: 'wide', shape: (r) => r, signal: clientSignal(request) });
    return jobs.wait(view.job_id);
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const busy = await postJson(`${url}/interpret`, { ...ENDLESS_SAE, async: true });
    await until('the slot taken', () => health(url), (h) => h.jobs.running === 1);
    const abort = new AbortController();
    const req = fetch(`${url}/test/queued`, { method: 'POST', signal: abort.signal }).catch(() => null);
    await until('the second job queued', () => health(url), (h) => h.jobs.queued === 1);
    abort.abort();
    await req;
    const h = await until('the queued job cancelled', () => health(url), (v) => v.jobs.queued === 0 && v.jobs.cancelled === 1, 5000);
    assert.equal(h.jobs.running, 1, 'the other job runs on');
    // A client already gone when the job would be submitted: refused at once.
    assert.throws(() => jobs.submit(queuedTask, { layerName: 'wide', shape: (r) => r, signal: AbortSignal.abort() }), (err: unknown) => (err as { code?: string }).code === 'MECHINT_ERR_JOB_CANCELLED');
    assert.equal((await getJson(`${url}/interpret/jobs/${busy.json.job_id as string}`, { method: 'DELETE' })).json.state, 'cancelled');
  } finally {
    await app.close();
  }
  assert.equal(jobs.liveWorkers(), 0);
});

test('mechint serve exits on SIGTERM within the bound while a job runs', async () => {
  const { child, url: listening, exited, stderr } = spawnServe(['--cache', cache, '--port', '0', '--shutdown-grace', '1', '--no-dashboard']);
  try {
    const url = await listening;
    const start = await postJson(`${url}/interpret`, { ...ENDLESS_SAE, async: true });
    assert.equal(start.status, 202, JSON.stringify(start.json));
    await until('the job running', () => health(url), (h) => h.worker_threads === 1);
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(15_000).then(() => 'still running' as const)]);
    const took = Date.now() - t0;
    assert.equal(code, 0, `exit ${String(code)} after ${took} ms; stderr: ${stderr()}`);
    assert.ok(took < 10_000, `serve took ${took} ms to exit after SIGTERM`);
    assert.match(stderr(), /SIGTERM: stopping; 1 job\(s\) get 1 s/);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
