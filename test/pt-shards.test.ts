import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ShardReader, loadLayerMatrix } from '../src/storage/shard-reader.js';
import { tempDir } from './helpers.js';

const FIXTURES = 'test/fixtures/torch';
const expected = JSON.parse(await readFile(join(FIXTURES, 'expected.json'), 'utf8')) as {
  pt: Record<string, { tensors: Record<string, { shape: number[]; values: number[] }> }>;
  npy: Record<string, { shape: number[]; values: number[] }>;
};
const SHARDS = ['activations_shard_000000_step_0.pt', 'activations_shard_000001_step_200.pt'];

async function ptDir(): Promise<string> {
  const dir = await tempDir();
  for (const f of SHARDS) await copyFile(join(FIXTURES, f), join(dir, f));
  return dir;
}

test('a directory of the original system\'s .pt shards streams rows equal to what PyTorch wrote', async () => {
  const reader = await ShardReader.open(await ptDir());
  assert.deepEqual(reader.shards.map((s) => [s.file, s.format, s.globalStep]), [
    [SHARDS[0], 'pt', 0],
    [SHARDS[1], 'pt', 200],
  ]);
  const layer = 'mamba_backbone.blocks.1';
  const summary = reader.layer(layer);
  const want = SHARDS.flatMap((f) => expected.pt[f]!.tensors[layer]?.values ?? []);
  assert.equal(summary.dim, expected.pt[SHARDS[0]!]!.tensors[layer]!.shape.at(-1));
  const { rows } = await loadLayerMatrix(reader.rows(layer, { blockRows: 2 }));
  assert.equal(rows.length, want.length);
  rows.forEach((v, i) => assert.ok(Math.abs(v - want[i]!) < 1e-6));
});

test('mechint inspect and analyze take a directory of .pt shards and a single .npy file', async () => {
  const dir = await ptDir();
  const inspect = spawnSync(process.execPath, ['bin/mechint.js', 'inspect', dir, '--json'], { encoding: 'utf8' });
  assert.equal(inspect.status, 0, inspect.stderr);
  const report = JSON.parse(inspect.stdout);
  assert.deepEqual(report.shards.map((s: { global_step: number }) => s.global_step), [0, 200]);
  assert.deepEqual(report.layers.map((l: { name: string }) => l.name).sort(), ['blocks.0', 'encoder.layer0', 'mamba_backbone.blocks.1']);

  const out = join(dir, 'res');
  const analyze = spawnSync(process.execPath, ['bin/mechint.js', 'analyze', dir, '--out', out, '--analyses', 'neuron,feature', '--json'], { encoding: 'utf8' });
  assert.equal(analyze.status, 0, analyze.stderr);
  const results = JSON.parse(await readFile(join(out, 'mechint_results.json'), 'utf8'));
  const enc = SHARDS.flatMap((f) => expected.pt[f]!.tensors['encoder.layer0']?.values ?? []);
  const rows = enc.length / 3;
  const mean0 = Array.from({ length: rows }, (_, r) => enc[r * 3]!).reduce((a, b) => a + b) / rows;
  assert.ok(Math.abs(results.analyses.neuron['encoder.layer0'].mean_activation[0] - mean0) < 1e-6);

  const npy = spawnSync(process.execPath, ['bin/mechint.js', 'analyze', join(FIXTURES, 'c_f4.npy'), '--out', join(dir, 'npy'), '--analyses', 'neuron', '--json'], { encoding: 'utf8' });
  assert.equal(npy.status, 0, npy.stderr);
  const n = JSON.parse(await readFile(join(dir, 'npy', 'mechint_results.json'), 'utf8')).analyses.neuron.c_f4;
  const c = expected.npy['c_f4.npy']!;
  assert.equal(n.n_units, c.shape[1]);
  assert.ok(Math.abs(n.max_activation[0] - Math.max(...[0, 1, 2].map((r) => c.values[r * 4]!))) < 1e-6);
});

test('a hostile .pt in a shard directory fails with the unsafe-pickle error, naming the file', async () => {
  const dir = await tempDir();
  await copyFile(join(FIXTURES, 'hostile.pt'), join(dir, 'activations_shard_000000_step_0.pt'));
  const run = spawnSync(process.execPath, ['bin/mechint.js', 'inspect', dir], { encoding: 'utf8' });
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /activations_shard_000000_step_0\.pt.*MECHINT_ERR_UNSAFE_PICKLE/s);
});

const hasTorch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
const LOAD_PT = `
import json, sys, torch
out = {}
for path in sys.argv[1:]:
    d = torch.load(path, weights_only=True)
    out[path] = {
        'keys': sorted(d.keys()),
        'global_step': d['global_step'], 'shard_id': d['shard_id'],
        'metadata': d['metadata'],
        'activations': {k: {'dtype': str(t.dtype), 'shape': list(t.shape), 'values': t.flatten().tolist()} for k, t in d['activations'].items()},
    }
print(json.dumps(out))
`;

test("shardFormat 'pt': fit writes activations_shard_{id}_step_{N}.pt that torch.load(weights_only=True) reads, and mechint reads them back", { skip: !hasTorch && 'python3-torch is not installed' }, async () => {
  const { MechIntCallback } = await import('../src/capture/callback.js');
  const { smallNestedModel, seededMatrix } = await import('./helpers.js');
  const { tf } = await import('../src/backend.js');
  const { decodeShardMetadata } = await import('../src/storage/metadata.js');
  const model = await smallNestedModel(7);
  const dir = await tempDir();
  const xs = tf.tensor2d(seededMatrix(48, 4, 5), [48, 4]);
  const ys = tf.tensor2d(seededMatrix(48, 2, 6), [48, 2]);
  model.compile({ optimizer: tf.train.sgd(0.05), loss: 'meanSquaredError' });
  const cb = new MechIntCallback({ sample_layers: ['backbone.blocks.1', 'head'], save_hidden_every_n_steps: 2, storage_path: dir, shard_format: 'pt', verbose: false });
  await model.fit(xs, ys, { epochs: 1, batchSize: 16, callbacks: [cb], verbose: 0, shuffle: false }); // 3 steps: saves at 0, 2
  tf.dispose([xs, ys]);
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.deepEqual(manifest.shards.map((s: { file: string; format: string }) => [s.file, s.format]), [
    ['activations_shard_000000_step_0.pt', 'pt'],
    ['activations_shard_000001_step_2.pt', 'pt'],
  ]);
  const paths = manifest.shards.map((s: { file: string }) => join(dir, s.file));
  const py = spawnSync('/usr/bin/python3', ['-c', LOAD_PT, ...paths], { encoding: 'utf8' });
  assert.equal(py.status, 0, py.stderr);
  const loaded = JSON.parse(py.stdout) as Record<string, { keys: string[]; global_step: number; shard_id: number; metadata: Record<string, unknown>; activations: Record<string, { dtype: string; shape: number[]; values: number[] }> }>;
  const reader = await ShardReader.open(dir);
  assert.deepEqual(reader.shards.map((s) => [s.format, s.record?.sha256]), manifest.shards.map((s: { sha256: string }) => ['pt', s.sha256]));
  for (const [i, path] of paths.entries()) {
    const d = loaded[path]!;
    assert.deepEqual(d.keys, ['@provenance', 'activations', 'global_step', 'metadata', 'shard_id']);
    assert.equal(d.global_step, manifest.shards[i].global_step);
    assert.equal(d.shard_id, i);
    assert.equal(d.metadata.epoch, 0);
    assert.deepEqual(d.metadata['head_shape'], manifest.shards[i].shapes.head);
    for (const layer of ['backbone.blocks.1', 'head']) {
      const t = d.activations[layer]!;
      assert.equal(t.dtype, 'torch.float32');
      assert.deepEqual(t.shape, manifest.shards[i].shapes[layer]);
      const { rows } = await loadLayerMatrix(async function* () {
        for await (const b of reader.rows(layer)()) if (b.shard === manifest.shards[i].file) yield b;
      });
      assert.deepEqual(Array.from(rows), t.values.map((v) => Math.fround(v)), `${layer} of shard ${i}: mechint reads what torch.load reads`);
    }
    assert.equal(decodeShardMetadata(reader.shards[i]!.metadata).global_step, d.global_step);
  }
});

test("a .pt shard's metadata: NaN is JSON text listed in json_keys that Python's json.loads turns back into a float; mechint decodes it too", { skip: !hasTorch && 'python3-torch is not installed' }, async () => {
  const { ShardWriter } = await import('../src/storage/shard-writer.js');
  const { decodeShardMetadata } = await import('../src/storage/metadata.js');
  const dir = await tempDir();
  const w = new ShardWriter({ dir, format: 'pt' });
  const rec = await w.write({ layers: { x: { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, NaN, -0]) } }, globalStep: 9, metadata: { loss: NaN, note: 'NaN', hist: [1.5, Infinity] } });
  await w.finish();
  const py = spawnSync('/usr/bin/python3', ['-c', 'import sys, math, json, torch; d = torch.load(sys.argv[1], weights_only=True); m = d["metadata"]; v = {k: json.loads(m[k]) for k in m["json_keys"]}; print(json.dumps([sorted(m["json_keys"]), m["loss"], math.isnan(v["loss"]), m["note"], v["hist"], m["batch_idx"], m["global_step"], d["activations"]["x"].tolist()]))', join(dir, rec.file)], { encoding: 'utf8' });
  assert.equal(py.status, 0, py.stderr);
  assert.equal(py.stdout.trim(), '[["hist", "loss"], "NaN", true, "NaN", [1.5, Infinity], null, 9, [[1.0, 2.0, 3.0], [4.0, NaN, -0.0]]]');
  const reader = await ShardReader.open(dir);
  const meta = decodeShardMetadata(reader.shards[0]!.metadata);
  assert.ok(Number.isNaN(meta.loss));
  assert.equal(meta.note, 'NaN');
  assert.deepEqual(meta.hist, [1.5, Infinity]);
  assert.equal(meta.batch_idx, null);
});

test("a .pt shard of mechint's that a crash left out of the manifest is adopted by the next run; the original's .pt files are not", async () => {
  const { ShardWriter } = await import('../src/storage/shard-writer.js');
  const { readManifest, writeManifest } = await import('../src/storage/manifest.js');
  const { rm } = await import('node:fs/promises');
  const dir = await ptDir(); // the original system's shards 0 and 1 (no manifest: its run crashed before writing one)
  const first = new ShardWriter({ dir, format: 'pt' });
  const rec = await first.write({ layers: { x: { shape: [2, 2], data: Float32Array.from([1, 2, 3, 4]) } }, globalStep: 400 });
  assert.equal(rec.shard_id, 2, 'numbering continues after the original shards on disk');
  await first.write({ layers: { x: { shape: [1, 2], data: Float32Array.from([5, 6]) } }, globalStep: 600 });
  await first.close();
  // As if killed between the rename and the journal line: shard 3 is on disk but unlisted.
  const m = (await readManifest(dir))!;
  const orphan = m.shards.pop()!;
  await writeManifest(dir, m);
  await rm(join(dir, 'manifest.log'), { force: true });
  const next = new ShardWriter({ dir, format: 'pt' });
  const again = await next.write({ layers: { x: { shape: [1, 2], data: Float32Array.from([7, 8]) } }, globalStep: 800 });
  await next.finish();
  assert.equal(again.shard_id, 4);
  const final = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.deepEqual(final.shards.map((s: { file: string }) => s.file), [rec.file, orphan.file, again.file], 'the orphan is adopted, the original .pt files are left to the directory glob');
  assert.equal(final.shards[1].sha256, orphan.sha256);
});
