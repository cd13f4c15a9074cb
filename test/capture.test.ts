import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tf } from '../src/backend.js';
import { ActivationSampler } from '../src/capture/sampler.js';
import { autoDetectLayers, getLayerByPath, listLayerPaths } from '../src/model/layer-paths.js';
import { LayerNotFoundError } from '../src/errors.js';
import { readManifest } from '../src/storage/manifest.js';
import { parseSafetensors } from '../src/formats/safetensors.js';
import { toFloat32 } from '../src/formats/dtypes.js';
import { seededMatrix, sequenceModel, smallNestedModel, tempDir } from './helpers.js';

test('lists dotted paths through nested models, like named_modules()', async () => {
  const model = await smallNestedModel();
  assert.deepEqual(listLayerPaths(model), ['backbone', 'backbone.blocks.0', 'backbone.blocks.1', 'head']);
  assert.equal(getLayerByPath(model, 'backbone.blocks.1').name, 'blocks.1');
  assert.throws(() => getLayerByPath(model, 'backbone.blocks.7'), (e: unknown) => e instanceof LayerNotFoundError && /blocks\.7.*did you mean/.test((e as Error).message));
});

test('auto-detection falls back to the last hidden layer of each top-level block', async () => {
  const model = await smallNestedModel();
  assert.deepEqual(autoDetectLayers(model).paths, ['backbone.blocks.1']);
});

test('hooks capture a nested layer in predict, apply and a manual minimize loop with the right shapes', async () => {
  const model = await smallNestedModel();
  const sampler = new ActivationSampler({ layers: ['backbone.blocks.0', 'head'], saveDir: await tempDir(), verbose: false });
  assert.deepEqual(sampler.registerHooks(model), ['backbone.blocks.0', 'head']);
  const x = tf.tensor2d(seededMatrix(6, 4), [6, 4]);
  (model.predict(x) as tf.Tensor).dispose();
  assert.equal(sampler.activations['backbone.blocks.0']!.length, 6);
  assert.equal(sampler.activations['backbone.blocks.0']![0]!.length, 8);
  assert.equal(sampler.activations.head![0]!.length, 2);
  (model.apply(x) as tf.Tensor).dispose();
  assert.equal(sampler.activations.head!.length, 12);
  const opt = tf.train.sgd(0.01);
  const y = tf.zeros([6, 2]);
  for (let i = 0; i < 3; i++) {
    opt.minimize(() => tf.losses.meanSquaredError(y, model.apply(x) as tf.Tensor) as tf.Scalar);
  }
  assert.equal(sampler.activations.head!.length, 30);
  // The captured values are the layer's real outputs.
  const expected = (model.predict(x) as tf.Tensor).dataSync();
  const last = sampler.activations.head!.at(-1)!;
  assert.deepEqual(Array.from(last).map((v) => v.toFixed(5)), Array.from(expected.slice(10, 12)).map((v) => v.toFixed(5)));
  assert.deepEqual(sampler.getStatistics().tracked_layers, ['backbone.blocks.0', 'head']);
  sampler.clearHooks();
  x.dispose();
  y.dispose();
});

test('captures [B,T,D] outputs with their shape, and with missingLayers \'warn\' warns (not throws) for a missing layer', async () => {
  const model = await sequenceModel();
  const dir = await tempDir();
  const warnings: string[] = [];
  const origWarn = console.warn;
  console.warn = (m: string) => warnings.push(m);
  const sampler = new ActivationSampler({ layers: ['proj', 'nope'], saveDir: dir, missingLayers: 'warn', verbose: false });
  let registered: string[];
  try {
    registered = sampler.registerHooks(model);
  } finally {
    console.warn = origWarn;
  }
  assert.deepEqual(registered, ['proj']);
  assert.ok(warnings.some((w) => w.startsWith('[MechInt]') && w.includes('`nope`')), 'warned although verbose is false');
  (model.predict(tf.ones([3, 5, 3])) as tf.Tensor).dispose();
  const path = await sampler.saveActivations(7);
  const { tensors } = parseSafetensors(new Uint8Array(await readFile(path!)));
  assert.deepEqual(tensors.proj!.shape, [3, 5, 6]);
  sampler.clearHooks();
});

test('clearHooks restores the layer: same outputs, nothing captured, no own call left', async () => {
  const model = await smallNestedModel();
  const x = tf.tensor2d(seededMatrix(5, 4, 3), [5, 4]);
  const before = Array.from((model.predict(x) as tf.Tensor).dataSync());
  const sampler = new ActivationSampler({ layers: ['backbone.blocks.1'], saveDir: await tempDir(), verbose: false });
  sampler.registerHooks(model);
  const layer = getLayerByPath(model, 'backbone.blocks.1');
  assert.ok(Object.hasOwn(layer, 'call'));
  sampler.clearHooks();
  assert.ok(!Object.hasOwn(layer, 'call'));
  sampler.clearCache();
  const afterOut = Array.from((model.predict(x) as tf.Tensor).dataSync());
  assert.deepEqual(afterOut, before);
  assert.equal(sampler.getStatistics().current_cache_samples, 0);
});

test('the cache never holds more than maxSamplesPerShard rows, sampled from early and late batches', async () => {
  // An identity layer: each captured row carries its batch number.
  const x = tf.input({ shape: [4] });
  const id = tf.layers.dense({ units: 4, useBias: false, name: 'id', kernelInitializer: 'identity' }).apply(x) as tf.SymbolicTensor;
  const model = tf.model({ inputs: x, outputs: id });
  const sampler = new ActivationSampler({ layers: ['id'], saveDir: await tempDir(), maxSamplesPerShard: 50, verbose: false });
  sampler.registerHooks(model);
  const nBatches = 40;
  for (let b = 0; b < nBatches; b++) {
    const input = tf.fill([10, 4], b);
    (model.predict(input) as tf.Tensor).dispose();
    input.dispose();
    const n = sampler.getStatistics().current_cache_samples;
    assert.ok(n <= 50, `cache holds ${n} > 50`);
  }
  sampler.clearHooks();
  const batches = sampler.activations.id!.filter(Boolean).map((row) => row[0]!);
  assert.equal(batches.length, 50);
  assert.ok(batches.some((b) => b < nBatches / 4), 'no row from the first quarter of batches');
  assert.ok(batches.some((b) => b >= (3 * nBatches) / 4), 'no row from the last quarter of batches');
});

test('a shard round-trips byte-exact, with its metadata, and the manifest lists it', async () => {
  const model = await smallNestedModel();
  const dir = await tempDir();
  const sampler = new ActivationSampler({ layers: ['backbone.blocks.0', 'head'], saveDir: dir, verbose: false });
  sampler.registerHooks(model);
  (model.predict(tf.tensor2d(seededMatrix(4, 4, 9), [4, 4])) as tf.Tensor).dispose();
  const cached = sampler.activations['backbone.blocks.0']!.map((a) => Array.from(a));
  const path = await sampler.saveActivations(200, { epoch: 1, batch_idx: 5, note: 'x' });
  assert.ok(path!.endsWith('activations_shard_000000_step_200.safetensors'));
  const { header, tensors } = parseSafetensors(new Uint8Array(await readFile(path!)));
  assert.deepEqual(Array.from(toFloat32(tensors['backbone.blocks.0']!)), cached.flat());
  assert.equal(header.metadata.global_step, '200');
  assert.equal(header.metadata.shard_id, '0');
  assert.equal(header.metadata.epoch, '1');
  assert.equal(header.metadata.batch_idx, '5');
  assert.equal(header.metadata.rank, '0');
  assert.equal(header.metadata.note, 'x');
  assert.ok(!Number.isNaN(Date.parse(header.metadata.created!)));
  assert.deepEqual(JSON.parse(header.metadata.shapes!), { 'backbone.blocks.0': [4, 8], head: [4, 2] });
  assert.equal(await sampler.saveActivations(201), null, 'nothing captured since: no shard');
  const running = (await readManifest(dir))!; // manifest.json merged with its journal, as readers see it during a run
  assert.equal(running.status, 'running');
  assert.deepEqual(running.shards.map((s) => s.file), ['activations_shard_000000_step_200.safetensors']);
  await sampler.writer.finish();
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(manifest.status, 'complete');
  assert.equal(manifest.total_shards, 1);
  assert.deepEqual(manifest.shards[0].rows, { 'backbone.blocks.0': 4, head: 4 });
  assert.match(manifest.shards[0].sha256, /^[0-9a-f]{64}$/);
  assert.deepEqual(sampler.getStatistics(), { total_samples_saved: 8, current_cache_samples: 0, total_shards: 1, tracked_layers: ['backbone.blocks.0', 'head'], cache_samples_per_layer: {} });
  sampler.clearHooks();
});

test('a subclass can rewrite this.activations before saving (custom activation processing)', async () => {
  class CenteringSampler extends ActivationSampler {
    override async saveActivations(globalStep: number, metadata?: Record<string, unknown>) {
      await this.flush();
      for (const [layer, acts] of Object.entries(this.activations)) {
        this.activations[layer] = acts.map((a) => a.map(() => 7));
      }
      return super.saveActivations(globalStep, metadata);
    }
  }
  const model = await smallNestedModel();
  const sampler = new CenteringSampler({ layers: ['head'], saveDir: await tempDir(), verbose: false });
  sampler.registerHooks(model);
  (model.predict(tf.ones([3, 4])) as tf.Tensor).dispose();
  const path = await sampler.saveActivations(0);
  const { tensors } = parseSafetensors(new Uint8Array(await readFile(path!)));
  assert.deepEqual(Array.from(toFloat32(tensors.head!)), new Array(6).fill(7));
  sampler.clearHooks();
});

test('with RANK=1 nothing is captured or written', async () => {
  const model = await smallNestedModel();
  const dir = await tempDir();
  const sampler = new ActivationSampler({ layers: ['head'], saveDir: join(dir, 'r1'), rank: 1, verbose: false });
  assert.deepEqual(sampler.registerHooks(model), []);
  (model.predict(tf.ones([3, 4])) as tf.Tensor).dispose();
  assert.equal(await sampler.saveActivations(0), null);
  assert.deepEqual(await readdir(dir), []);
});

test('with perRankShards each rank writes its own shards and manifest', async () => {
  const model = await smallNestedModel();
  const dir = await tempDir();
  for (const rank of [0, 1]) {
    const sampler = new ActivationSampler({ layers: ['head'], saveDir: dir, rank, perRankShards: true, verbose: false });
    sampler.registerHooks(model);
    (model.predict(tf.ones([2, 4])) as tf.Tensor).dispose();
    await sampler.saveActivations(10);
    sampler.clearHooks();
    await sampler.writer.finish();
  }
  assert.deepEqual((await readdir(dir)).sort(), [
    'activations_shard_000000_step_10_rank_0.safetensors',
    'activations_shard_000000_step_10_rank_1.safetensors',
    'manifest_rank_0.json',
    'manifest_rank_1.json',
  ]);
});
