import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tf } from '../src/backend.js';
import { MechIntCallback } from '../src/capture/callback.js';
import { MechIntHooks } from '../src/capture/hooks.js';
import { getLayerByPath } from '../src/model/layer-paths.js';
import { readSafetensorsHeader } from '../src/formats/safetensors.js';
import { seededMatrix, sequenceModel, smallNestedModel, tempDir } from './helpers.js';

async function fitOnce(model: tf.LayersModel, callbacks: tf.CustomCallbackArgs | tf.Callback[] | tf.Callback, epochs: number, initialEpoch = 0) {
  const xs = tf.tensor2d(seededMatrix(64, 4, 5), [64, 4]);
  const ys = tf.tensor2d(seededMatrix(64, 2, 6), [64, 2]);
  model.compile({ optimizer: tf.train.sgd(0.05), loss: 'meanSquaredError' });
  const h = await model.fit(xs, ys, { epochs, initialEpoch, batchSize: 16, callbacks: callbacks as tf.Callback[], verbose: 0, validationSplit: 0.25 });
  xs.dispose();
  ys.dispose();
  return h;
}

test('MechIntCallback in model.fit saves every N global steps, completes the manifest and removes its hooks', async () => {
  const model = await smallNestedModel();
  const dir = await tempDir();
  const cb = new MechIntCallback({ sample_layers: ['backbone.blocks.1', 'head'], save_hidden_every_n_steps: 4, storage_path: dir, verbose: false });
  await fitOnce(model, [cb], 3); // 48 training rows / 16 = 3 steps per epoch, 9 steps: saves at 0, 4, 8
  const files = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
  assert.deepEqual(files, [
    'activations_shard_000000_step_0.safetensors',
    'activations_shard_000001_step_4.safetensors',
    'activations_shard_000002_step_8.safetensors',
  ]);
  const h = await readSafetensorsHeader(join(dir, files[1]!));
  // Steps 1..4: four training batches of 16 rows (validation batches are not captured).
  assert.deepEqual(h.tensors['backbone.blocks.1']!.shape, [64, 8]);
  assert.equal(h.metadata.epoch, '1');
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(manifest.status, 'complete');
  assert.equal(manifest.total_shards, 3);
  assert.deepEqual(manifest.config.sample_layers, ['backbone.blocks.1', 'head']);
  assert.deepEqual(manifest.layers.head, { sample_shape: [2], dtype: 'F32' });
  assert.ok(!Object.hasOwn(getLayerByPath(model, 'head'), 'call'), 'hooks removed at train end');
});

test('combines with tf.callbacks.earlyStopping (the guide\'s Multiple Callbacks) and resumes numbering', async () => {
  const model = await smallNestedModel(2);
  const dir = await tempDir();
  const config = { sampleLayers: ['head'], saveHiddenEveryNSteps: 2, storagePath: dir, verbose: false };
  const stop = tf.callbacks.earlyStopping({ monitor: 'val_loss', patience: 0, minDelta: 1e9 });
  const h = await fitOnce(model, [new MechIntCallback(config), stop], 20);
  assert.ok(h.epoch.length < 20, 'early stopping stopped the run');
  const first = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).length;
  assert.ok(first >= 1);
  // Resume from epoch 2: the global step continues from 2 × 3 = 6 and numbering from `first`.
  await fitOnce(model, [new MechIntCallback(config)], 3, 2);
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.deepEqual(manifest.shards.map((s: { shard_id: number }) => s.shard_id), [...Array(first + 2).keys()]);
  assert.deepEqual(manifest.shards.slice(first).map((s: { global_step: number }) => s.global_step), [6, 8]);
  assert.equal(manifest.runs.length, 2);
});

test('MechIntHooks in a manual loop, as the guide\'s Manual Integration', async () => {
  const model = await sequenceModel();
  const dir = await tempDir();
  const hooks = new MechIntHooks({ sampleLayers: ['proj'], saveHiddenEveryNSteps: 3, storagePath: dir, verbose: false, max_activations_per_shard: 8 });
  assert.deepEqual(hooks.registerHooks(model), ['proj']);
  const opt = tf.train.adam(0.01);
  const x = tf.randomNormal([4, 5, 3], 0, 1, 'float32', 1);
  const y = tf.zeros([4, 1]);
  for (let step = 0; step < 8; step++) {
    opt.minimize(() => tf.losses.meanSquaredError(y, model.apply(x) as tf.Tensor) as tf.Scalar);
    await hooks.onTrainingStep({ globalStep: step, batchIdx: step, epoch: 0 });
  }
  await hooks.onTrainEnd();
  assert.equal(hooks.savedShards.length, 4); // steps 0, 3, 6, and step 7 at train end
  for (const s of hooks.savedShards.slice(0, 3)) assert.ok((await readSafetensorsHeader(s)).tensors.proj!.shape[0]! <= 8);
  const h = await readSafetensorsHeader(hooks.savedShards[1]!);
  assert.deepEqual(h.tensors.proj!.shape, [8, 5, 6]);
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(manifest.status, 'complete');
});

test('verbose logs carry the [MechInt] prefix; verbose: false prints nothing', async () => {
  const lines: string[] = [];
  const orig = { log: console.log, warn: console.warn, info: console.info };
  console.log = console.warn = console.info = (...args: unknown[]) => void lines.push(args.join(' '));
  try {
    for (const verbose of [false, true]) {
      lines.length = 0;
      const model = await smallNestedModel(3);
      const dir = await tempDir();
      await fitOnce(model, [new MechIntCallback({ sampleLayers: ['head', 'nope'], saveHiddenEveryNSteps: 2, storagePath: dir, verbose })], 2);
      if (verbose) {
        assert.ok(lines.length >= 3, `expected logs, got ${lines.length}`);
        assert.ok(lines.every((l) => l.startsWith('[MechInt] ')), lines.join('\n'));
        assert.ok(lines.some((l) => l.includes('`nope`')), 'warns for the missing layer');
      } else assert.deepEqual(lines, []);
    }
  } finally {
    Object.assign(console, orig);
  }
});
