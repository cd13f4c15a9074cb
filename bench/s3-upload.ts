/**
 * Upload throughput to a local S3-compatible server (s3rver in a child process on 127.0.0.1),
 * through the same UploadQueue the training run uses (digest, HEAD, PUT or multipart, HEAD).
 * Also range-GET row streaming through ShardReader. Prints JSON.
 * Env: SHARDS (default 16), SHARD_MIB (default 4), CONCURRENCY (default 4).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromFloat32 } from '../src/formats/dtypes.js';
import { serializeSafetensors } from '../src/formats/safetensors.js';
import { S3Store } from '../src/storage/s3-store.js';
import { ShardReader } from '../src/storage/shard-reader.js';
import { UploadQueue } from '../src/storage/upload-queue.js';

process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
process.env.AWS_REGION = 'us-east-1';
process.env.AWS_EC2_METADATA_DISABLED = 'true';

const shards = Number(process.env.SHARDS ?? 16);
const shardMiB = Number(process.env.SHARD_MIB ?? 4);
const concurrency = Number(process.env.CONCURRENCY ?? 4);
const dir = await mkdtemp(join(tmpdir(), 'mechint-bench-s3-'));
const serverDir = await mkdtemp(join(tmpdir(), 'mechint-bench-s3rver-'));

const proc = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/s3rver-child.ts', serverDir, '0', 'bench'], { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise<number>((resolve) => {
  let out = '';
  proc.stdout!.on('data', (d) => {
    out += d;
    const m = /listening (\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
});

try {
  const dim = 512;
  const rows = Math.floor((shardMiB * 1024 * 1024) / (dim * 4));
  const files: { key: string; path: string; bytes: number; sha256: string }[] = [];
  for (let i = 0; i < shards; i++) {
    const data = new Float32Array(randomBytes(rows * dim * 4).buffer).map((v) => (Number.isFinite(v) ? v : 0));
    const chunks = serializeSafetensors({ layer: fromFloat32(data, [rows, dim]) }, { global_step: String(i) });
    const buf = Buffer.concat(chunks);
    const key = `activations_shard_${String(i).padStart(6, '0')}_step_${i}.safetensors`;
    await writeFile(join(dir, key), buf);
    files.push({ key, path: join(dir, key), bytes: buf.length, sha256: createHash('sha256').update(buf).digest('hex') });
  }
  const store = new S3Store({ bucket: 'bench', prefix: 'run', endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true, maxAttempts: 1 });
  const queue = new UploadQueue({ store, concurrency });
  const t0 = performance.now();
  for (const f of files) queue.enqueue({ key: f.key, source: f });
  if (!(await queue.drain(600_000))) throw new Error(`uploads did not finish: ${queue.stats.lastError}`);
  const uploadS = (performance.now() - t0) / 1000;
  const total = files.reduce((a, f) => a + f.bytes, 0);

  await store.put('manifest.json', Buffer.from(JSON.stringify({ format: 'mechint-manifest', version: 1, shards: files.map((f, i) => ({ file: f.key, uri: store.uri(f.key), shard_id: i, global_step: i, rows: { layer: rows }, shapes: { layer: [rows, dim] }, dtype: 'F32', bytes: f.bytes, sha256: f.sha256, upload: 'uploaded' })) })));
  const reader = await ShardReader.open('s3://bench/run', { s3: { endpoint: `http://127.0.0.1:${port}`, forcePathStyle: true } });
  const t1 = performance.now();
  let n = 0;
  for await (const b of reader.rows('layer', { blockRows: 4096 })()) n += b.nRows;
  const readS = (performance.now() - t1) / 1000;
  const t2 = performance.now();
  let m = 0;
  for await (const b of reader.rows('layer', { blockRows: 4096 })()) m += b.nRows;
  const rereadS = (performance.now() - t2) / 1000;
  queue.close();
  store.destroy();
  console.log(JSON.stringify({
    server: 's3rver 3.7.1, child process, 127.0.0.1',
    shards,
    shard_mib: +(files[0]!.bytes / 2 ** 20).toFixed(2),
    concurrency,
    upload: { seconds: +uploadS.toFixed(2), mib_per_s: +(total / 2 ** 20 / uploadS).toFixed(1), note: 'includes MD5 digest, HEAD before, PUT (multipart above 8 MiB), HEAD after' },
    read_rows_first_pass: { rows: n, seconds: +readS.toFixed(2), mib_per_s: +(total / 2 ** 20 / readS).toFixed(1), note: 'sha256 verification (full GET) + range GET per shard' },
    read_rows_verified: { rows: m, seconds: +rereadS.toFixed(2), mib_per_s: +(total / 2 ** 20 / rereadS).toFixed(1) },
  }, null, 2));
} finally {
  proc.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
  await rm(serverDir, { recursive: true, force: true });
}
