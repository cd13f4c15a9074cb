/**
 * Capture overhead and shard I/O throughput. Prints JSON.
 * - Training: the same small model (2 hooked layers, guide defaults: save every 200 steps, 10000
 *   samples per shard) trained with and without MechIntCallback, alternated, several rounds.
 * - Shards: the shard file written as ShardWriter does (atomic, with its sha256), the whole
 *   ShardWriter.write (shard, then manifest), and ShardReader row streaming, against a plain fs
 *   write+fsync and read of the same bytes.
 */
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// The built package, as users run it (npm install builds it; `npm run build` after changes).
import { fromFloat32, initBackend, MechIntCallback, serializeSafetensors, ShardReader, ShardWriter, writeFileAtomic } from 'mechint';

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

async function train(withCallback: boolean, round: number): Promise<number> {
  const model = makeModel();
  const callbacks = withCallback ? [new MechIntCallback({ sampleLayers: ['hidden1', 'hidden2'], storagePath: join(dir, `run${round}`), verbose: false })] : [];
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
