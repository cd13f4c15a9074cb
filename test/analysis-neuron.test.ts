import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runNeuronAnalysis } from '../src/analysis/neuron.js';
import { rowsFromMatrix, type RowSource } from '../src/storage/rows.js';
import { createRng } from '../src/random.js';
import { ConfigError, FormatError, InsufficientDataError } from '../src/errors.js';

/** Blocks of uneven sizes (1 row, 7 rows, …) so the 4-row unrolled loop and its tail both run. */
function unevenBlocks(rows: Float32Array, dim: number, sizes: number[]): RowSource {
  const n = rows.length / dim;
  return async function* () {
    let start = 0;
    let i = 0;
    while (start < n) {
      const end = Math.min(n, start + sizes[i++ % sizes.length]);
      yield { rows: rows.subarray(start * dim, end * dim), nRows: end - start, dim };
      start = end;
    }
  };
}

function direct(rows: Float32Array, n: number, dim: number) {
  const mean: number[] = [];
  const std: number[] = [];
  const max: number[] = [];
  const min: number[] = [];
  const freq: number[] = [];
  for (let j = 0; j < dim; j++) {
    let s = 0;
    let hi = -Infinity;
    let lo = Infinity;
    let act = 0;
    for (let r = 0; r < n; r++) {
      const x = rows[r * dim + j];
      s += x;
      hi = Math.max(hi, x);
      lo = Math.min(lo, x);
      if (x > 0) act++;
    }
    const m = s / n;
    let ss = 0;
    for (let r = 0; r < n; r++) ss += (rows[r * dim + j] - m) ** 2;
    mean.push(m);
    std.push(Math.sqrt(ss / (n - 1)));
    max.push(hi);
    min.push(lo);
    freq.push(act / n);
  }
  return { mean, std, max, min, freq };
}

function assertClose(actual: number[], expected: number[], rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const tol = rel * Math.max(1, Math.abs(expected[i]));
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

/** 1003 rows × 37 units: unit 0 never fires, unit 1 fires in 5 rows (dead at 1%), unit 2 in 20 rows. */
function planted() {
  const n = 1003;
  const dim = 37;
  const rng = createRng(7);
  const rows = new Float32Array(n * dim);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < dim; j++) rows[r * dim + j] = rng.normal() * (1 + j / 10) + (j % 5) - 1;
    rows[r * dim] = -Math.abs(rng.normal());
    rows[r * dim + 1] = r % 200 === 3 ? 2 : -1;
    rows[r * dim + 2] = r % 50 === 0 ? 0.5 : 0;
  }
  return { n, dim, rows };
}

test('neuron statistics equal a direct computation, however the rows are split into blocks', async () => {
  const { n, dim, rows } = planted();
  const want = direct(rows, n, dim);
  for (const sizes of [[n], [1, 7, 250], [4], [3]]) {
    const res = await runNeuronAnalysis(unevenBlocks(rows, dim, sizes));
    assert.equal(res.n_rows, n);
    assert.equal(res.n_units, dim);
    assertClose(res.mean_activation, want.mean, 1e-10, 'mean_activation');
    assertClose(res.std_activation, want.std, 1e-10, 'std_activation');
    assert.deepEqual(res.max_activation, want.max);
    assert.deepEqual(res.min_activation, want.min);
    assertClose(res.sparsity, want.freq, 1e-12, 'sparsity');
  }
});

test('dead units are those active in fewer than 1% of rows (the guide: sparsity < 0.01)', async () => {
  const { dim, rows } = planted();
  const res = await runNeuronAnalysis(rowsFromMatrix(rows, dim, 100));
  assert.deepEqual(res.dead_units, [0, 1]);
  assert.equal(res.n_dead_units, 2);
  assert.equal(res.sparsity[1], 5 / 1003);
  assert.equal(res.sparsity[2], 21 / 1003);
  const strict = await runNeuronAnalysis(rowsFromMatrix(rows, dim), { dead_threshold: 0.05 });
  assert.deepEqual(strict.dead_units, [0, 1, 2]);
  const camel = await runNeuronAnalysis(rowsFromMatrix(rows, dim), { deadThreshold: 0.05 });
  assert.deepEqual(camel.dead_units, [0, 1, 2]);
});

test('keeps its precision when the mean is large against the spread', async () => {
  const n = 5000;
  const dim = 3;
  const rng = createRng(1);
  const rows = new Float32Array(n * dim);
  for (let i = 0; i < rows.length; i++) rows[i] = 10000 + 0.05 * rng.normal();
  const want = direct(rows, n, dim);
  const res = await runNeuronAnalysis(rowsFromMatrix(rows, dim, 333));
  assertClose(res.std_activation, want.std, 1e-9, 'std_activation');
  assertClose(res.mean_activation, want.mean, 1e-12, 'mean_activation');
});

test('the result is plain JSON with the guide\'s keys', async () => {
  const { dim, rows } = planted();
  const res = await runNeuronAnalysis(rowsFromMatrix(rows, dim));
  assert.deepEqual(JSON.parse(JSON.stringify(res)), res);
  for (const key of ['mean_activation', 'max_activation', 'sparsity', 'std_activation', 'dead_units', 'n_dead_units']) {
    assert.ok(key in res, key);
  }
  assert.ok(Array.isArray(res.mean_activation));
});

test('rejects bad options, naming the option and the value', async () => {
  const src = rowsFromMatrix(new Float32Array(8), 2);
  await assert.rejects(runNeuronAnalysis(src, { dead_threshold: 2 }), (e: unknown) => e instanceof ConfigError && /dead_threshold/.test(e.message) && /`2`/.test(e.message));
  await assert.rejects(runNeuronAnalysis(src, { dead_treshold: 0.1 }), (e: unknown) => e instanceof ConfigError && /dead_treshold/.test(e.message));
  await assert.rejects(runNeuronAnalysis(src, { activation_threshold: 'x' }), ConfigError);
});

test('a layer without rows, or with blocks of different widths, is reported as such', async () => {
  await assert.rejects(runNeuronAnalysis(rowsFromMatrix(new Float32Array(0), 4)), InsufficientDataError);
  const mixed: RowSource = async function* () {
    yield { rows: new Float32Array(4), nRows: 1, dim: 4 };
    yield { rows: new Float32Array(3), nRows: 1, dim: 3, shard: 'b.safetensors' };
  };
  await assert.rejects(runNeuronAnalysis(mixed), (e: unknown) => e instanceof FormatError && /b\.safetensors/.test(e.message));
});
