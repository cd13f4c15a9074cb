import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runDynamicsAnalysis } from '../src/analysis/dynamics.js';
import type { RowBatch } from '../src/storage/rows.js';
import { seededMatrix } from './helpers.js';

test('dynamics summarises each training step: frequency, dead units and spectrum change as planted', async () => {
  const dim = 12;
  // Step 0: every unit active, isotropic. Step 100: units 6..11 dead, activity in 2 directions only.
  const early = seededMatrix(400, dim, 1).map((v) => Math.abs(v) + 0.01);
  const base = seededMatrix(400, 2, 2);
  const late = new Float32Array(400 * dim);
  for (let r = 0; r < 400; r++) for (let j = 0; j < 6; j++) late[r * dim + j] = 3 + base[r * 2]! * (j % 2 ? 1 : 2) + base[r * 2 + 1]! * (j < 3 ? 1 : -1);
  const blocks: RowBatch[] = [
    { rows: early, nRows: 400, dim, globalStep: 0, shard: 'a', rowOffset: 0 },
    { rows: late, nRows: 400, dim, globalStep: 100, shard: 'b', rowOffset: 0 },
  ];
  const res = await runDynamicsAnalysis(async function* () {
    yield* blocks;
  });
  assert.deepEqual(res.steps.map((s) => s.global_step), [0, 100]);
  const [s0, s1] = res.steps as [typeof res.steps[0], typeof res.steps[0]];
  assert.equal(s0.mean_frequency, 1);
  assert.equal(s1.mean_frequency, 0.5);
  assert.equal(s0.dead_fraction, 0);
  assert.equal(s1.dead_fraction, 0.5);
  assert.ok(s1.top10_explained_variance > 0.999 && s1.participation_ratio < 2.1, `late spectrum ${s1.participation_ratio}`);
  assert.ok(s0.participation_ratio > 8, `early participation ratio ${s0.participation_ratio}`);
  assert.equal(s1.cumulative_explained_variance.length, 10);
  assert.ok(Math.abs(s1.cumulative_explained_variance[1]! - 1) < 1e-6);
  assert.deepEqual(s1.sorted_frequencies, [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
});
