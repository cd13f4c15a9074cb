/**
 * Capture overhead, manifest cost and shard I/O throughput. Prints JSON.
 * - Training: the same small model (2 hooked layers, guide defaults: save every 200 steps, 10000
 *   samples per shard) trained with and without MechIntCallback, alternated, several rounds; and
 *   with a save every step (the worst case: a shard and a journal line per step, backpressure on).
 * - Manifest: the cost per shard of keeping the manifest current (ShardWriter.write of a tiny
 *   shard, and the journal append alone) in a directory that already lists 100 and 10,000 shards,
 *   against rewriting the whole manifest.json per shard (what mechint did before the journal).
 * - Shards: the shard file written as ShardWriter does (atomic, with its sha256), the whole
 *   ShardWriter.write (shard, then manifest), and ShardReader row streaming, against a plain fs
 *   write+fsync and read of the same bytes.
 */
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// The built package, as users run it (npm install builds it; `npm run build` after changes).
import { emptyManifest, fromFloat32, initBackend, ManifestLog, MechIntCallback, serializeSafetensors, ShardReader, ShardWriter, writeFileAtomic, writeManifest, type ShardRecord } from 'mechint';

const rounds = Number(process.env.ROUNDS ?? 5);
const stepsPerRun = Number(process.env.STEPS ?? 3000);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

await initBackend();
const dir = await mkdtemp(join(tmpdir(), 'mechint-bench-'));

function makeModel(): tf.LayersModel {
  const x = tf.input({ shape: [64] });
  const h1 = tf.layers.dense({ units: 128, activation: 'relu', name: 'hidden1', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }).apply(x) as tf.SymbolicTensor;
  const h2 = tf.layers.dense({ units: 128, activation: 'relu', name: 'hidden2', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }).apply(h1) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 8, name: 'out', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }).apply(h2) as tf.SymbolicTensor;
  const model = tf.model({ inputs: x, outputs: out });
  model.compile({ optimizer: tf.train.sgd(0.01), loss: 'meanSquaredError' });
  return model;
}

const batch = 32;
const xs = tf.randomNormal([stepsPerRun * batch, 64], 0, 1, 'float32', 1);
const ys = tf.randomNormal([stepsPerRun * batch, 8], 0, 1, 'float32', 2);

async function train(withCallback: boolean, round: number, saveEvery = 200): Promise<number> {
  const model = makeModel();
  const callbacks = withCallback ? [new MechIntCallback({ sampleLayers: ['hidden1', 'hidden2'], saveHiddenEveryNSteps: saveEvery, storagePath: join(dir, `run${round}-${saveEvery}`), verbose: false })] : [];
  const t0 = performance.now();
  await model.fit(xs, ys, { epochs: 1, batchSize: batch, callbacks, verbose: 0, shuffle: false });
  const ms = performance.now() - t0;
  model.dispose();
  return ms;
}

await train(false, -1); // warm-up
await train(true, -2);
const plain: number[] = [];
const hooked: number[] = [];
for (let r = 0; r < rounds; r++) {
  // Alternate which goes first so drift in machine load affects both alike.
  if (r % 2 === 0) {
    plain.push(await train(false, r));
    hooked.push(await train(true, r));
  } else {
    hooked.push(await train(true, r));
    plain.push(await train(false, r));
  }
}
const ratios = plain.map((p, i) => hooked[i]! / p);

// Saving every step: a shard (32 rows × 2 layers) and a journal line per step.
const everyRounds = Number(process.env.EVERY_STEP_ROUNDS ?? 3);
const plainEvery: number[] = [];
const hookedEvery: number[] = [];
for (let r = 0; r < everyRounds; r++) {
  plainEvery.push(await train(false, 100 + r));
  hookedEvery.push(await train(true, 100 + r, 1));
}
const ratiosEvery = plainEvery.map((p, i) => hookedEvery[i]! / p);

// Manifest cost per shard with 100 and 10,000 shards already listed.
const record = (i: number): ShardRecord => ({
  file: `activations_shard_${String(i).padStart(6, '0')}_step_${i * 200}.safetensors`, uri: `file:///x/${i}`, shard_id: i, global_step: i * 200,
  epoch: 0, batch_idx: i, rank: 0, rows: { hidden1: 10000, hidden2: 10000 }, shapes: { hidden1: [10000, 128], hidden2: [10000, 128] }, dtype: 'F32',
  bytes: 10_240_000, sha256: 'a'.repeat(64), created: new Date().toISOString(), upload: 'local',
});
const tiny = { t: { shape: [1, 4], data: new Float32Array(4) } };
const perShards = Number(process.env.MANIFEST_WRITES ?? 60);
const sizes = [100, 10_000];
const runs = [];
for (const listed of sizes) {
  const d = join(dir, `manifest-${listed}`);
  const m = emptyManifest({}, 0);
  m.shards = Array.from({ length: listed }, (_, i) => record(i));
  await mkdir(d, { recursive: true });
  await writeManifest(d, m);
  const writer = new ShardWriter({ dir: d });
  const t0 = performance.now();
  await writer.open();
  runs.push({ listed, d, m, writer, openMs: performance.now() - t0, writes: [] as number[], appends: [] as number[], rewrite: [] as number[] });
}
// Alternated between the two directories, so drift in the machine's load affects both alike.
for (let i = 0; i < perShards; i++) {
  for (const r of runs) {
    const t0 = performance.now();
    await r.writer.write({ layers: tiny, globalStep: (r.listed + i) * 200 });
    r.writes.push(performance.now() - t0);
  }
}
for (const r of runs) await r.writer.finish();
// The journal append alone (what replaced the rewrite), on a manifest of each size.
const logs = runs.map((r) => new ManifestLog(r.d, 'manifest.json', r.m));
for (let i = 0; i < perShards; i++) {
  for (const [k, r] of runs.entries()) {
    const t0 = performance.now();
    await logs[k]!.append({ op: 'shard', shard: record(r.listed + perShards + i), layers: {} });
    r.appends.push(performance.now() - t0);
  }
}
for (const log of logs) await log.close();
// The old way: manifest.json rewritten whole (atomically) after every shard.
for (let i = 0; i < 7; i++) {
  for (const r of runs) {
    const t0 = performance.now();
    await writeManifest(r.d, r.m);
    r.rewrite.push(performance.now() - t0);
  }
}
const manifestCost: Record<string, unknown> = {};
for (const r of runs) {
  manifestCost[`at_${r.listed}_shards`] = {
    shard_write_ms_median: +median(r.writes).toFixed(3),
    journal_append_ms_median: +median(r.appends).toFixed(3),
    full_rewrite_ms_median: +median(r.rewrite).toFixed(3),
    open_ms: +r.openMs.toFixed(1),
  };
}
// Amortised over a run: 10,000 journal appends from an empty manifest, compactions included.
const amortDir = join(dir, 'manifest-amortised');
await mkdir(amortDir, { recursive: true });
const amortLog = new ManifestLog(amortDir, 'manifest.json', emptyManifest({}, 0));
const amortN = Number(process.env.AMORTISED_SHARDS ?? 10_000);
const early: number[] = [];
const late: number[] = [];
let amortTotal = 0;
let amortMax = 0;
for (let i = 0; i < amortN; i++) {
  const t0 = performance.now();
  await amortLog.append({ op: 'shard', shard: record(i), layers: {} });
  const ms = performance.now() - t0;
  amortTotal += ms;
  amortMax = Math.max(amortMax, ms);
  if (i >= 90 && i < 110) early.push(ms);
  if (i >= amortN - 110 && i < amortN - 90) late.push(ms);
}
await amortLog.close();

// Shard I/O: two layers of 10000 × 512 float32 (about 41 MB).
const rows = 10000;
const dim = 512;
const a = Float32Array.from({ length: rows * dim }, (_, i) => Math.sin(i));
const b = Float32Array.from({ length: rows * dim }, (_, i) => Math.cos(i));
const bytes = Buffer.concat(serializeSafetensors({ l1: fromFloat32(a, [rows, dim]), l2: fromFloat32(b, [rows, dim]) })).length;
const writeOurs: number[] = [];
const writeWithManifest: number[] = [];
const writePlain: number[] = [];
const readOurs: number[] = [];
const readPlain: number[] = [];
const ioRounds = rounds * 2 + 1;
for (let r = 0; r < ioRounds; r++) {
  const tensors = () => ({ l1: fromFloat32(a, [rows, dim]), l2: fromFloat32(b, [rows, dim]) });
  const ours = async () => {
    // The shard file as ShardWriter writes it: temp name, sha256, fsync, rename.
    const t0 = performance.now();
    await writeFileAtomic(join(dir, `ours${r}.safetensors`), serializeSafetensors(tensors()), { syncDir: false });
    writeOurs.push(performance.now() - t0);
  };
  const plainWrite = async () => {
    const t0 = performance.now();
    const fh = await open(join(dir, `plain${r}.bin`), 'w');
    await fh.writev(serializeSafetensors(tensors()));
    await fh.sync();
    await fh.close();
    writePlain.push(performance.now() - t0);
  };
  // Alternate the order so the disk's state favours neither.
  if (r % 2 === 0) {
    await ours();
    await plainWrite();
  } else {
    await plainWrite();
    await ours();
  }
  // The whole of ShardWriter.write: the shard, then the manifest that lists it.
  const w = new ShardWriter({ dir: join(dir, `io${r}`) });
  await w.open();
  let t0 = performance.now();
  const rec = await w.write({ layers: { l1: { shape: [rows, dim], data: a }, l2: { shape: [rows, dim], data: b } }, globalStep: r });
  writeWithManifest.push(performance.now() - t0);
  await w.finish();

  t0 = performance.now();
  const reader = await ShardReader.open(join(dir, `io${r}`, rec.file), { verify: false });
  let sum = 0;
  for (const layer of ['l1', 'l2']) for await (const blk of reader.rows(layer, { blockRows: 4096 })()) sum += blk.rows[0]!;
  readOurs.push(performance.now() - t0);

  t0 = performance.now();
  const raw = await readFile(join(dir, `plain${r}.bin`));
  sum += raw[0]!;
  readPlain.push(performance.now() - t0);
  if (Number.isNaN(sum)) console.error('unexpected');
}
await rm(dir, { recursive: true, force: true });

const mbps = (ms: number) => bytes / 1e6 / (ms / 1000);
console.log(JSON.stringify({
  training: {
    steps_per_run: stepsPerRun,
    rounds,
    plain_ms: plain.map(Math.round),
    with_callback_ms: hooked.map(Math.round),
    overhead_median: +(median(ratios) - 1).toFixed(4),
    overhead_total: +(hooked.reduce((x, y) => x + y) / plain.reduce((x, y) => x + y) - 1).toFixed(4),
    target_max_overhead: 0.03,
    save_every_step: {
      plain_ms: plainEvery.map(Math.round),
      with_callback_ms: hookedEvery.map(Math.round),
      overhead_median: +(median(ratiosEvery) - 1).toFixed(4),
    },
  },
  manifest: {
    ...manifestCost,
    amortised: {
      shards: amortN,
      mean_ms_per_shard: +(amortTotal / amortN).toFixed(3),
      median_ms_around_shard_100: +median(early).toFixed(3),
      median_ms_around_last_shard: +median(late).toFixed(3),
      max_ms: +amortMax.toFixed(1),
      compactions: amortLog.compactions,
    },
  },
  shard_io: {
    bytes,
    write_mb_s: +mbps(median(writeOurs)).toFixed(1),
    plain_write_fsync_mb_s: +mbps(median(writePlain)).toFixed(1),
    write_ratio: +(median(writePlain) / median(writeOurs)).toFixed(3),
    write_with_manifest_mb_s: +mbps(median(writeWithManifest)).toFixed(1),
    write_with_manifest_ratio: +(median(writePlain) / median(writeWithManifest)).toFixed(3),
    read_mb_s: +mbps(median(readOurs)).toFixed(1),
    plain_read_mb_s: +mbps(median(readPlain)).toFixed(1),
    read_ratio: +(median(readPlain) / median(readOurs)).toFixed(3),
    target_min_ratio: 0.9,
  },
}, null, 2));
