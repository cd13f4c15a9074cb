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
