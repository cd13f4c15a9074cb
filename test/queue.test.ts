/**
 * `mechint serve --queue` and `mechint worker`: jobs in Redis (BullMQ) run by worker processes.
 * A real redis-server on a free port, two `mechint worker` processes from the sources.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/server/app.js';
import { RedisJobQueue, type RedisJobQueueOptions } from '../src/server/redis-queue.js';
import { getJson, plantCache, postJson } from './server-helpers.js';

const REDIS = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
const skip = REDIS === '' ? 'redis-server is not installed (apt-get install redis-server); the queue tests need a real Redis' : false;
const ROOT = join(import.meta.dirname, '..');

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(what: string, f: () => Promise<T>, ok: (v: T) => boolean, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined as T);
    if (v !== undefined && ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await sleep(100);
  }
}

let port = 0;
let redis: ChildProcess | null = null;
let url = '';
const dirs: string[] = [];

function startRedis(): Promise<void> {
  redis = spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  return until('redis-server', () => new Promise<boolean>((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(true)); // the port is taken: redis listens
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
  }), (up) => up, 5000).then(() => undefined);
}

async function stopRedis(): Promise<void> {
  const r = redis;
  redis = null;
  if (!r || r.exitCode !== null) return;
  await new Promise<void>((resolve) => {
    r.once('exit', () => resolve());
    r.kill('SIGKILL');
  });
}

interface WorkerProc {
  proc: ChildProcess;
  lines: Array<{ job: string; state: string }>;
  ready: Promise<void>;
}
const workers: WorkerProc[] = [];

function startWorker(): WorkerProc {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/cli.ts', 'worker', '--queue', url, '--lock-ms', '2000', '--stalled-ms', '1000', '--log'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: WorkerProc['lines'] = [];
  let buf = '';
  let markReady!: () => void;
  const ready = new Promise<void>((r) => (markReady = r));
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('mechint worker on')) markReady();
      else if (line.startsWith('{')) lines.push(JSON.parse(line) as { job: string; state: string });
    }
  });
  const w = { proc, lines, ready };
  workers.push(w);
  return w;
}

async function server(cache: string, extra: Partial<RedisJobQueueOptions> = {}): Promise<{ app: FastifyInstance; base: string; queue: RedisJobQueue }> {
  const queue = new RedisJobQueue({ url, commandTimeoutMs: 1000, ...extra });
  await queue.ready();
  // Every analysis goes to the queue (none inline), so the workers run them.
  const app = await buildApp({ apiKey: null, cache, jobs: queue, inlineLimits: { neuron: -1, feature: -1 } });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, base, queue };
}

/** Twenty requests: neuron at ten thresholds, feature at five cluster counts on both layers. */
const REQUESTS = [
  ...Array.from({ length: 10 }, (_, i) => ({ analysis_type: 'neuron', layer_name: 'layer1', config: { dead_threshold: (i + 1) / 100 } })),
  ...[2, 3, 4, 5, 6].flatMap((k) => ['layer1', 'blocks.seq'].map((layer) => ({ analysis_type: 'feature', layer_name: layer, config: { n_clusters: k } }))),
];
const LONG_SAE = { analysis_type: 'sae', layer_name: 'layer1', config: { epochs: 400, batch_size: 8, n_latents: 24 } };

let queuedCache = '';
let inline: unknown[] = [];
let first: { app: FastifyInstance; base: string; queue: RedisJobQueue } | null = null;
const jobIds: string[] = [];

before(async () => {
  if (skip) return;
  port = await freePort();
  url = `redis://127.0.0.1:${port}`;
  await startRedis();
  const inlineCache = await mkdtemp(join(tmpdir(), 'mechint-queue-inline-'));
  queuedCache = await mkdtemp(join(tmpdir(), 'mechint-queue-'));
  dirs.push(inlineCache, queuedCache);
  await plantCache(inlineCache);
  await plantCache(queuedCache);
  // The reference: the same requests run in this process (no Redis).
  const ref = await buildApp({ apiKey: null, cache: inlineCache, inlineLimits: { neuron: 1e9, feature: 1e9 } });
  const refUrl = await ref.listen({ host: '127.0.0.1', port: 0 });
  inline = [];
  try {
    for (const body of REQUESTS) {
      const r = await postJson(`${refUrl}/interpret`, body);
      assert.equal(r.status, 200, JSON.stringify(r.json));
      inline.push(r.json.results);
    }
  } finally {
    await ref.close();
  }
  startWorker();
  startWorker();
  await Promise.all(workers.map((w) => w.ready));
});

after(async () => {
  await first?.app.close().catch(() => undefined);
  for (const w of workers) if (w.proc.exitCode === null) w.proc.kill('SIGKILL');
  await stopRedis();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

test('two `mechint worker` processes drain twenty jobs, with the results of the inline run', { skip }, async () => {
  first = await server(queuedCache);
  const accepted = await Promise.all(REQUESTS.map((body) => postJson(`${first!.base}/interpret`, { ...body, async: true })));
  for (const a of accepted) assert.equal(a.status, 202, JSON.stringify(a.json));
  jobIds.push(...accepted.map((a) => a.json.job_id as string));
  const views = await Promise.all(jobIds.map((id) => until(`job ${id}`, () => getJson(`${first!.base}/interpret/jobs/${id}`), (v) => v.json.state === 'succeeded' || v.json.state === 'failed')));
  views.forEach((v, i) => {
    assert.equal(v.json.state, 'succeeded', JSON.stringify(v.json));
    assert.deepEqual((v.json.result as { results: unknown }).results, inline[i], `${REQUESTS[i]!.analysis_type} ${JSON.stringify(REQUESTS[i]!.config)}`);
  });
  const done = workers.map((w) => w.lines.filter((l) => l.state === 'succeeded' && jobIds.includes(l.job)).length);
  assert.equal(done[0]! + done[1]!, 20, `each job ran once: ${done.join(' + ')}`);
  assert.ok(done[0]! > 0 && done[1]! > 0, `both workers took jobs: ${done.join(' + ')}`);
  // A synchronous request waits for its job and records the result: the same request is then answered from the store.
  const sync = await postJson(`${first.base}/interpret`, { analysis_type: 'neuron', layer_name: 'blocks.seq' });
  assert.equal(sync.status, 200, JSON.stringify(sync.json));
  assert.equal(sync.json.origin, 'computed');
  const again = await postJson(`${first.base}/interpret`, { analysis_type: 'neuron', layer_name: 'blocks.seq' });
  assert.equal(again.json.origin, 'stored');
  assert.deepEqual(again.json.results, sync.json.results);
});

test('a worker killed mid-job gives its job to the other, which completes it once', { skip }, async () => {
  const a = await postJson(`${first!.base}/interpret`, { ...LONG_SAE, async: true });
  assert.equal(a.status, 202, JSON.stringify(a.json));
  const id = a.json.job_id as string;
  const runner = (await until('a worker to take the SAE job', async () => workers.find((w) => w.lines.some((l) => l.job === id && l.state === 'active')), (w) => w !== undefined, 10_000))!;
  await until('SAE progress', () => getJson(`${first!.base}/interpret/jobs/${id}`), (v) => (v.json.progress as { stage: string }).stage === 'epoch');
  runner.proc.kill('SIGKILL');
  const other = workers.find((w) => w !== runner)!;
  const v = await until('the job to finish on the other worker', () => getJson(`${first!.base}/interpret/jobs/${id}`), (x) => x.json.state === 'succeeded' || x.json.state === 'failed', 40_000);
  assert.equal(v.json.state, 'succeeded', JSON.stringify(v.json.error));
  assert.equal(other.lines.filter((l) => l.job === id && l.state === 'succeeded').length, 1);
  assert.equal(runner.lines.filter((l) => l.job === id && l.state === 'succeeded').length, 0);
  jobIds.push(id);
  startWorker(); // two again for what follows
});

test('a new server process on the same Redis lists every job the old one queued', { skip }, async () => {
  await first!.app.close();
  first = await server(queuedCache);
  for (const [i, id] of jobIds.entries()) {
    const v = await getJson(`${first.base}/interpret/jobs/${id}`);
    assert.equal(v.status, 200, JSON.stringify(v.json));
    assert.equal(v.json.state, 'succeeded');
    if (i < REQUESTS.length) assert.deepEqual((v.json.result as { results: unknown }).results, inline[i]);
  }
  const h = await getJson(`${first.base}/health`);
  assert.deepEqual(h.json.queue, { kind: 'redis', connected: true, waiting: 0, active: 0 });
});

test('cancel reaches across processes; a full queue answers 429; a job past its timeout fails with MECHINT_ERR_JOB_TIMEOUT', { skip }, async () => {
  // A queue no worker serves: its jobs stay queued.
  const idle = await server(queuedCache, { queueName: 'mechint-test-idle', maxQueued: 2 });
  try {
    const ids: string[] = [];
    for (const config of [{ dead_threshold: 0.5 }, { dead_threshold: 0.6 }]) {
      const r = await postJson(`${idle.base}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', config, async: true });
      assert.equal(r.status, 202);
      ids.push(r.json.job_id as string);
    }
    const full = await postJson(`${idle.base}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', config: { dead_threshold: 0.7 }, async: true });
    assert.equal(full.status, 429, JSON.stringify(full.json));
    assert.equal(full.json.code, 'MECHINT_ERR_QUEUE_FULL');
    const cancelled = await fetch(`${idle.base}/interpret/jobs/${ids[0]}`, { method: 'DELETE' }).then((r) => r.json() as Promise<Record<string, unknown>>);
    assert.equal(cancelled.state, 'cancelled');
    const other = new RedisJobQueue({ url, queueName: 'mechint-test-idle' });
    await other.ready();
    try {
      const seen = await other.view(ids[0]!);
      assert.equal(seen.state, 'cancelled');
      assert.equal(seen.error?.code, 'MECHINT_ERR_JOB_CANCELLED');
    } finally {
      await other.close();
    }
  } finally {
    await idle.app.close();
  }
  const timed = await server(queuedCache, { timeoutMs: 300 });
  try {
    const r = await postJson(`${timed.base}/interpret`, { ...LONG_SAE, config: { ...LONG_SAE.config, seed: 7 } });
    assert.equal(r.status, 504, JSON.stringify(r.json));
    assert.equal(r.json.code, 'MECHINT_ERR_JOB_TIMEOUT');
  } finally {
    await timed.app.close();
  }
});

test('with Redis down requests get 503 MECHINT_ERR_QUEUE_UNAVAILABLE at once, and the server recovers when it returns', { skip }, async () => {
  await stopRedis();
  const t0 = Date.now();
  const down = await postJson(`${first!.base}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', config: { dead_threshold: 0.33 } });
  assert.equal(down.status, 503, JSON.stringify(down.json));
  assert.equal(down.json.code, 'MECHINT_ERR_QUEUE_UNAVAILABLE');
  const job = await getJson(`${first!.base}/interpret/jobs/${jobIds[0]}`);
  assert.equal(job.status, 503);
  assert.ok(Date.now() - t0 < 3000, `answered in ${Date.now() - t0} ms`);
  const h = await getJson(`${first!.base}/health`);
  assert.equal(h.status, 200);
  assert.equal(h.json.status, 'degraded');
  assert.equal((h.json.queue as { connected: boolean }).connected, false);
  await startRedis();
  await until('the queue connected again', () => getJson(`${first!.base}/health`), (x) => (x.json.queue as { connected: boolean }).connected, 15_000);
  const back = await until('a job to run again', () => postJson(`${first!.base}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', config: { dead_threshold: 0.33 } }), (x) => x.status === 200, 20_000);
  assert.equal((back.json.results as { mean_activation: number[] }).mean_activation.length, 6);
});
