import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { tempDir } from './helpers.js';

test('analysing shards several times the block budget keeps heap growth bounded by the block, not the data', async () => {
  const dir = await tempDir();
  // 96 MB of shards, read in blocks of 512 rows × 256 × 4 B = 0.5 MB.
  const child = (...args: string[]) => spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', 'test/fixtures/memory-child.ts', ...args], { encoding: 'utf8' });
  const written = child('write', dir, '96');
  assert.equal(written.status, 0, written.stderr);
  const run = child('analyze', dir, '96', '512');
  assert.equal(run.status, 0, run.stderr);
  const { data_bytes, n_rows, peak_growth_bytes } = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
  assert.ok(data_bytes > 90e6);
  assert.equal(n_rows, data_bytes / 1024);
  // The stated bound: 24 MB (a quarter of the data) covers blocks, the 256² covariance, the
  // clustering sample (2,000 rows) and the runtime's own churn. Loading the data would need 96 MB.
  assert.ok(peak_growth_bytes < 24e6, `peak growth ${(peak_growth_bytes / 1e6).toFixed(1)} MB`);
});
