import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, tf } from '../src/backend.js';
import { runCausalAnalysis, type CausalResult, type PatchingResult } from '../src/analysis/causal.js';
import { seededMatrix } from './helpers.js';

/**
 * input[6] → dense `hidden` [10] relu → dense `out` [2]. The output kernel is zero except on the
 * rows of units 2, 5 and 7: only they reach the output.
 */
async function plantedReadoutModel(): Promise<tf.LayersModel> {
  await initBackend();
  const x = tf.input({ shape: [6] });
  const hidden = tf.layers.dense({ units: 10, activation: 'relu', name: 'hidden' });
  const out = tf.layers.dense({ units: 2, name: 'out' });
  const model = tf.model({ inputs: x, outputs: out.apply(hidden.apply(x)) as tf.SymbolicTensor });
  hidden.setWeights([tf.tensor2d(seededMatrix(6, 10, 31), [6, 10]), tf.fill([10], 0.3)]);
  const k = new Float32Array(20);
  k[2 * 2] = 1.5; k[2 * 2 + 1] = -0.5; // unit 2
  k[5 * 2] = -0.8; // unit 5
  k[7 * 2 + 1] = 1.1; // unit 7
  out.setWeights([tf.tensor2d(k, [10, 2]), tf.zeros([2])]);
  return model;
}

function predictData(model: tf.LayersModel, x: tf.Tensor): Float32Array {
  return tf.tidy(() => model.predict(x, { batchSize: x.shape[0] }) as tf.Tensor).dataSync() as Float32Array;
}

test('unit ablation ranks exactly the units that reach the output first; the others have no effect', async () => {
  const model = await plantedReadoutModel();
  const n = 200;
  const inputs = tf.tensor2d(seededMatrix(n, 6, 5), [n, 6]);
  const before = predictData(model, inputs).slice();
  for (const ablation of ['mean', 'zero'] as const) {
    const res = await runCausalAnalysis({ ablation }, { layer: 'hidden', model, evalData: { inputs } });
    assert.equal(res.metric, 'output_rms_change');
    assert.equal(res.n_units_tested, 10);
    const ranked = res.unit_effects.map((e) => e.unit);
    assert.deepEqual(ranked.slice(0, 3).sort(), [2, 5, 7], `ranking ${ranked} (${ablation})`);
    const top = res.unit_effects[0]!.effect!;
    for (const e of res.unit_effects.slice(3)) assert.ok(Math.abs(e.effect!) < 1e-6 * top, `unit ${e.unit} effect ${e.effect}`);
    for (const e of res.unit_effects.slice(0, 3)) assert.ok(e.effect! > 0.05, `unit ${e.unit} effect ${e.effect}`);
    assert.ok(res.layer_effect! > 0.05);
  }
  // After the analysis the model computes exactly what it did before.
  assert.deepEqual(Array.from(predictData(model, inputs)), Array.from(before));
  inputs.dispose();
});

test('with targets the effect is the change of the eval loss (compiled loss or MSE), ranked the same', async () => {
  const model = await plantedReadoutModel();
  const n = 160;
  const inputs = tf.tensor2d(seededMatrix(n, 6, 6), [n, 6]);
  // Targets equal to the model's output: the clean loss is 0 and every effect is the MSE of the ablated output.
  const targets = tf.tidy(() => model.predict(inputs) as tf.Tensor);
  const uncompiled = await runCausalAnalysis({ ablation: 'zero' }, { layer: 'hidden', model, evalData: { inputs, targets } });
  assert.equal(uncompiled.metric, 'loss_change');
  assert.equal(uncompiled.loss_kind, 'mse');
  assert.ok(Math.abs(uncompiled.baseline_loss!) < 1e-10);
  assert.deepEqual(uncompiled.unit_effects.slice(0, 3).map((e) => e.unit).sort(), [2, 5, 7]);
  // Zeroing unit 5 (out weight −0.8 on output 0) raises the MSE by mean(h5²)·0.64 / 2 outputs.
  const h = tf.tidy(() => tf.relu(tf.add(tf.matMul(inputs, tf.tensor2d(seededMatrix(6, 10, 31), [6, 10])), 0.3))).arraySync() as number[][];
  const expected5 = h.reduce((a, r) => a + r[5]! ** 2, 0) / n * 0.64 / 2;
  const got5 = uncompiled.unit_effects.find((e) => e.unit === 5)!.effect!;
  assert.ok(Math.abs(got5 - expected5) < 1e-4 * expected5, `unit 5: ${got5} vs ${expected5}`);
  model.compile({ optimizer: 'sgd', loss: 'meanAbsoluteError' });
  const compiled = await runCausalAnalysis({ ablation: 'zero' }, { layer: 'hidden', model, evalData: { inputs, targets } });
  assert.equal(compiled.loss_kind, 'compiled');
  assert.deepEqual(compiled.unit_effects.slice(0, 3).map((e) => e.unit).sort(), [2, 5, 7]);
  for (const e of compiled.unit_effects.slice(3)) assert.ok(Math.abs(e.effect!) < 1e-6);
  tf.dispose([inputs, targets]);
});

/**
 * x[4] → dense `main` [6] tanh → dense `mid` [6] → concat with dense `side` [3] (from x) → dense
 * `out` [2] whose kernel is zero on `side`: `main` and `mid` carry everything, `side` is bypassed.
 */
async function bypassModel(): Promise<tf.LayersModel> {
  await initBackend();
  const x = tf.input({ shape: [4] });
  const main = tf.layers.dense({ units: 6, activation: 'tanh', name: 'main', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }).apply(x) as tf.SymbolicTensor;
  const mid = tf.layers.dense({ units: 6, name: 'mid', kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }).apply(main) as tf.SymbolicTensor;
  const side = tf.layers.dense({ units: 3, name: 'side', kernelInitializer: tf.initializers.glorotUniform({ seed: 5 }) }).apply(x) as tf.SymbolicTensor;
  const cat = tf.layers.concatenate({ name: 'cat' }).apply([mid, side]) as tf.SymbolicTensor;
  const outLayer = tf.layers.dense({ units: 2, name: 'out' });
  const model = tf.model({ inputs: x, outputs: outLayer.apply(cat) as tf.SymbolicTensor });
  const k = seededMatrix(9, 2, 17);
  k.fill(0, 12); // rows 6–8 (the side branch) read nothing
  outLayer.setWeights([tf.tensor2d(k, [9, 2]), tf.zeros([2])]);
  return model;
}

test('patching a layer that carries all the information restores the clean output; a bypassed layer restores nothing', async (t) => {
  const model = await bypassModel();
  const n = 128;
  const inputs = tf.tensor2d(seededMatrix(n, 4, 12), [n, 4]);
  const before = predictData(model, inputs).slice();
  const patch = async (layer: string, extra: Record<string, unknown> = {}) => {
    const r: CausalResult = await runCausalAnalysis(extra, { layer, model, evalData: { inputs } });
    assert.ok(!('error' in r.patching), JSON.stringify(r.patching));
    return r.patching as PatchingResult;
  };
  for (const layer of ['main', 'mid']) {
    const p = await patch(layer);
    assert.equal(p.corruption, 'shuffle');
    assert.ok(p.output_difference_rms! > 0.05);
    t.diagnostic(`${layer} restores ${p.restored_fraction}`);
    assert.ok(p.restored_fraction! >= 0.95, `${layer} restores ${p.restored_fraction}`);
  }
  const side = await patch('side');
  t.diagnostic(`side (bypassed) restores ${side.restored_fraction}`);
  assert.ok(Math.abs(side.restored_fraction!) < 1e-6, `side restores ${side.restored_fraction}`);
  assert.ok(side.units.every((u) => Math.abs(u.restored_fraction!) < 1e-6));
  // Units of `mid` patched alone restore part of it; in a linear read-out the parts add up to the whole.
  const mid = await patch('mid', { patch_units: 6 });
  const sum = mid.units.reduce((a, u) => a + u.restored_fraction!, 0);
  assert.ok(Math.abs(sum - mid.restored_fraction!) < 1e-4, `sum of units ${sum} vs layer ${mid.restored_fraction}`);
  // Given corrupted inputs and noise corruption work the same way.
  const corruptedInputs = tf.tensor2d(seededMatrix(n, 4, 99), [n, 4]);
  const given = (await runCausalAnalysis({}, { layer: 'mid', model, evalData: { inputs, corruptedInputs } })).patching as PatchingResult;
  assert.equal(given.corruption, 'given');
  assert.ok(given.restored_fraction! >= 0.95);
  const noisy = await patch('main', { corruption: 'noise', noise_scale: 0.5 });
  assert.ok(noisy.restored_fraction! >= 0.95);
  assert.deepEqual(Array.from(predictData(model, inputs)), Array.from(before));
  tf.dispose([inputs, corruptedInputs]);
});

test('bad options are rejected with the option, the value and what is allowed', async () => {
  const model = await plantedReadoutModel();
  const inputs = tf.tensor2d(seededMatrix(8, 6, 5), [8, 6]);
  await assert.rejects(runCausalAnalysis({ ablation: 'resample' }, { layer: 'hidden', model, evalData: { inputs } }), /`ablation` to be one of mean, zero; got `resample`/);
  await assert.rejects(runCausalAnalysis({ max_units: 0 }, { layer: 'hidden', model, evalData: { inputs } }), /`max_units` to be an integer >= 1; got `0`/);
  await assert.rejects(runCausalAnalysis({ corruption: 'flip' }, { layer: 'hidden', model, evalData: { inputs } }), /`corruption` to be one of shuffle, noise/);
  await assert.rejects(runCausalAnalysis({}, { layer: 'hidden', model, evalData: null }), /needs the model and eval data/);
  inputs.dispose();
});

test('a large layer is capped to its most active units; [B,T,D] layers are ablated at every position', async () => {
  await initBackend();
  const x = tf.input({ shape: [5, 3] });
  const proj = tf.layers.dense({ units: 12, name: 'proj', kernelInitializer: tf.initializers.glorotUniform({ seed: 8 }) }).apply(x) as tf.SymbolicTensor;
  const flat = tf.layers.flatten().apply(proj) as tf.SymbolicTensor;
  const model = tf.model({ inputs: x, outputs: tf.layers.dense({ units: 1, name: 'o', kernelInitializer: tf.initializers.glorotUniform({ seed: 9 }) }).apply(flat) as tf.SymbolicTensor });
  const inputs = tf.tensor3d(seededMatrix(40, 15, 3), [40, 5, 3]);
  const res = await runCausalAnalysis({ max_units: 4, ablation: 'zero' }, { layer: 'proj', model, evalData: { inputs } });
  assert.equal(res.n_units, 12);
  assert.equal(res.n_units_tested, 4);
  assert.equal(res.unit_selection, 'top_mean_abs_activation');
  assert.ok(res.unit_effects.every((e) => e.effect! > 0));
  assert.ok(JSON.parse(JSON.stringify(res)));
  inputs.dispose();
});

test('interventions leave no trace, even when they fail: outputs equal the original bit for bit and the layer is restored', async () => {
  const { withInterventionSync, replaceUnitsPerVariant, tileBatch } = await import('../src/model/interventions.js');
  const model = await plantedReadoutModel();
  const layer = model.getLayer('hidden');
  const x = tf.tensor2d(seededMatrix(12, 6, 21), [12, 6]);
  const before = predictData(model, x).slice();
  // Three variants in one pass: unchanged, unit 2 zeroed, every unit set to 1.
  const masks = new Float32Array(30);
  masks[10 + 2] = 1;
  masks.fill(1, 20, 30);
  const tiled = tileBatch(x, 3) as tf.Tensor;
  const y = withInterventionSync(model, { hidden: replaceUnitsPerVariant(masks, 3, new Float32Array(10).fill(1).map((v, i) => (i === 2 ? 0 : v))) }, () => predictData(model, tiled));
  assert.deepEqual(Array.from(y.subarray(0, 24)), Array.from(before), 'variant 0 is the unchanged model');
  assert.notDeepEqual(Array.from(y.subarray(24, 48)), Array.from(before));
  assert.throws(() => withInterventionSync(model, { hidden: replaceUnitsPerVariant(masks, 3) }, () => model.predict(tiled, { batchSize: 32 })), /batch 32 cannot be split into 3 variants/);
  assert.throws(() => withInterventionSync(model, { hidden: () => { throw new Error('boom'); } }, () => model.predict(x)), /boom/);
  assert.ok(!Object.hasOwn(layer, 'call'), 'the layer has its own call again');
  assert.deepEqual(Array.from(predictData(model, x)), Array.from(before));
  tf.dispose([x, tiled]);
});
