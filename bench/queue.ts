/**
 * `npm run bench:queue`: what running analyses through Redis costs. The same neuron and feature
 * requests (each with its own options, so none is answered from stored results) run inline in the
 * server process, then through a `RedisJobQueue` with one and with two `mechint worker` processes.
 * Reports jobs/s (neuron and feature requests sent `--parallel` at a time) and the median latency
 * of one neuron request alone, and what the queue adds to it. Needs redis-server on PATH. Prints one JSON object.
 *
 *   npm run bench:queue -- [--jobs 60] [--parallel 8] [--rows 2000]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildApp } from '../src/server/app.js';
import { RedisJobQueue } from '../src/server/redis-queue.js';
import { ShardWriter } from '../src/storage/shard-writer.js';

const ROOT = join(import.meta.dirname, '..');
function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const JOBS = flag('jobs', 60);
const PARALLEL = flag('parallel', 8);
const ROWS = flag('rows', 2000);
const LATENCY_SAMPLES = 15;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function plant(dir: string): Promise<void> {
  const writer = new ShardWriter({ dir });
  for (let s = 0; s < 2; s++) {
    const data = Float32Array.from({ length: ROWS * 32 }, (_, i) => Math.max(0, Math.sin(i * 0.37 + s) + 0.2));
    await writer.write({ layers: { layer1: { shape: [ROWS, 32], data } }, globalStep: s * 100 });
  }
  await writer.finish();
}

/** The i-th request: options differ so each one is computed. */
const request = (i: number) => (i % 2 === 0
  ? { analysis_type: 'neuron', layer_name: 'layer1', config: { dead_threshold: (i + 1) / 1_000_000 } }
  : { analysis_type: 'feature', layer_name: 'layer1', config: { n_clusters: 2 + (i % 5), n_init: 1 + (i % 97) } });

async function post(base: string, body: unknown): Promise<void> {
  const r = await fetch(`${base}/interpret`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${r.status}: ${await r.text()}`);
  await r.arrayBuffer();
}

async function measure(base: string, offset: number): Promise<{ jobs_per_s: number; median_latency_ms: number }> {
  const lat: number[] = [];
  for (let i = 0; i < LATENCY_SAMPLES; i++) {
    const t = performance.now();
    await post(base, { analysis_type: 'neuron', layer_name: 'layer1', config: { dead_threshold: 0.5 + (offset + i + 1) / 1_000_000 } });
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  let next = offset + LATENCY_SAMPLES;
  const end = next + JOBS;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: PARALLEL }, async () => {
    while (next < end) await post(base, request(next++));
  }));
  const s = (performance.now() - t0) / 1000;
  return { jobs_per_s: Math.round((JOBS / s) * 10) / 10, median_latency_ms: Math.round(lat[Math.floor(lat.length / 2)]! * 10) / 10 };
}

function worker(url: string): Promise<ChildProcess> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/cli.ts', 'worker', '--queue', url], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => proc.stdout!.setEncoding('utf8').on('data', (d: string) => d.includes('mechint worker on') && resolve(proc)));
}

const port = await freePort();
const url = `redis://127.0.0.1:${port}`;
const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
const procs: ChildProcess[] = [];
const dirs: string[] = [];
try {
  await sleep(300);
  const out: Record<string, unknown> = { jobs: JOBS, parallel: PARALLEL, rows: ROWS * 2, dim: 32, cpus: availableParallelism() };
  const inlineDir = await mkdtemp(join(tmpdir(), 'mechint-bench-queue-'));
  dirs.push(inlineDir);
  await plant(inlineDir);
  const inlineApp = await buildApp({ apiKey: null, cache: inlineDir, inlineLimits: { neuron: 1e12, feature: 1e12 } });
  const inline = await measure(await inlineApp.listen({ host: '127.0.0.1', port: 0 }), 0);
  await inlineApp.close();
  out.inline = inline;
  for (const n of [1, 2]) {
    while (procs.length < n) procs.push(await worker(url));
    const dir = await mkdtemp(join(tmpdir(), 'mechint-bench-queue-'));
    dirs.push(dir);
    await plant(dir);
    const queue = new RedisJobQueue({ url });
    await queue.ready();
    const app = await buildApp({ apiKey: null, cache: dir, jobs: queue, inlineLimits: { neuron: -1, feature: -1 }, ...(process.env.BENCH_LOG ? { logger: { level: 'error' } } : {}) });
    const base = await app.listen({ host: '127.0.0.1', port: 0 });
    await post(base, request(100_000 + n)); // warm the workers
    const r = await measure(base, 10_000 * n);
    await app.close();
    out[`redis_${n}_worker${n > 1 ? 's' : ''}`] = { ...r, added_latency_ms: Math.round((r.median_latency_ms - inline.median_latency_ms) * 10) / 10 };
  }
  console.log(JSON.stringify(out, null, 2));
} finally {
  for (const p of procs) p.kill('SIGKILL');
  redis.kill('SIGKILL');
  for (const d of dirs) await rm(d, { recursive: true, force: true });
}
