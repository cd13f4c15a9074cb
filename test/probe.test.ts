import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tf } from '../src/backend.js';
import { runProbeAnalysis } from '../src/analysis/probe.js';
import { crossValidatedR2 } from '../src/analysis/ridge.js';
import { withIntervention, ablateUnits, recordActivations } from '../src/model/interventions.js';
import { seededMatrix, smallNestedModel } from './helpers.js';

test('cross-validated ridge R² is ~1 for a linear target, ~0 for noise', () => {
  const n = 300;
  const d = 5;
  const X = seededMatrix(n, d, 3);
  const Y = new Float32Array(n * 2);
  const noise = seededMatrix(n, 2, 4);
  for (let r = 0; r < n; r++) {
    Y[r * 2] = 2 * X[r * d]! - X[r * d + 3]!;
    Y[r * 2 + 1] = noise[r * 2]!;
  }
  const groups = Int32Array.from({ length: n }, (_, i) => i);
  const res = crossValidatedR2(X, Y, n, d, 2, groups);
  assert.ok(res.r2_per_dim[0]! > 0.999, `linear target R² ${res.r2_per_dim[0]}`);
  assert.ok(res.r2_per_dim[1]! < 0.05, `noise R² ${res.r2_per_dim[1]}`);
});

test('the probe decodes what a layer linearly carries; the shuffled-trial control stays near zero', async () => {
  const model = await smallNestedModel(4);
  const n = 240;
  const inputs = tf.tensor2d(seededMatrix(n, 4, 8), [n, 4]);
  const acts = await recordActivations(model, ['backbone.blocks.0'], inputs);
  // The target is a fixed linear read-out of the layer: the probe must find it (R² ≈ 1).
  const h = acts['backbone.blocks.0']!;
  const target = new Float32Array(n);
  for (let i = 0; i < n; i++) target[i] = 3 * h.data[i * 8 + 1]! - h.data[i * 8 + 5]! + 0.5;
  const res = await runProbeAnalysis({}, { layer: 'backbone.blocks.0', model, evalData: { inputs, probeTargets: { readout: { data: target, shape: [n, 1] } } } });
  const t = res.targets.readout!;
  assert.ok(t.r2 > 0.99, `R² ${t.r2}`);
  assert.ok(Math.abs(t.control_r2_shuffled) < 0.1, `control ${t.control_r2_shuffled}`);
  assert.equal(t.alignment, 'per_trial');
  inputs.dispose();
});

test('interventions are scoped: ablation changes the output inside, and afterwards outputs equal the original bit for bit', async () => {
  const model = await smallNestedModel(5);
  const x = tf.tensor2d(seededMatrix(16, 4, 9), [16, 4]);
  const before = (model.predict(x) as tf.Tensor).dataSync().slice();
  const inside = await withIntervention(model, { 'backbone.blocks.1': ablateUnits([0, 1, 2, 3, 4, 5, 6, 7]) }, () => (model.predict(x) as tf.Tensor).dataSync().slice());
  // With every unit of the last hidden layer zeroed, the head outputs only its bias (zeros at init).
  assert.ok(inside.every((v) => Math.abs(v) < 1e-7));
  await assert.rejects(withIntervention(model, { 'backbone.blocks.1': ablateUnits([99]) }, () => model.predict(x)), /Unit 99 is outside/);
  const after = (model.predict(x) as tf.Tensor).dataSync();
  assert.deepEqual(Array.from(after), Array.from(before));
});
