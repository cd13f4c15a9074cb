import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateSyntheticNeuralData, splitTrials, selectTrials } from '../src/demo/synthetic.js';
import { createRng } from '../src/random.js';
import { ConfigError } from '../src/errors.js';

/** Least-squares fit of y (rows × 1) on [x, 1] by the normal equations; returns R². */
function leastSquaresR2(x: Float32Array, y: Float64Array, rows: number, dim: number): number {
  const p = dim + 1;
  const a = Array.from({ length: p }, () => new Float64Array(p + 1));
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < p; i++) {
      const xi = i < dim ? x[r * dim + i]! : 1;
      for (let j = 0; j < p; j++) a[i]![j]! += xi * (j < dim ? x[r * dim + j]! : 1);
      a[i]![p]! += xi * y[r]!;
    }
  }
  for (let c = 0; c < p; c++) { // Gauss–Jordan with partial pivoting
    let piv = c;
    for (let r = c + 1; r < p; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[piv]![c]!)) piv = r;
    [a[c], a[piv]] = [a[piv]!, a[c]!];
    for (let r = 0; r < p; r++) {
      if (r === c) continue;
      const f = a[r]![c]! / a[c]![c]!;
      for (let k = c; k <= p; k++) a[r]![k]! -= f * a[c]![k]!;
    }
  }
  const w = a.map((row, i) => row[p]! / row[i]!);
  let mean = 0;
  for (let r = 0; r < rows; r++) mean += y[r]!;
  mean /= rows;
  let ssRes = 0, ssTot = 0;
  for (let r = 0; r < rows; r++) {
    let pred = w[dim]!;
    for (let i = 0; i < dim; i++) pred += w[i]! * x[r * dim + i]!;
    ssRes += (y[r]! - pred) ** 2;
    ssTot += (y[r]! - mean) ** 2;
  }
  return 1 - ssRes / ssTot;
}

test('the same seed gives the same data, bit for bit, and another seed gives other data', () => {
  const a = generateSyntheticNeuralData({ nTrials: 40, seed: 7 });
  const b = generateSyntheticNeuralData({ nTrials: 40, seed: 7 });
  const c = generateSyntheticNeuralData({ nTrials: 40, seed: 8 });
  assert.deepEqual(a.spikes, b.spikes);
  assert.deepEqual(a.latents, b.latents);
  assert.deepEqual(a.behavior, b.behavior);
  assert.deepEqual(a.conditions, b.conditions);
  assert.notDeepEqual(a.spikes, c.spikes);
  assert.notDeepEqual(a.latents, c.latents);
});

test('arrays have the documented shapes, spikes are counts, every condition appears', () => {
  const d = generateSyntheticNeuralData({ nTrials: 48, nNeurons: 20, nBins: 12, nLatents: 4, nConditions: 6, behaviorDims: 2, seed: 1 });
  assert.deepEqual(d.shapes, { spikes: [48, 12, 20], rates: [48, 12, 20], latents: [48, 12, 4], behavior: [48, 12, 2], conditions: [48] });
  assert.equal(d.spikes.length, 48 * 12 * 20);
  assert.equal(d.latents.length, 48 * 12 * 4);
  assert.equal(d.behavior.length, 48 * 12 * 2);
  assert.ok(d.spikes.every((v) => v >= 0 && Number.isInteger(v)));
  assert.deepEqual(new Set(d.conditions), new Set([0, 1, 2, 3, 4, 5]));
  let total = 0;
  for (const v of d.spikes) total += v;
  const mean = total / d.spikes.length;
  assert.ok(mean > 0.5 && mean < 5, `mean count ${mean}`);
});

test('behaviour is recoverable from the true latents by least squares (R² ≥ 0.95)', () => {
  const d = generateSyntheticNeuralData({ nTrials: 200, seed: 3 });
  const rows = d.nTrials * d.nBins;
  for (let k = 0; k < d.behaviorDims; k++) {
    const y = Float64Array.from({ length: rows }, (_, r) => d.behavior[r * d.behaviorDims + k]!);
    const r2 = leastSquaresR2(d.latents, y, rows, d.nLatents);
    assert.ok(r2 >= 0.95, `behaviour dim ${k}: R² ${r2}`);
  }
});

test('latents drive the rates: log-rates are linear in the latents', () => {
  const d = generateSyntheticNeuralData({ nTrials: 20, seed: 4 });
  const rows = d.nTrials * d.nBins;
  const y = Float64Array.from({ length: rows }, (_, r) => Math.log(d.rates[r * d.nNeurons]!));
  assert.ok(leastSquaresR2(d.latents, y, rows, d.nLatents) > 0.99);
});

test('splitTrials holds out a stratified, disjoint, deterministic share of trials', () => {
  const d = generateSyntheticNeuralData({ nTrials: 80, nConditions: 8, seed: 2 });
  const s1 = splitTrials(d, { heldOutFraction: 0.25, seed: 5 });
  const s2 = splitTrials(d, { heldOutFraction: 0.25, seed: 5 });
  assert.deepEqual(s1.heldOutIndices, s2.heldOutIndices);
  assert.equal(s1.train.nTrials + s1.heldOut.nTrials, 80);
  assert.equal(s1.heldOut.nTrials, 24); // round(10 · 0.25) = 3 per condition
  const all = new Set([...s1.trainIndices, ...s1.heldOutIndices]);
  assert.equal(all.size, 80);
  for (let c = 0; c < 8; c++) assert.ok(s1.heldOut.conditions.includes(c) && s1.train.conditions.includes(c));
  // The split keeps each trial's data with it.
  const i = s1.heldOutIndices[0]!;
  const per = d.nBins * d.nNeurons;
  assert.deepEqual(s1.heldOut.spikes.subarray(0, per), d.spikes.subarray(i * per, (i + 1) * per));
  assert.equal(s1.heldOut.trialIds[0], i);
  assert.deepEqual(selectTrials(d, [i]).latents, d.latents.subarray(i * d.nBins * d.nLatents, (i + 1) * d.nBins * d.nLatents));
});

test('rejects options it cannot honour, naming them', () => {
  assert.throws(() => generateSyntheticNeuralData({ nLatents: 3 }), (e: unknown) => e instanceof ConfigError && /nLatents/.test(e.message));
  assert.throws(() => generateSyntheticNeuralData({ nTrials: 0 }), (e: unknown) => e instanceof ConfigError && /nTrials/.test(e.message));
  const d = generateSyntheticNeuralData({ nTrials: 8, seed: 0 });
  assert.throws(() => splitTrials(d, { heldOutFraction: 1 }), ConfigError);
});

test('the PRNG is uniform enough and its Poisson draws have the right mean', () => {
  const rng = createRng(11);
  let s = 0, p = 0;
  for (let i = 0; i < 20000; i++) { s += rng.uniform(); p += rng.poisson(3); }
  assert.ok(Math.abs(s / 20000 - 0.5) < 0.01);
  assert.ok(Math.abs(p / 20000 - 3) < 0.05);
});
