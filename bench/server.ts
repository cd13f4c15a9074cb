/**
 * `npm run bench:server`: HTTP throughput and latency of the mechint server under autocannon, on
 * a cache of a few hundred MB that the bench writes to a temp dir. The server runs in a child
 * process so the load generator does not share its event loop. Prints one JSON object.
 *
 *   npm run bench:server -- [--mb 300] [--duration 10] [--connections 50]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Histogram { average: number; mean: number; p50: number; p90: number; p99: number; max: number }
interface AutocannonResult { requests: Histogram & { total: number }; latency: Histogram; non2xx: number; errors: number; timeouts: number; duration: number }
type Autocannon = (opts: Record<string, unknown>) => Promise<AutocannonResult>;

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** Child mode: serve the cache and print the address on stdout. */
async function serve(cache: string): Promise<void> {
  const { buildApp } = await import('../src/server/app.js');
  const app = await buildApp({ cache, apiKey: null, logger: false });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  console.log(`LISTENING ${url}`);
  process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
}

/** ~`mb` MB: `blocks.big` [rows, 1024] over 20 MB shards, plus `head` [256, 32] in each shard. */
async function writeCache(dir: string, mb: number): Promise<{ shards: number; bytes: number }> {
  const { ShardWriter } = await import('../src/storage/shard-writer.js');
  const writer = new ShardWriter({ dir });
  const rowsPerShard = 5000;
  const shardBytes = rowsPerShard * 1024 * 4;
  const shards = Math.max(1, Math.round((mb * 1e6) / shardBytes));
  const big = new Float32Array(rowsPerShard * 1024);
  const head = new Float32Array(256 * 32);
  let seed = 1;
  const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32) - 0.5;
  let bytes = 0;
  for (let s = 0; s < shards; s++) {
    for (let i = 0; i < big.length; i += 97) big[i] = rand(); // sparse writes: content does not matter, size does
    for (let i = 0; i < head.length; i++) head[i] = Math.max(0, rand());
    const rec = await writer.write({ layers: { 'blocks.big': { shape: [rowsPerShard, 1024], data: big }, head: { shape: [256, 32], data: head } }, globalStep: s * 200 });
    bytes += rec.bytes;
  }
  await writer.finish();
  return { shards, bytes };
}

async function startChild(cache: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve', cache], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /LISTENING (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return {
    url,
    stop: () => new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

function figures(r: AutocannonResult) {
  return {
    requests_per_s: Math.round(r.requests.average),
    total_requests: r.requests.total,
    latency_ms: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max, mean: Number(r.latency.mean.toFixed(2)) },
    non_2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
  };
}

async function main(): Promise<void> {
  const mb = flag('mb', 300);
  const duration = flag('duration', 10);
  const connections = flag('connections', 50);
  const moduleName = 'autocannon'; // no bundled types; loaded by name
  const autocannon = ((await import(moduleName)) as { default: Autocannon }).default;
  const dir = await mkdtemp(join(tmpdir(), 'mechint-bench-server-'));
  try {
    const t0 = Date.now();
    const cache = await writeCache(dir, mb);
    const writeS = (Date.now() - t0) / 1000;
    const server = await startChild(dir);
    try {
      const neuronBody = JSON.stringify({ analysis_type: 'neuron', layer_name: 'head', config: {} });
      const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: neuronBody };
      // Warm up: the first read of each shard checks its sha256 against the manifest.
      const warm = await fetch(`${server.url}/interpret`, post);
      if (warm.status !== 200) throw new Error(`neuron warm-up answered ${warm.status}: ${await warm.text()}`);
      await autocannon({ url: `${server.url}/interpret/layers`, connections, duration: 2 });

      const layers = await autocannon({ url: `${server.url}/interpret/layers`, connections, duration });
      const neuron = await autocannon({ url: `${server.url}/interpret`, connections: Math.min(connections, 16), duration, ...post });
      const result = {
        machine: { cpus: availableParallelism(), node: process.version },
        cache: { mb: Number((cache.bytes / 1e6).toFixed(1)), shards: cache.shards, layers: { 'blocks.big': [cache.shards * 5000, 1024], head: [cache.shards * 256, 32] }, write_s: writeS },
        load: { duration_s: duration, connections },
        'GET /interpret/layers': figures(layers),
        'POST /interpret neuron': { layer: 'head', rows: cache.shards * 256, units: 32, shards_read: cache.shards, ...figures(neuron), connections: Math.min(connections, 16) },
        targets: { layers_requests_per_s: '>= 5000', layers_p99_ms: '< 20' },
        met: layers.requests.average >= 5000 && layers.latency.p99 < 20,
      };
      console.log(JSON.stringify(result, null, 2));
    } finally {
      await server.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const serveAt = process.argv.indexOf('--serve');
if (serveAt >= 0) await serve(process.argv[serveAt + 1]!);
else await main();
