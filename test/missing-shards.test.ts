import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ShardMissingError } from '../src/errors.js';
import { ShardReader, loadLayerMatrix } from '../src/storage/shard-reader.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';

async function threeShards(): Promise<string> {
  const dir = await tempDir();
  const w = new ShardWriter({ dir });
  for (let s = 0; s < 3; s++) await w.write({ layers: { x: { shape: [5, 2], data: seededMatrix(5, 2, s + 1) } }, globalStep: s * 100 });
  await w.finish();
  return dir;
}
const GONE = 'activations_shard_000001_step_100.safetensors';
const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/cli.ts', ...args], { encoding: 'utf8' });

test('a shard the manifest lists that is missing fails the open with MECHINT_ERR_SHARD_MISSING naming the file', async () => {
  const dir = await threeShards();
  await rm(join(dir, GONE));
  await assert.rejects(ShardReader.open(dir), (e: unknown) => {
    assert.ok(e instanceof ShardMissingError);
    assert.equal(e.code, 'MECHINT_ERR_SHARD_MISSING');
    assert.deepEqual(e.files, [GONE]);
    assert.match(e.message, new RegExp(`${GONE}.*allowMissing: true \\(CLI: --allow-missing\\)`));
    return true;
  });
});

test('allowMissing: true reads the others and records the missing ones in reader.missingShards', async () => {
  const dir = await threeShards();
  await rm(join(dir, GONE));
  const reader = await ShardReader.open(dir, { allowMissing: true });
  assert.deepEqual(reader.missingShards, [GONE]);
  assert.deepEqual(reader.shards.map((s) => s.globalStep), [0, 200]);
  const { rows } = await loadLayerMatrix(reader.rows('x'));
  assert.deepEqual(Array.from(rows), [...seededMatrix(5, 2, 1), ...seededMatrix(5, 2, 3)]);
});

test('inspect fails naming the missing shard, and lists it with --allow-missing', async () => {
  const dir = await threeShards();
  await rm(join(dir, GONE));
  const strict = cli('inspect', dir);
  assert.equal(strict.status, 1);
  assert.match(strict.stderr, new RegExp(`mechint: .*${GONE}.*\\(MECHINT_ERR_SHARD_MISSING\\)`));
  const lenient = cli('inspect', dir, '--json', '--allow-missing');
  assert.equal(lenient.status, 0, lenient.stderr);
  const report = JSON.parse(lenient.stdout);
  assert.deepEqual(report.missing, [GONE]);
  assert.equal(report.shards.length, 2);
});

test('mechint analyze fails naming the missing shard; --allow-missing analyses the rest and says so in the results', async () => {
  const dir = await threeShards();
  await rm(join(dir, GONE));
  const out = join(dir, 'out');
  const refused = cli('analyze', dir, '--out', out, '--analyses', 'neuron');
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, new RegExp(`${GONE}.*MECHINT_ERR_SHARD_MISSING`, 's'));
  const partial = cli('analyze', dir, '--out', out, '--analyses', 'neuron', '--allow-missing', '--json');
  assert.equal(partial.status, 0, partial.stderr);
  const summary = JSON.parse(partial.stdout) as { missing_shards: string[]; results: string; report: string };
  assert.deepEqual(summary.missing_shards, [GONE]);
  const { readFile } = await import('node:fs/promises');
  const results = JSON.parse(await readFile(summary.results, 'utf8')) as { meta: { missing_shards: string[] }; analyses: { neuron: { x: { n_rows: number } } } };
  assert.deepEqual(results.meta.missing_shards, [GONE]);
  assert.equal(results.analyses.neuron.x.n_rows, 10, 'the two shards that are there');
  assert.match(await readFile(summary.report, 'utf8'), new RegExp(`Partial:.*${GONE}`));
});
