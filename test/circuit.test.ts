import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, tf } from '../src/backend.js';
import { runCircuitAnalysis, type CircuitResult } from '../src/analysis/circuit.js';
import { saveSae } from '../src/analysis/sae-weights.js';
import { seededMatrix, tempDir } from './helpers.js';

/** The planted wiring h1 → h2: (from, to, weight). Every other entry of the kernel is 0. */
const PLANTED: [number, number, number][] = [
  [0, 1, 1.2], [0, 4, -0.9], [2, 2, 0.8], [3, 6, -1.4], [5, 0, 1.0], [6, 3, 0.7], [7, 5, -1.1], [7, 7, 0.9],
];

/**
 * x[6] → dense `h1` [8] relu (positive bias, so units are mostly on) → dense `h2` [8] tanh with the
 * sparse planted kernel → dense `out` [3].
 */
async function plantedCircuitModel(): Promise<tf.LayersModel> {
  await initBackend();
  const x = tf.input({ shape: [6] });
  const h1 = tf.layers.dense({ units: 8, activation: 'relu', name: 'h1' });
  const h2 = tf.layers.dense({ units: 8, activation: 'tanh', name: 'h2' });
  const out = tf.layers.dense({ units: 3, name: 'out', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) });
  const model = tf.model({ inputs: x, outputs: out.apply(h2.apply(h1.apply(x))) as tf.SymbolicTensor });
  h1.setWeights([tf.tensor2d(seededMatrix(6, 8, 41), [6, 8]), tf.fill([8], 0.6)]);
  const k = new Float32Array(64);
  for (const [i, j, w] of PLANTED) k[i * 8 + j] = w;
  h2.setWeights([tf.tensor2d(k, [8, 8]), tf.zeros([8])]);
  return model;
}

function precisionRecall(res: CircuitResult): { precision: number; recall: number } {
  const planted = new Set(PLANTED.map(([i, j]) => `${i}>${j}`));
  const found = res.edges.map((e) => `${e.source_unit}>${e.target_unit}`);
  const hits = found.filter((f) => planted.has(f)).length;
  return { precision: hits / found.length, recall: hits / planted.size };
}

test('circuit analysis recovers planted sparse wiring with the right signs, and ablation confirms every kept edge', async (t) => {
  const model = await plantedCircuitModel();
  const n = 128;
  const inputs = tf.tensor2d(seededMatrix(n, 6, 7), [n, 6]);
  const before = (tf.tidy(() => model.predict(inputs) as tf.Tensor)).dataSync().slice();
  const res = await runCircuitAnalysis({ top_k: PLANTED.length }, { layer: 'h1', layers: ['h1', 'h2'], model, evalData: { inputs }, previous: {} });
  assert.equal(res.downstream, 'h2');
  assert.deepEqual(res.basis, { upstream: 'units', downstream: 'units' });
  assert.equal(res.edges.length, PLANTED.length);
  const { precision, recall } = precisionRecall(res);
  t.diagnostic(`precision ${precision}, recall ${recall} at K = ${PLANTED.length}`);
  assert.ok(precision >= 0.9 && recall >= 0.9, `precision ${precision}, recall ${recall}`);
  for (const e of res.edges) {
    const w = PLANTED.find(([i, j]) => i === e.source_unit && j === e.target_unit)![2];
    assert.equal(e.sign, Math.sign(w), `edge ${e.source_unit}→${e.target_unit}`);
    assert.ok(e.agrees, `edge ${e.source_unit}→${e.target_unit}: attribution ${e.attribution}, ablation ${e.ablation_effect}`);
  }
  assert.equal(res.agreement_fraction, 1);
  assert.ok(res.nodes.some((nd) => nd.layer === 'h1' && nd.unit === 0 && nd.mean_activation! > 0));
  // The last sampled layer is wired to the model's outputs.
  const last = await runCircuitAnalysis({ top_k: 5 }, { layer: 'h2', layers: ['h1', 'h2'], model, evalData: { inputs }, previous: {} });
  assert.equal(last.downstream, 'output');
  assert.equal(last.basis!.downstream, 'output_units');
  assert.equal(last.edges.length, 5);
  assert.ok(last.edges.every((e) => e.target_layer === model.outputNames[0] && e.agrees));
  assert.deepEqual(Array.from((tf.tidy(() => model.predict(inputs) as tf.Tensor)).dataSync()), Array.from(before));
  inputs.dispose();
});

test('with SAEs from the sae analysis, edges are found between latents and map back to the planted wiring', async () => {
  const model = await plantedCircuitModel();
  const dir = await tempDir();
  const n = 128;
  const inputs = tf.tensor2d(seededMatrix(n, 6, 8), [n, 6]);
  // h1 (ReLU, ≥ 0): latent l reads unit perm[l]. h2 (tanh, either sign): latent 2j = relu(h2_j), 2j+1 = relu(−h2_j).
  const perm = [3, 7, 0, 5, 1, 6, 2, 4];
  const enc1 = new Float32Array(64);
  const dec1 = new Float32Array(64);
  perm.forEach((u, l) => { enc1[u * 8 + l] = 1; dec1[l * 8 + u] = 1; });
  const enc2 = new Float32Array(8 * 16);
  const dec2 = new Float32Array(16 * 8);
  for (let j = 0; j < 8; j++) {
    enc2[j * 16 + 2 * j] = 1; enc2[j * 16 + 2 * j + 1] = -1;
    dec2[2 * j * 8 + j] = 1; dec2[(2 * j + 1) * 8 + j] = -1;
  }
  const relu = (W_enc: Float32Array, W_dec: Float32Array, d: number, L: number) => ({ architecture: 'relu' as const, dim: d, nLatents: L, k: L, W_enc, b_enc: new Float32Array(L), W_dec, b_dec: new Float32Array(d) });
  await saveSae(`${dir}/sae/h1.safetensors`, relu(enc1, dec1, 8, 8));
  await saveSae(`${dir}/sae/h2.safetensors`, relu(enc2, dec2, 8, 16));
  const previous = { sae: { h1: { weights_file: 'sae/h1.safetensors' }, h2: { weights_file: 'sae/h2.safetensors' } } };
  const res = await runCircuitAnalysis({ top_k: PLANTED.length }, { layer: 'h1', layers: ['h1', 'h2'], model, evalData: { inputs }, previous, outputDir: dir });
  assert.deepEqual(res.basis, { upstream: 'sae_latents', downstream: 'sae_latents' });
  const planted = new Set(PLANTED.map(([i, j]) => `${i}>${j}`));
  for (const e of res.edges) {
    assert.ok(planted.has(`${perm[e.source_unit]}>${Math.floor(e.target_unit / 2)}`), `latent edge ${e.source_unit}→${e.target_unit}`);
    assert.ok(e.agrees);
  }
  assert.equal(res.edges.length, PLANTED.length);
  assert.ok(res.nodes.every((nd) => nd.kind === 'sae_latent'));
  await assert.rejects(runCircuitAnalysis({ use_sae: true }, { layer: 'h1', layers: ['h1', 'h2'], model, evalData: { inputs }, previous: {} }), /use_sae is true/);
  await assert.rejects(runCircuitAnalysis({ top_k: 0 }, { layer: 'h1', layers: ['h1', 'h2'], model, evalData: { inputs }, previous: {} }), /`top_k` to be an integer >= 1; got `0`/);
  await assert.rejects(runCircuitAnalysis({}, { layer: 'h1', layers: ['h1', 'h2'], model, evalData: null, previous: {} }), /needs inputs/);
  inputs.dispose();
});

test('[B,T,D] layers: attributions average over batch and time and match the ablation on a linear map', async () => {
  await initBackend();
  const x = tf.input({ shape: [5, 3] });
  const a = tf.layers.dense({ units: 4, activation: 'relu', name: 'a', biasInitializer: tf.initializers.constant({ value: 0.5 }), kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }).apply(x) as tf.SymbolicTensor;
  const bLayer = tf.layers.dense({ units: 3, name: 'b' });
  const b = bLayer.apply(a) as tf.SymbolicTensor;
  const flat = tf.layers.flatten().apply(b) as tf.SymbolicTensor;
  const model = tf.model({ inputs: x, outputs: tf.layers.dense({ units: 1, name: 'o' }).apply(flat) as tf.SymbolicTensor });
  const k = new Float32Array(12);
  k[0 * 3 + 2] = 2; k[3 * 3 + 0] = -1; k[1 * 3 + 1] = 0.5;
  bLayer.setWeights([tf.tensor2d(k, [4, 3]), tf.zeros([3])]);
  const inputs = tf.tensor3d(seededMatrix(30, 15, 4), [30, 5, 3]);
  const res = await runCircuitAnalysis({ top_k: 3 }, { layer: 'a', layers: ['a', 'b'], model, evalData: { inputs }, previous: {} });
  assert.deepEqual(res.edges.map((e) => `${e.source_unit}>${e.target_unit}`).sort(), ['0>2', '1>1', '3>0']);
  // b is linear in a, so the first-order attribution is exact: it equals the ablation effect.
  for (const e of res.edges) assert.ok(Math.abs(e.attribution! - e.ablation_effect!) < 1e-4 * Math.abs(e.attribution!), JSON.stringify(e));
  inputs.dispose();
});
