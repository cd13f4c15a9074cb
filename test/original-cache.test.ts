import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ShardMissingError } from '../src/errors.js';
import { readManifest } from '../src/storage/manifest.js';
import { ShardReader, loadLayerMatrix } from '../src/storage/shard-reader.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';

// Made by scripts/make-original-cache.py with real PyTorch, laid out as the original hooks.py writes it.
const FIXTURE = 'test/fixtures/original-cache';
const expected = JSON.parse(await readFile(join(FIXTURE, 'expected.json'), 'utf8')) as {
  config: Record<string, unknown>;
  shards: Record<string, { global_step: number; layers: Record<string, { shape: number[]; values: number[] }> }>;
};
const FILES = Object.keys(expected.shards);
const LAYERS = ['mamba_backbone.blocks.3', 'popt', 'encoder.norm'];

/** A copy of the original run's working directory; returns its mechint_cache. */
async function originalCache(): Promise<string> {
  const dir = await tempDir();
  await cp(join(FIXTURE, 'mechint_cache'), join(dir, 'mechint_cache'), { recursive: true });
  return join(dir, 'mechint_cache');
}

const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/cli.ts', ...args], { encoding: 'utf8' });

test("ShardReader reads the original system's cache with its manifest.json: shard list, config, and numbers equal to NumPy's", async () => {
  const dir = await originalCache();
  const reader = await ShardReader.open(dir);
  assert.deepEqual(reader.shards.map((s) => [s.file, s.format, s.shardId, s.globalStep]), FILES.map((f, i) => [f, 'pt', i, expected.shards[f]!.global_step]));
  assert.equal(reader.manifests.length, 0);
  assert.equal(reader.originalManifests.length, 1);
  assert.deepEqual(reader.originalManifests[0]!.files, FILES);
  assert.deepEqual(reader.originalManifests[0]!.paths, FILES.map((f) => `mechint_cache/${f}`));
  assert.deepEqual(reader.config, expected.config);
  assert.deepEqual(reader.missingShards, []);
  for (const layer of LAYERS) {
    const want = FILES.flatMap((f) => expected.shards[f]!.layers[layer]!.values);
    const { rows, dim } = await loadLayerMatrix(reader.rows(layer, { blockRows: 3 }));
    assert.equal(dim, expected.shards[FILES[0]!]!.layers[layer]!.shape.at(-1));
    assert.equal(rows.length, want.length);
    rows.forEach((v, i) => assert.equal(v, want[i], `${layer}[${i}]`));
  }
});

test("inspect recognises the original manifest instead of failing on its path strings", async () => {
  const dir = await originalCache();
  const run = cli('inspect', dir, '--json');
  assert.equal(run.status, 0, run.stderr);
  const report = JSON.parse(run.stdout);
  assert.equal(report.manifest.original.file, 'manifest.json');
  assert.equal(report.manifest.original.total_shards, 3);
  assert.deepEqual(report.manifest.original.config.sample_layers, LAYERS);
  assert.equal(report.manifest.total_shards, 3);
  assert.deepEqual(report.shards.map((s: { file: string }) => s.file), FILES);
  assert.deepEqual(report.layers.map((l: { name: string; samples: number }) => [l.name, l.samples]).sort(), LAYERS.map((l) => [l, 15]).sort());
  const text = cli('inspect', dir);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /manifest of the original system \(manifest\.json\) \(3 listed\)/);
});

test('absolute shard paths of another machine resolve to the manifest\'s directory; a listed .pt that is gone is an error naming it', async () => {
  const dir = await originalCache();
  const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  m.shards = m.shards.map((p: string) => `/home/someone/run7/${p}`);
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(m, null, 2));
  assert.equal((await ShardReader.open(dir)).shards.length, 3);
  await rm(join(dir, FILES[1]!));
  await assert.rejects(ShardReader.open(dir), (e: unknown) => e instanceof ShardMissingError && e.files[0] === FILES[1] && e.message.includes(FILES[1]!) && e.message.includes('manifest.json'));
  const reader = await ShardReader.open(dir, { allowMissing: true });
  assert.deepEqual(reader.missingShards, [FILES[1]]);
});

test('mechint writing into an original cache keeps its manifest as manifest.original.json and continues the numbering after its shards', async () => {
  const dir = await originalCache();
  const originalBytes = await readFile(join(dir, 'manifest.json'));
  const writer = new ShardWriter({ dir, config: { sample_layers: ['popt'] } });
  const rec = await writer.write({ layers: { popt: { shape: [4, 6], data: seededMatrix(4, 6, 3) } }, globalStep: 600 });
  await writer.finish();
  assert.equal(rec.shard_id, 3);
  assert.equal(rec.file, 'activations_shard_000003_step_600.safetensors');
  assert.deepEqual(await readFile(join(dir, 'manifest.original.json')), originalBytes, 'the original manifest is kept byte for byte');
  const ours = (await readManifest(dir))!;
  assert.equal(ours.status, 'complete');
  assert.deepEqual(ours.shards.map((s) => s.file), [rec.file]);
  assert.equal(ours.runs[0]!.first_shard_id, 3);

  // Readers see both: the original's three .pt shards (listed in manifest.original.json) and mechint's.
  const reader = await ShardReader.open(dir);
  assert.deepEqual(reader.shards.map((s) => s.shardId), [0, 1, 2, 3]);
  assert.equal(reader.originalManifests[0]!.files.length, 3);
  assert.equal(reader.layer('popt').samples, 15 + 4);

  // A second mechint run continues after 3, and the kept original is not renamed again.
  const again = new ShardWriter({ dir });
  assert.equal((await again.write({ layers: { popt: { shape: [1, 6], data: seededMatrix(1, 6, 4) } }, globalStep: 800 })).shard_id, 4);
  await again.finish();
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('manifest')).sort(), ['manifest.json', 'manifest.original.json']);
});

test("analyze (every layer, as the original's runner) and serve answer on the original cache with NumPy's numbers", async () => {
  const dir = await originalCache();
  const meanOf = (layer: string) => {
    const { shape } = expected.shards[FILES[0]!]!.layers[layer]!;
    const d = shape.at(-1)!;
    const values = FILES.flatMap((f) => expected.shards[f]!.layers[layer]!.values);
    const n = values.length / d;
    return Array.from({ length: d }, (_, j) => { let s = 0; for (let r = 0; r < n; r++) s += values[r * d + j]!; return s / n; });
  };
  const out = join(dir, '..', 'results');
  const run = cli('analyze', dir, '--out', out, '--analyses', 'neuron', '--json');
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual([...JSON.parse(run.stdout).layers].sort(), [...LAYERS].sort(), 'every layer in the shards');
  const results = JSON.parse(await readFile(join(out, 'mechint_results.json'), 'utf8')) as { analyses: { neuron: Record<string, { mean_activation: number[] }> } };
  for (const layer of LAYERS) {
    meanOf(layer).forEach((m, j) => assert.ok(Math.abs(results.analyses.neuron[layer]!.mean_activation[j]! - m) < 1e-5, `analyze ${layer}[${j}]`));
  }

  const { buildApp } = await import('../src/server/app.js');
  const app = await buildApp({ cache: dir, apiKey: null });
  try {
    const layers = await app.inject({ url: '/interpret/layers' });
    assert.equal(layers.statusCode, 200, layers.body);
    assert.deepEqual((layers.json() as { layers: { name: string }[] }).layers.map((l) => l.name).sort(), [...LAYERS].sort());
    const r = await app.inject({ method: 'POST', url: '/interpret', payload: { analysis_type: 'neuron', layer_name: 'popt' } });
    assert.equal(r.statusCode, 200, r.body);
    meanOf('popt').forEach((m, j) => assert.ok(Math.abs((r.json() as { results: { mean_activation: number[] } }).results.mean_activation[j]! - m) < 1e-5, `serve popt[${j}]`));
  } finally {
    await app.close();
  }
});
