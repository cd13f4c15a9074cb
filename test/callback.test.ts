import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tf } from '../src/backend.js';
import { MechIntCallback } from '../src/capture/callback.js';
import { MechIntHooks } from '../src/capture/hooks.js';
import { getLayerByPath } from '../src/model/layer-paths.js';
import { readSafetensorsHeader } from '../src/formats/safetensors.js';
import { LayerNotFoundError } from '../src/errors.js';
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

test('verbose logs carry the [MechInt] prefix; verbose: false prints only warnings', async () => {
  const lines: string[] = [];
  const orig = { log: console.log, warn: console.warn, info: console.info };
  console.log = console.warn = console.info = (...args: unknown[]) => void lines.push(args.join(' '));
  try {
    for (const verbose of [false, true]) {
      lines.length = 0;
      const model = await smallNestedModel(3);
      const dir = await tempDir();
      await fitOnce(model, [new MechIntCallback({ sampleLayers: ['head', 'heads'], missingLayers: 'warn', saveHiddenEveryNSteps: 2, storagePath: dir, verbose })], 2);
      assert.ok(lines.every((l) => l.startsWith('[MechInt] ')), lines.join('\n'));
      assert.ok(lines.some((l) => l.includes('`heads`') && l.includes('did you mean head')), 'warns for the missing layer, whatever verbose says');
      if (verbose) {
        assert.ok(lines.length >= 3, `expected logs, got ${lines.length}`);
        assert.ok(lines.some((l) => l.includes(`manifest at ${join(dir, 'manifest.json')}`)), 'the final line names the manifest');
      } else assert.equal(lines.length, 1, lines.join('\n'));
    }
  } finally {
    Object.assign(console, orig);
  }
});

/** input[4] → dense `h` [8] → `bomb` (throws on its `at`-th training call) → dense `out` [2]. */
class Bomb extends tf.layers.Layer {
  static className = 'TestBomb';
  calls = 0;
  at = Infinity;
  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0]! : inputs;
    if (kwargs?.training === true && ++this.calls === this.at) throw new Error('boom in the middle of the epoch');
    return tf.relu(x);
  }
}

async function bombModel(): Promise<{ model: tf.LayersModel; bomb: Bomb }> {
  const model0 = await smallNestedModel(); // initialises the backend
  model0.dispose();
  const x = tf.input({ shape: [4] });
  const h = tf.layers.dense({ units: 8, name: 'h', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }).apply(x) as tf.SymbolicTensor;
  const bomb = new Bomb({ name: 'bomb' });
  const out = tf.layers.dense({ units: 2, name: 'out' }).apply(bomb.apply(h) as tf.SymbolicTensor) as tf.SymbolicTensor;
  const model = tf.model({ inputs: x, outputs: out });
  model.compile({ optimizer: tf.train.sgd(0.05), loss: 'meanSquaredError' });
  return { model, bomb };
}

async function waitFor(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('a fit that throws mid-epoch leaves no hooks (tfjs calls no onTrainEnd): the next fit on the same storage path is captured once', async () => {
  const { model, bomb } = await bombModel();
  const dir = await tempDir();
  const xs = tf.tensor2d(seededMatrix(64, 4, 5), [64, 4]);
  const ys = tf.tensor2d(seededMatrix(64, 2, 6), [64, 2]);
  const config = { sampleLayers: ['h'], saveHiddenEveryNSteps: 1, storagePath: dir, verbose: false };
  const first = new MechIntCallback(config);
  bomb.at = 3; // the third training batch of four
  const warn = console.warn;
  const warnings: string[] = [];
  console.warn = (...a: unknown[]) => void warnings.push(a.join(' '));
  try {
    await assert.rejects(model.fit(xs, ys, { epochs: 2, batchSize: 16, callbacks: [first], verbose: 0 }), /boom in the middle of the epoch/);
  } finally {
    console.warn = warn;
  }
  assert.ok(!Object.hasOwn(getLayerByPath(model, 'h'), 'call'), 'the hook is removed as soon as fit has thrown');
  assert.ok(warnings.some((w) => /model\.fit stopped with an error before onTrainEnd/.test(w)), warnings.join('\n'));

  // Retried at once, on the same storage path: the aborted run's writer is still closing, and is waited for.
  bomb.at = Infinity;
  const second = new MechIntCallback(config);
  await model.fit(xs, ys, { epochs: 1, batchSize: 16, callbacks: [second], verbose: 0 });
  assert.equal(first.hooks.sampler!.getStatistics().current_cache_samples, 0, 'the first callback captured nothing during the second fit');
  const after = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(after.status, 'complete');
  assert.equal(after.runs.length, 2);
  assert.equal(after.runs[0].status, 'failed');
  assert.match(after.runs[0].error.message, /model\.fit stopped with an error/);
  assert.equal(after.runs[1].status, 'complete');
  assert.deepEqual(after.shards.slice(0, 2).map((s: { global_step: number }) => s.global_step), [0, 1], 'the steps before the error are kept');
  const mine = after.shards.slice(2);
  assert.deepEqual(mine.map((s: { shard_id: number }) => s.shard_id), [2, 3, 4, 5]);
  for (const s of mine) assert.deepEqual(s.rows, { h: 16 }, 'one batch per step, captured once');
  assert.ok(!Object.hasOwn(getLayerByPath(model, 'h'), 'call'));
  tf.dispose([xs, ys]);
});

test('a sampleLayers name the model does not have fails fit at train begin with did-you-mean suggestions; no manifest is written', async () => {
  const model = await smallNestedModel(4);
  const dir = join(await tempDir(), 'cache');
  let batches = 0;
  const counter = new tf.CustomCallback({ onBatchEnd: async () => void batches++ });
  await assert.rejects(fitOnce(model, [new MechIntCallback({ sampleLayers: ['head', 'backbone.block.1'], storagePath: dir, verbose: false }), counter] as unknown as tf.Callback[], 1), (e: unknown) => {
    assert.ok(e instanceof LayerNotFoundError);
    assert.match((e as Error).message, /`backbone\.block\.1` \(did you mean [^)]*backbone\.blocks\.1\?\).*missing_layers: 'warn'/);
    return true;
  });
  assert.equal(batches, 0);
  assert.ok(!Object.hasOwn(getLayerByPath(model, 'head'), 'call'), 'nothing hooked');
  assert.deepEqual(await readdir(dir).catch(() => []), [], 'no manifest, no lock');
});

test('onTrainEnd with no shards still writes a complete manifest (total_shards 0), and the final line names it', async () => {
  const model = await smallNestedModel(5);
  const dir = await tempDir();
  const hooks = new MechIntHooks({ sampleLayers: ['head'], storagePath: dir, verbose: true });
  hooks.registerHooks(model);
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(' '));
  try {
    await hooks.onTrainEnd();
  } finally {
    console.log = log;
  }
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(manifest.status, 'complete');
  assert.equal(manifest.total_shards, 0);
  assert.deepEqual(manifest.shards, []);
  assert.ok(lines.some((l) => l.includes(`manifest at ${join(dir, 'manifest.json')}`)), lines.join('\n'));
  assert.ok(!Object.hasOwn(getLayerByPath(model, 'head'), 'call'));
});
