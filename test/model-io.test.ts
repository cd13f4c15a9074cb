import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readdir, readFile, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { initBackend, tf } from '../src/backend.js';
import { fileSystem, registerFileRouter } from '../src/model/file-handler.js';
import { ModelCheckpoint, readCheckpointInfo } from '../src/model/checkpoint.js';
import { CheckpointError, ConfigError, FormatError } from '../src/errors.js';

let dir: string;
before(async () => {
  await initBackend();
  dir = await mkdtemp(path.join(tmpdir(), 'mechint-io-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function tinyModel(seed = 0): tf.LayersModel {
  const m = tf.sequential({ name: `tiny_${seed}` });
  m.add(tf.layers.dense({ inputShape: [4], units: 8, activation: 'tanh', kernelInitializer: tf.initializers.glorotUniform({ seed }) }));
  m.add(tf.layers.dense({ units: 1, kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }));
  return m;
}

async function sameWeights(a: tf.LayersModel, b: tf.LayersModel): Promise<boolean> {
  const wa = a.getWeights(), wb = b.getWeights();
  if (wa.length !== wb.length) return false;
  for (let i = 0; i < wa.length; i++) {
    const x = await wa[i]!.data(), y = await wb[i]!.data();
    if (x.length !== y.length || x.some((v, k) => v !== y[k])) return false;
  }
  return true;
}

test('fileSystem() saves model.json + weights.bin and loads them back, from the directory or the model.json path', async () => {
  const model = tinyModel(1);
  const where = path.join(dir, 'roundtrip');
  const result = await model.save(fileSystem(where));
  assert.deepEqual((await readdir(where)).sort(), ['model.json', 'weights.bin']);
  const json = JSON.parse(await readFile(path.join(where, 'model.json'), 'utf8'));
  assert.deepEqual(json.weightsManifest[0].paths, ['weights.bin']);
  assert.equal((await stat(path.join(where, 'weights.bin'))).size, (4 * 8 + 8 + 8 + 1) * 4);
  assert.equal(result.modelArtifactsInfo.weightDataBytes, (4 * 8 + 8 + 8 + 1) * 4);
  const x = tf.randomNormal([5, 4], 0, 1, 'float32', 3);
  const expected = await (model.predict(x) as tf.Tensor).data();
  for (const from of [where, path.join(where, 'model.json')]) {
    const loaded = await tf.loadLayersModel(fileSystem(from));
    assert.deepEqual(await (loaded.predict(x) as tf.Tensor).data(), expected);
    assert.ok(await sameWeights(model, loaded));
  }
  // Saving again over the same directory replaces it and leaves no temporary files.
  await tinyModel(2).save(fileSystem(where));
  assert.deepEqual((await readdir(where)).sort(), ['model.json', 'weights.bin']);
  assert.ok(!(await sameWeights(model, await tf.loadLayersModel(fileSystem(where)))));
});

test('registerFileRouter() makes file:// URLs work with model.save and tf.loadLayersModel', async () => {
  registerFileRouter();
  registerFileRouter(); // idempotent: a second router would make tfjs refuse the URL
  const model = tinyModel(4);
  const where = path.join(dir, 'router');
  await model.save(`file://${where}`);
  const loaded = await tf.loadLayersModel(`file://${where}/model.json`);
  assert.ok(await sameWeights(model, loaded));
});

test('loading explains what is wrong: no model.json, bad JSON, weights outside the directory', async () => {
  await assert.rejects(tf.loadLayersModel(fileSystem(path.join(dir, 'nothing-here'))), (e: unknown) => e instanceof FormatError && /model\.json/.test(e.message));
  const bad = path.join(dir, 'bad');
  await tinyModel(5).save(fileSystem(bad));
  await writeFile(path.join(bad, 'model.json'), '{not json');
  await assert.rejects(tf.loadLayersModel(fileSystem(bad)), FormatError);
  const sneaky = path.join(dir, 'sneaky');
  await tinyModel(6).save(fileSystem(sneaky));
  const json = JSON.parse(await readFile(path.join(sneaky, 'model.json'), 'utf8'));
  json.weightsManifest[0].paths = ['../roundtrip/weights.bin'];
  await writeFile(path.join(sneaky, 'model.json'), JSON.stringify(json));
  await assert.rejects(tf.loadLayersModel(fileSystem(sneaky)), (e: unknown) => e instanceof FormatError && /inside/.test(e.message));
});

test('ModelCheckpoint keeps the best epoch by the monitored metric, every epoch when asked, and the last', async () => {
  const model = tinyModel(7);
  const ckptDir = path.join(dir, 'planted');
  const ckpt = new ModelCheckpoint({ dir: ckptDir, monitor: 'val_loss', saveEveryEpoch: true });
  ckpt.setModel(model);
  const planted = [0.9, 0.5, 0.7, 0.4, 0.6];
  const snapshots: tf.Tensor[][] = [];
  for (let epoch = 0; epoch < planted.length; epoch++) {
    // A different model state per epoch, so the saved weights tell the epochs apart.
    model.setWeights(model.getWeights().map((w) => tf.add(w, epoch + 1)));
    snapshots.push(model.getWeights().map((w) => w.clone()));
    await ckpt.onEpochEnd(epoch, { loss: 1, val_loss: planted[epoch]! });
  }
  assert.equal(ckpt.bestEpoch, 4);
  assert.equal(ckpt.bestValue, 0.4);
  const info = await readCheckpointInfo(path.join(ckptDir, 'best'));
  assert.equal(info.epoch, 4);
  assert.equal(info.value, 0.4);
  assert.equal(info.monitor, 'val_loss');
  assert.equal(info.mode, 'min');
  const best = await tf.loadLayersModel(fileSystem(path.join(ckptDir, 'best')));
  const bestWeights = best.getWeights();
  for (let i = 0; i < bestWeights.length; i++) assert.deepEqual(await bestWeights[i]!.data(), await snapshots[3]![i]!.data());
  assert.deepEqual((await readdir(ckptDir)).sort(), ['best', 'epoch_1', 'epoch_2', 'epoch_3', 'epoch_4', 'epoch_5', 'last']);
  assert.equal((await readCheckpointInfo(path.join(ckptDir, 'last'))).epoch, 5);
  assert.equal((await readCheckpointInfo(path.join(ckptDir, 'last'))).best_epoch, 4);
});

test('ModelCheckpoint works inside model.fit beside tf.callbacks.earlyStopping and another callback', async () => {
  const model = tinyModel(8);
  model.compile({ optimizer: tf.train.adam(0.05), loss: 'meanSquaredError' });
  const x = tf.randomNormal([64, 4], 0, 1, 'float32', 9);
  const y = tf.sum(x, 1, true);
  const ckptDir = path.join(dir, 'fit');
  const ckpt = new ModelCheckpoint({ dir: ckptDir });
  const seen: number[] = [];
  const history = await model.fit(x, y, {
    epochs: 40, batchSize: 16, validationSplit: 0.25, verbose: 0,
    callbacks: [ckpt, tf.callbacks.earlyStopping({ monitor: 'val_loss', patience: 1, minDelta: 0.05 }), new tf.CustomCallback({ onEpochEnd: async (e: number) => { seen.push(e); } })],
  });
  const val = history.history.val_loss as number[];
  assert.ok(val.length < 40, 'early stopping ended the run');
  assert.equal(seen.length, val.length);
  const bestIdx = val.indexOf(Math.min(...val));
  assert.equal(ckpt.bestEpoch, bestIdx + 1);
  const info = await readCheckpointInfo(path.join(ckptDir, 'best'));
  assert.equal(info.epoch, bestIdx + 1);
  assert.ok(Math.abs(info.value! - val[bestIdx]!) < 1e-6);
  assert.equal((await readCheckpointInfo(path.join(ckptDir, 'last'))).epoch, val.length);
  assert.deepEqual((await readdir(ckptDir)).sort(), ['best', 'last']); // saveBestOnly: no per-epoch copies
  tf.dispose([x, y]);
});

test('a missing monitored metric is a CheckpointError that names it and lists the available ones', async () => {
  const model = tinyModel(10);
  model.compile({ optimizer: 'sgd', loss: 'meanSquaredError' });
  const x = tf.ones([8, 4]), y = tf.ones([8, 1]);
  const ckpt = new ModelCheckpoint({ dir: path.join(dir, 'missing') });
  await assert.rejects(model.fit(x, y, { epochs: 1, verbose: 0, callbacks: [ckpt] }), (e: unknown) =>
    e instanceof CheckpointError && e.code === 'MECHINT_ERR_CHECKPOINT' && /`val_loss`/.test(e.message) && /available: loss/.test(e.message) && /validationSplit/.test(e.message));
  tf.dispose([x, y]);
});

test('ModelCheckpoint options: auto mode maximises accuracy-like metrics; bad options are refused', () => {
  assert.equal(new ModelCheckpoint({ dir, monitor: 'val_acc' }).mode, 'max');
  assert.equal(new ModelCheckpoint({ dir, monitor: 'val_r2' }).mode, 'max');
  assert.equal(new ModelCheckpoint({ dir, monitor: 'val_loss' }).mode, 'min');
  assert.throws(() => new ModelCheckpoint({ dir, mode: 'up' as 'min' }), (e: unknown) => e instanceof ConfigError && /mode/.test(e.message));
  assert.throws(() => new ModelCheckpoint({ dir: '' }), ConfigError);
  assert.throws(() => new ModelCheckpoint({ dir, minDelta: -1 }), ConfigError);
});
