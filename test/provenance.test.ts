/**
 * Provenance of captured rows (docs/provenance.md): every row the reservoir keeps during fit
 * (shuffled, more samples than the reservoir holds) traces back to its step, epoch, batch, row
 * and position, and to the inputs, targets and ids of its sample.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { initBackend, tf } from '../src/backend.js';
import { MechIntCallback } from '../src/capture/callback.js';
import { MechIntHooks } from '../src/capture/hooks.js';
import { withSampleIds } from '../src/capture/model-data.js';
import { hookLayerCall } from '../src/model/layer-hook.js';
import { readSafetensorsHeader } from '../src/formats/safetensors.js';
import { ShardReader } from '../src/storage/shard-reader.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { PROVENANCE_COLUMNS, provenanceRow } from '../src/storage/provenance.js';
import { tempDir } from './helpers.js';

const T = 4;
const N = 96;
const BATCH = 16;

/** x[i] is [T, 3] with feature 0 = the dataset index i, feature 1 = the position t; y[i] = 2i + 1. */
function dataset(): { xs: tf.Tensor3D; ys: tf.Tensor2D } {
  const x = new Float32Array(N * T * 3);
  for (let i = 0; i < N; i++) {
    for (let t = 0; t < T; t++) {
      x[(i * T + t) * 3] = i;
      x[(i * T + t) * 3 + 1] = t;
      x[(i * T + t) * 3 + 2] = 0.5;
    }
  }
  return { xs: tf.tensor3d(x, [N, T, 3]), ys: tf.tensor2d(Float32Array.from({ length: N }, (_, i) => 2 * i + 1), [N, 1]) };
}

/** input [T, 3] → dense `proj` [B,T,5] → flatten → dense `hid` [B,6] → dense `out` [1]. */
async function model(): Promise<tf.LayersModel> {
  await initBackend();
  const init = (s: number) => tf.initializers.glorotUniform({ seed: s });
  const x = tf.input({ shape: [T, 3], name: 'x' });
  const proj = tf.layers.dense({ units: 5, name: 'proj', kernelInitializer: init(1) }).apply(x) as tf.SymbolicTensor;
  const flat = tf.layers.flatten({ name: 'flat' }).apply(proj) as tf.SymbolicTensor;
  const hid = tf.layers.dense({ units: 6, name: 'hid', activation: 'tanh', kernelInitializer: init(2) }).apply(flat) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, name: 'out', kernelInitializer: init(3) }).apply(hid) as tf.SymbolicTensor;
  const m = tf.model({ inputs: x, outputs: out });
  // Learning rate 0: the weights stay put, so a row can be recomputed from its input.
  m.compile({ optimizer: tf.train.sgd(0), loss: 'meanSquaredError' });
  return m;
}

/** What fit really fed: per global step, the dataset index of each batch row (recorded at `proj`). */
function recordBatches(m: tf.LayersModel): { truth: Map<number, { epoch: number; batch: number; idx: number[] }>; callback: tf.Callback; undo: () => void } {
  const truth = new Map<number, { epoch: number; batch: number; idx: number[] }>();
  let step = -1;
  let epoch = 0;
  let batch = 0;
  const callback = new (class extends tf.Callback {
    override async onEpochBegin(e: number) {
      epoch = e;
    }
    override async onBatchBegin(b: number) {
      step++;
      batch = b;
    }
  })();
  const undo = hookLayerCall(m.getLayer('proj'), (output, kwargs, inputs) => {
    if (kwargs?.training !== true) return output;
    const x = (Array.isArray(inputs) ? inputs[0]! : inputs) as tf.Tensor3D;
    const v = x.dataSync();
    const idx = Array.from({ length: x.shape[0] }, (_, r) => v[r * T * 3]!);
    truth.set(step, { epoch, batch, idx });
    return output;
  });
  return { truth, callback, undo };
}

test('fit with shuffle: every kept row of a [B,D] and a [B,T,D] layer traces to its step, epoch, batch, row, position, input and target', async () => {
  const m = await model();
  const dir = await tempDir();
  const { xs, ys } = dataset();
  const rec = recordBatches(m);
  const cb = new MechIntCallback({ sampleLayers: ['hid', 'proj'], saveHiddenEveryNSteps: 6, maxActivationsPerShard: 20, storagePath: dir, verbose: false, captureInputs: true, captureTargets: true });
  // 96 rows / 16 = 6 steps per epoch, 2 epochs: saves at steps 0 and 6, the rest at train end;
  // 96 and 80 samples go through reservoirs of 20, so slots are replaced.
  await m.fit(xs, ys, { epochs: 2, batchSize: BATCH, shuffle: true, verbose: 0, callbacks: [rec.callback, cb] });
  rec.undo();
  assert.equal(rec.truth.size, 12);
  // The shuffle did shuffle.
  assert.notDeepEqual(rec.truth.get(0)!.idx, Array.from({ length: BATCH }, (_, i) => i));

  const reader = await ShardReader.open(dir);
  assert.deepEqual(reader.layers().map((l) => l.name).sort(), ['hid', 'proj'], 'provenance tensors are not layers');
  assert.ok(reader.hasProvenance('hid') && reader.hasProvenance('proj'));
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.deepEqual(Object.keys(manifest.shards[0].rows).sort(), ['hid', 'proj']);

  const hidModel = tf.model({ inputs: m.inputs, outputs: m.getLayer('hid').output as tf.SymbolicTensor });
  const projModel = tf.model({ inputs: m.inputs, outputs: m.getLayer('proj').output as tf.SymbolicTensor });
  const allX = xs.arraySync() as number[][][];
  const expectHid = hidModel.predict(xs) as tf.Tensor;
  const expectProj = projModel.predict(xs) as tf.Tensor;
  const hidRows = expectHid.arraySync() as number[][];
  const projRows = expectProj.arraySync() as number[][][];

  const seenSteps = new Set<number>();
  for (const layer of ['hid', 'proj'] as const) {
    const prov = await reader.provenance(layer);
    assert.equal(prov.length, 3, `${layer}: three shards`);
    let checked = 0;
    for await (const block of reader.rows(layer, { provenance: true })()) {
      assert.ok(block.provenance, 'each block carries its provenance');
      const p = prov.find((x) => x.shard === block.shard)!;
      assert.equal(p.rowsPerSample, layer === 'proj' ? T : 1);
      assert.deepEqual(p.inputs.x!.shape.slice(1), [T, 3]);
      for (let i = 0; i < block.nRows; i++) {
        const shardRow = block.rowOffset! + i;
        const [origin] = await reader.rowOrigins(layer, [{ shard: block.shard!, row: shardRow }]);
        const o = origin!;
        const r = provenanceRow(block.provenance, i);
        assert.deepEqual([o.step, o.epoch, o.batch, o.row, o.position], [r.step, r.epoch, r.batch, r.row, r.position]);
        const idx = o.inputs!.x!.values[0]!;
        // The input is the dataset row itself, all positions.
        assert.deepEqual(o.inputs!.x!.values, allX[idx]!.flat());
        // Targets came through the loss function.
        assert.deepEqual(o.targets!.out!.values, [2 * idx + 1]);
        // Step, epoch, batch and row name the batch row fit really fed.
        const fed = rec.truth.get(o.step!)!;
        assert.ok(fed, `step ${o.step} was trained`);
        assert.equal(o.epoch, fed.epoch);
        assert.equal(o.batch, fed.batch);
        assert.equal(fed.idx[o.row!], idx, `${layer} step ${o.step} row ${o.row}`);
        // The stored activation is that input's activation, at that position.
        const got = Array.from(block.rows.subarray(i * block.dim, (i + 1) * block.dim));
        const want = layer === 'hid' ? hidRows[idx]! : projRows[idx]![o.position!]!;
        assert.equal(o.position, layer === 'hid' ? 0 : shardRow % T);
        got.forEach((g, d) => assert.ok(Math.abs(g - want[d]!) < 1e-4, `${layer} row ${shardRow} dim ${d}: ${g} vs ${want[d]}`));
        seenSteps.add(o.step!);
        checked++;
      }
    }
    assert.equal(checked, layer === 'hid' ? 16 + 20 + 20 : (16 + 20 + 20) * T);
  }
  // Rows were kept from late steps too (the reservoir replaced early ones).
  assert.ok([...seenSteps].some((s) => s >= 9), `steps seen: ${[...seenSteps].sort((a, b) => a - b)}`);
  for (const t of [xs, ys, expectHid, expectProj]) t.dispose();
});

test('the safetensors layout: @provenance.<layer> int32 [rows, 5], @inputs/@targets per sample, and the mechint_aux map', async () => {
  const m = await model();
  const dir = await tempDir();
  const { xs, ys } = dataset();
  const cb = new MechIntCallback({ sampleLayers: ['proj'], saveHiddenEveryNSteps: 100, maxActivationsPerShard: 8, storagePath: dir, verbose: false, capture_inputs: true, capture_targets: true });
  await m.fit(xs, ys, { epochs: 1, batchSize: BATCH, shuffle: true, verbose: 0, callbacks: [cb] });
  const reader = await ShardReader.open(dir);
  const last = reader.shards.at(-1)!;
  const h = await readSafetensorsHeader(last.path);
  assert.deepEqual(h.tensors['@provenance.proj']!.shape, [8 * T, 5]);
  assert.equal(h.tensors['@provenance.proj']!.dtype, 'I32');
  assert.deepEqual(h.tensors['@inputs.proj.x']!.shape, [8, T, 3]);
  assert.deepEqual(h.tensors['@targets.proj.out']!.shape, [8, 1]);
  assert.deepEqual(JSON.parse(h.metadata.mechint_aux!)['@inputs.proj.x'], ['inputs', 'proj', 'x']);
  assert.deepEqual([...PROVENANCE_COLUMNS], ['step', 'epoch', 'batch', 'row', 'position']);
  // Off by default: no inputs or targets, provenance only.
  const dir2 = await tempDir();
  await m.fit(xs, ys, { epochs: 1, batchSize: BATCH, verbose: 0, callbacks: [new MechIntCallback({ sampleLayers: ['hid'], saveHiddenEveryNSteps: 100, storagePath: dir2, verbose: false })] });
  const h2 = await readSafetensorsHeader((await ShardReader.open(dir2)).shards[0]!.path);
  assert.deepEqual(Object.keys(h2.tensors).sort(), ['@provenance.hid', 'hid']);
  xs.dispose();
  ys.dispose();
});

const hasTorch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;

test("shardFormat 'pt': provenance, inputs and targets round-trip through mechint's reader, and torch.load(weights_only=True) reads them", async () => {
  const m = await model();
  const dir = await tempDir();
  const { xs, ys } = dataset();
  const cb = new MechIntCallback({ sampleLayers: ['hid', 'proj'], saveHiddenEveryNSteps: 100, maxActivationsPerShard: 10, storagePath: dir, verbose: false, shardFormat: 'pt', captureInputs: true, captureTargets: true });
  await m.fit(xs, ys, { epochs: 1, batchSize: BATCH, shuffle: true, verbose: 0, callbacks: [cb] });
  const reader = await ShardReader.open(dir);
  assert.equal(reader.shards[0]!.format, 'pt');
  assert.deepEqual(reader.layers().map((l) => l.name).sort(), ['hid', 'proj']);
  const [p] = await reader.provenance('proj');
  assert.ok(p!.table);
  assert.equal(p!.nRows, 10 * T);
  for (let r = 0; r < p!.nRows; r++) {
    const o = (await reader.rowOrigins('proj', [{ shard: p!.shard, row: r }]))[0]!;
    assert.equal(o.position, r % T);
    assert.ok(o.step! >= 0 && o.step! < 6 && o.epoch === 0 && o.batch === o.step);
    assert.deepEqual(o.targets!.out!.values, [2 * o.inputs!.x!.values[0]! + 1]);
  }
  if (hasTorch) {
    const script = 'import sys, json, torch; d = torch.load(sys.argv[1], weights_only=True); print(json.dumps([sorted(d["activations"].keys()), d["@provenance"]["proj"].tolist(), d["@inputs"]["proj.x"].shape[0], d["@targets"]["hid.out"][:, 0].tolist(), d["@inputs"]["hid.x"][:, 0, 0].tolist(), str(d["@provenance"]["hid"].dtype)]))';
    const py = spawnSync('/usr/bin/python3', ['-c', script, reader.shards[0]!.path], { encoding: 'utf8' });
    assert.equal(py.status, 0, py.stderr);
    const [layers, table, nInputs, hidTargets, hidIdx, dtype] = JSON.parse(py.stdout) as [string[], number[][], number, number[], number[], string];
    assert.deepEqual(layers, ['hid', 'proj'], 'activations holds only layers');
    assert.deepEqual(table.flat(), Array.from(p!.table!));
    assert.equal(nInputs, 10);
    assert.deepEqual(hidTargets, hidIdx.map((i) => 2 * i + 1));
    assert.equal(dtype, 'torch.int32');
  }
  xs.dispose();
  ys.dispose();
});

test('fitDataset with withSampleIds on a Sequential model: ids, inputs and targets of the kept rows', async () => {
  await initBackend();
  const seq = tf.sequential({ layers: [tf.layers.dense({ inputShape: [2], units: 4, name: 'd1' }), tf.layers.dense({ units: 1, name: 'd2' })] });
  seq.compile({ optimizer: tf.train.sgd(0), loss: 'meanSquaredError' });
  const rows = Array.from({ length: 60 }, (_, i) => i);
  const ds = tf.data
    .array(rows.map((i) => ({ xs: [i, 1], ys: [3 * i], ids: 1000 + i })))
    .shuffle(60, 'seed')
    .batch(8)
    .map((b) => b as tf.TensorContainerObject);
  const dir = await tempDir();
  const cb = new MechIntCallback({ sampleLayers: ['d1'], saveHiddenEveryNSteps: 1000, maxActivationsPerShard: 12, storagePath: dir, verbose: false, captureInputs: true, captureTargets: true });
  await seq.fitDataset(withSampleIds(ds), { epochs: 2, verbose: 0, callbacks: [cb] });
  const reader = await ShardReader.open(dir);
  const [p] = await reader.provenance('d1');
  assert.ok(p!.ids, 'ids stored');
  const names = Object.keys(p!.inputs);
  assert.equal(names.length, 1);
  for (let s = 0; s < p!.nRows; s++) {
    const o = (await reader.rowOrigins('d1', [{ shard: p!.shard, row: s }]))[0]!;
    const i = o.inputs![names[0]!]!.values[0]!;
    assert.equal(o.id, 1000 + i);
    assert.deepEqual(Object.values(o.targets!)[0]!.values, [3 * i]);
    assert.ok(o.epoch === 0 || o.epoch === 1);
    assert.ok(o.batch! >= 0 && o.batch! < 8 && o.step === o.epoch! * 8 + o.batch!);
  }
});

test('a multi-input model: each input is stored under its name', async () => {
  await initBackend();
  const a = tf.input({ shape: [2], name: 'a' });
  const b = tf.input({ shape: [3], name: 'b' });
  const ha = tf.layers.dense({ units: 4, name: 'ha' }).apply(a) as tf.SymbolicTensor;
  const cat = tf.layers.concatenate({ name: 'cat' }).apply([ha, b]) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, name: 'o' }).apply(cat) as tf.SymbolicTensor;
  const m = tf.model({ inputs: [a, b], outputs: out });
  m.compile({ optimizer: tf.train.sgd(0), loss: 'meanSquaredError' });
  const n = 40;
  const xa = tf.tensor2d(Array.from({ length: n }, (_, i) => [i, 0]));
  const xb = tf.tensor2d(Array.from({ length: n }, (_, i) => [10 * i, 1, 2]));
  const y = tf.tensor2d(Array.from({ length: n }, (_, i) => [i]));
  const dir = await tempDir();
  // `ha` runs before `b` reaches its consumer `cat`: b fills the kept slots afterwards.
  await m.fit([xa, xb], y, { epochs: 1, batchSize: 8, shuffle: true, verbose: 0, callbacks: [new MechIntCallback({ sampleLayers: ['ha', 'cat'], saveHiddenEveryNSteps: 1000, maxActivationsPerShard: 6, storagePath: dir, verbose: false, captureInputs: true })] });
  const reader = await ShardReader.open(dir);
  for (const layer of ['ha', 'cat']) {
    const [p] = await reader.provenance(layer);
    assert.deepEqual(Object.keys(p!.inputs).sort(), ['a', 'b'], layer);
    for (let s = 0; s < 6; s++) {
      const o = (await reader.rowOrigins(layer, [{ shard: p!.shard, row: s }]))[0]!;
      assert.equal(o.inputs!.b!.values[0], 10 * o.inputs!.a!.values[0]!);
    }
  }
  for (const t of [xa, xb, y]) t.dispose();
});

test('a manual loop hands step, inputs, targets and ids to MechIntHooks', async () => {
  await initBackend();
  const x = tf.input({ shape: [2], name: 'in' });
  const d = tf.layers.dense({ units: 3, name: 'd' }).apply(x) as tf.SymbolicTensor;
  const m = tf.model({ inputs: x, outputs: d });
  const dir = await tempDir();
  const hooks = new MechIntHooks({ sampleLayers: ['d'], saveHiddenEveryNSteps: 1000, maxActivationsPerShard: 5, storagePath: dir, verbose: false, captureInputs: true, captureTargets: true });
  await hooks.onTrainBegin(m);
  for (let step = 0; step < 4; step++) {
    const ids = [step * 10, step * 10 + 1, step * 10 + 2];
    const xb = tf.tensor2d(ids.map((i) => [i, -i]));
    const yb = tf.tensor2d(ids.map((i) => [i + 0.25]));
    hooks.beginStep({ globalStep: 100 + step, epoch: 7, batchIdx: step, targets: yb, ids });
    tf.tidy(() => m.apply(xb) as tf.Tensor);
    await hooks.onTrainingStep({ globalStep: 100 + step, epoch: 7, batchIdx: step });
    xb.dispose();
    yb.dispose();
  }
  await hooks.onTrainEnd();
  const reader = await ShardReader.open(dir);
  const [p] = await reader.provenance('d');
  assert.equal(p!.nRows, 5);
  for (let r = 0; r < 5; r++) {
    const o = (await reader.rowOrigins('d', [{ shard: p!.shard, row: r }]))[0]!;
    const i = o.inputs!.in!.values[0]!;
    assert.equal(o.id, i);
    assert.equal(o.step, 100 + Math.floor(i / 10));
    assert.equal(o.epoch, 7);
    assert.equal(o.row, i % 10);
    assert.deepEqual(o.targets!.d!.values, [i + 0.25], 'targets are named by the model\'s output names');
  }
});

test('an old shard without provenance reads as before: no table, no inputs, rows unchanged', async () => {
  const dir = await tempDir();
  const writer = new ShardWriter({ dir });
  const data = Float32Array.from({ length: 12 }, (_, i) => i);
  await writer.write({ layers: { l: { shape: [3, 4], data } }, globalStep: 5 });
  await writer.finish();
  await writer.close();
  const reader = await ShardReader.open(dir);
  assert.equal(reader.hasProvenance('l'), false);
  const [p] = await reader.provenance('l');
  assert.equal(p!.table, null);
  assert.deepEqual(p!.inputs, {});
  assert.equal(p!.ids, null);
  const blocks = [];
  for await (const b of reader.rows('l', { provenance: true })()) blocks.push(b);
  assert.equal(blocks.length, 1);
  assert.equal(blocks[0]!.provenance, undefined);
  assert.deepEqual(Array.from(blocks[0]!.rows), Array.from(data));
  assert.deepEqual(await reader.rowOrigins('l', [{ shard: blocks[0]!.shard!, row: 2 }]), [{ shard: blocks[0]!.shard!, shardRow: 2, sample: 2 }]);
  // And a layer path starting with `@` cannot be captured (the names are reserved).
  const hooks = new MechIntHooks({ sampleLayers: ['@provenance.x'], storagePath: await tempDir(), verbose: false });
  await assert.rejects(hooks.onTrainBegin(tf.sequential({ layers: [tf.layers.dense({ inputShape: [1], units: 1 })] })), /reserved/);
});
