/** Every example under examples/ runs against small data (the S3 one against s3rver), so the guide's code cannot rot. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from './helpers.js';
import { BUCKET, startS3rver } from './s3-server.js';
import * as convertPt from '../examples/convert-pt.js';
import * as evaluation from '../examples/evaluation.js';
import * as fitCallback from '../examples/fit-callback.js';
import * as interventions from '../examples/interventions.js';
import * as manualLoop from '../examples/manual-loop.js';
import * as s3 from '../examples/s3-compatible.js';
import * as serverPlugin from '../examples/server-plugin.js';

const SHARD = /^activations_shard_\d{6}_step_\d+\.safetensors$/;

test('every example file is run by this test', async () => {
  const files = (await readdir(join(import.meta.dirname, '..', 'examples'))).filter((f) => f.endsWith('.ts') && f !== 'tiny-model.ts').sort();
  assert.deepEqual(files, ['convert-pt.ts', 'evaluation.ts', 'fit-callback.ts', 'interventions.ts', 'manual-loop.ts', 's3-compatible.ts', 'server-plugin.ts']);
});

test('fit callback: model.fit with earlyStopping and ModelCheckpoint writes shards and a complete manifest', async () => {
  const r = await fitCallback.main({ dir: await tempDir() });
  assert.ok(r.layerPaths.includes('mamba_backbone.blocks.3'));
  assert.equal(r.manifest.status, 'complete');
  assert.ok(r.shards.length >= 2);
  assert.equal(r.manifest.shards.length, r.shards.length);
  for (const s of r.manifest.shards) {
    assert.match(s.file, SHARD);
    assert.deepEqual(Object.keys(s.rows).sort(), ['mamba_backbone.blocks.3', 'popt']);
  }
  assert.ok(r.bestEpoch !== null && r.bestEpoch >= 1);
  await access(join(r.dir, 'checkpoints', 'best', 'model.json'));
});

test('manual loop: hooks in an optimizer.minimize loop save every N steps and at the end', async () => {
  const r = await manualLoop.main({ dir: await tempDir() });
  assert.deepEqual(r.registered, ['mamba_backbone.blocks.3', 'popt']);
  assert.equal(r.manifest.status, 'complete');
  // 8 batches × 3 epochs = 24 steps: saves at 0, 5, 10, 15, 20 and the rest at train end.
  assert.deepEqual(r.manifest.shards.map((s) => s.global_step), [0, 5, 10, 15, 20, 23]);
  assert.ok(Number.isFinite(r.finalLoss));
});

test('evaluation runner: every configured analysis gives a result per layer, and the export writes the files', async () => {
  const r = await evaluation.main({ dir: await tempDir(), saeEpochs: 2 });
  const names = Object.keys(r.results.analyses).sort();
  assert.deepEqual(names, ['causal', 'circuit', 'dynamics', 'feature', 'neuron', 'sae']);
  for (const name of names) {
    for (const layer of ['mamba_backbone.blocks.3', 'popt']) {
      const res = r.results.analyses[name]![layer] as { error?: string };
      assert.ok(res && res.error === undefined, `${name} on ${layer}: ${res?.error}`);
    }
  }
  assert.equal(r.summary.length, 10);
  for (const f of [r.files.json, r.files.markdown, r.files.html]) await access(f);
  assert.ok(r.files.files.some((f) => f.startsWith('sae/')), 'SAE weights are exported');
});

test('server plugin: mechintRoutes on an own Fastify app lists layers and runs analyses beside the app\'s routes', async () => {
  const r = await serverPlugin.main();
  assert.deepEqual(r.layers.map((l) => l.name).sort(), ['mamba_backbone.blocks.3', 'popt']);
  assert.equal(r.neuron.analysis_type, 'neuron');
  assert.equal(r.neuron.results.n_units, 4);
  assert.deepEqual(r.neuron.results.dead_units, [3]);
  assert.equal(r.feature.results.explained_variance.length, 3);
  assert.deepEqual(r.own, { prediction: [0.1, 0.9] });
});

test('S3-compatible endpoint: shards uploaded and confirmed, read back from s3://, a local run synced', async () => {
  const server = await startS3rver();
  const r = await s3.main({ endpoint: server.endpoint, bucket: BUCKET, dir: await tempDir() });
  assert.ok(r.manifest.shards.length >= 2);
  for (const s of r.manifest.shards) {
    assert.equal(s.upload, 'uploaded');
    assert.equal(s.remote_uri, `s3://${BUCKET}/examples/run1/${s.file}`);
  }
  const rows = Object.fromEntries(r.remoteLayers.map((l) => [l.name, l.rows]));
  assert.equal(rows.popt, 96 * 2);
  assert.equal(r.sync.done, true);
  assert.equal(r.sync.pending, 0);
  assert.ok(r.sync.uploaded >= 1);
});

test('interventions: ablation, patching and steering change the outputs, and the model is restored afterwards', async () => {
  const r = await interventions.main();
  assert.ok(r.zeroAblationRms > 0);
  assert.ok(r.meanAblationRms > 0);
  assert.ok(Math.abs(r.patchRestored - 1) < 1e-5, 'popt is the only path to the head, so patching it restores everything');
  assert.deepEqual(r.steering.alphas, [-1, 0, 1, 2]);
  assert.equal(r.steering.heads.length, 1);
  assert.equal(r.unchanged, true);
});

test('convert-pt: a directory of the original system\'s .pt shards becomes safetensors shards mechint reads', async () => {
  const from = await tempDir();
  const fixtures = join(import.meta.dirname, 'fixtures', 'torch');
  for (const f of ['activations_shard_000000_step_0.pt', 'activations_shard_000001_step_200.pt']) await copyFile(join(fixtures, f), join(from, f));
  const to = await tempDir();
  const r = await convertPt.main({ from, to });
  assert.equal(r.converted.length, 2);
  const { ShardReader } = await import('../src/storage/shard-reader.js');
  const reader = await ShardReader.open(to);
  assert.deepEqual(reader.layers().map((l) => l.name).sort(), r.layers);
  assert.deepEqual(reader.shards.map((s) => s.globalStep), [0, 200]);
});
