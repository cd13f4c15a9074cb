import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, tf } from '../src/backend.js';
import { runSteeringAnalysis, steer } from '../src/analysis/steering.js';
import { saveSae } from '../src/analysis/sae-weights.js';
import { addDirection, withIntervention } from '../src/model/interventions.js';
import { seededMatrix, sequenceModel, tempDir } from './helpers.js';

/** x[4] → dense `h` [6] tanh → dense `out` [2] (linear), plus a second head `aux` [3] reading `h` through relu. */
async function linearReadoutModel(): Promise<{ model: tf.LayersModel; W: number[][] }> {
  await initBackend();
  const x = tf.input({ shape: [4] });
  const h = tf.layers.dense({ units: 6, activation: 'tanh', name: 'h', kernelInitializer: tf.initializers.glorotUniform({ seed: 6 }) }).apply(x) as tf.SymbolicTensor;
  const outLayer = tf.layers.dense({ units: 2, name: 'out' });
  const out = outLayer.apply(h) as tf.SymbolicTensor;
  const aux = tf.layers.dense({ units: 3, activation: 'relu', name: 'aux', kernelInitializer: tf.initializers.glorotUniform({ seed: 7 }) }).apply(h) as tf.SymbolicTensor;
  const model = tf.model({ inputs: x, outputs: [out, aux] });
  const W = Array.from({ length: 6 }, (_, i) => [0.5 - 0.2 * i, 0.3 * ((i % 3) - 1)]);
  outLayer.setWeights([tf.tensor2d(W), tf.tensor1d([0.1, -0.2])]);
  return { model, W };
}

test('steering along a direction the output reads linearly changes it by the expected slope; the model is left untouched', async (t) => {
  const { model, W } = await linearReadoutModel();
  const n = 64;
  const inputs = tf.tensor2d(seededMatrix(n, 4, 13), [n, 4]);
  const before = (tf.tidy(() => (model.predict(inputs) as tf.Tensor[])[0]!)).dataSync().slice();
  const direction = [0.4, -0.3, 0.2, 0.7, -0.1, 0.5];
  const alphas = [-3, -1, 0, 0.5, 2, 4];
  const curve = await steer(model, 'h', direction, alphas, inputs);
  assert.deepEqual(curve.heads.map((h) => h.head), model.outputNames);
  const out = curve.heads[0]!;
  for (let u = 0; u < 2; u++) {
    const expected = direction.reduce((a, d, i) => a + d * W[i]![u]!, 0);
    t.diagnostic(`unit ${u}: slope ${out.slope[u]}, expected ${expected}`);
    assert.ok(Math.abs(out.slope[u]! - expected) <= 0.05 * Math.abs(expected), `unit ${u}: slope ${out.slope[u]} vs ${expected}`);
    // Each α moves the output by exactly α × expected (the read-out is linear).
    alphas.forEach((a, i) => assert.ok(Math.abs(out.mean_change![i]![u]! - a * expected) < 1e-4));
  }
  assert.equal(out.rms_change[2], 0);
  assert.ok(curve.heads[1]!.rms_change[5]! > 0, 'the relu head moves too');
  // A single α through addDirection agrees with the batched curve.
  const one = await withIntervention(model, { h: addDirection(direction, 2) }, () => (tf.tidy(() => (model.predict(inputs) as tf.Tensor[])[0]!)).dataSync().slice() as Float32Array);
  const shift = one.reduce((a, v, i) => a + (i % 2 === 0 ? v - before[i]! : 0), 0) / n;
  assert.ok(Math.abs(shift - out.mean_change![4]![0]!) < 1e-4);
  assert.deepEqual(Array.from((tf.tidy(() => (model.predict(inputs) as tf.Tensor[])[0]!)).dataSync()), Array.from(before));
  await assert.rejects(steer(model, 'h', direction, [], inputs), /`alphas` to be a non-empty array/);
  await assert.rejects(steer(model, 'h', [1, 2], [1], inputs), /direction of 2 values cannot be added to 6 units/);
  inputs.dispose();
});

test('steering a [B,T,D] layer adds the direction at every position', async (t) => {
  const model = await sequenceModel();
  const inputs = tf.tensor3d(seededMatrix(20, 15, 2), [20, 5, 3]);
  const direction = [1, 0, -0.5, 0.25, 0, 0.5];
  const curve = await steer(model, 'proj', direction, [-1, 0, 1, 2], inputs);
  // out = flatten(proj) · K + b, so Δout = α Σ_t K_t · direction.
  const K = model.getLayer('out').getWeights()[0]!.dataSync();
  let expected = 0;
  for (let t = 0; t < 5; t++) for (let j = 0; j < 6; j++) expected += K[t * 6 + j]! * direction[j]!;
  const slope = curve.heads[0]!.slope[0]!;
  t.diagnostic(`[B,T,D] slope ${slope}, expected ${expected}`);
  assert.ok(Math.abs(slope - expected) <= 0.05 * Math.abs(expected), `slope ${slope} vs ${expected}`);
  inputs.dispose();
});

test('the steering analysis steers the top SAE latents of a layer in units of their typical activation', async () => {
  const { model, W } = await linearReadoutModel();
  const dir = await tempDir();
  const n = 64;
  const inputs = tf.tensor2d(seededMatrix(n, 4, 14), [n, 4]);
  // A ReLU SAE with 12 latents: latent 2j reads +h_j, latent 2j+1 reads −h_j; decoder rows ±e_j.
  const enc = new Float32Array(6 * 12);
  const dec = new Float32Array(12 * 6);
  for (let j = 0; j < 6; j++) {
    enc[j * 12 + 2 * j] = 1; enc[j * 12 + 2 * j + 1] = -1;
    dec[2 * j * 6 + j] = 1; dec[(2 * j + 1) * 6 + j] = -1;
  }
  await saveSae(`${dir}/sae/h.safetensors`, { architecture: 'relu', dim: 6, nLatents: 12, k: 12, W_enc: enc, b_enc: new Float32Array(12), W_dec: dec, b_dec: new Float32Array(6) });
  const previous = { sae: { h: { weights_file: `${dir}/sae/h.safetensors`, top_latents: [{ latent: 6 }, { latent: 1 }] } } };
  const res = await runSteeringAnalysis({ n_latents: 3, alphas: [-1, 0, 1] }, { layer: 'h', model, evalData: { inputs }, previous, outputDir: dir });
  assert.equal(res.latents.length, 3);
  assert.deepEqual(res.latents.slice(0, 2).map((l) => l.latent), [6, 1]);
  for (const l of res.latents) {
    const j = Math.floor(l.latent / 2);
    const sign = l.latent % 2 === 0 ? 1 : -1;
    l.alphas.forEach((a, i) => assert.ok(Math.abs(a / l.mean_active_activation! - [-1, 0, 1][i]!) < 1e-4));
    // Slope per absolute α on `out` is the decoder row read by the output kernel: ±W[j].
    for (let u = 0; u < 2; u++) assert.ok(Math.abs(l.heads[0]!.slope[u]! - sign * W[j]![u]!) <= 0.05 * Math.abs(W[j]![u]!) + 1e-6);
    assert.ok(l.frequency! > 0 && l.frequency! <= 1);
  }
  assert.ok(JSON.parse(JSON.stringify(res)));
  await assert.rejects(runSteeringAnalysis({}, { layer: 'h', model, evalData: { inputs }, previous: {} }), /needs SAE weights for `h`/);
  await assert.rejects(runSteeringAnalysis({ alpha_units: 'sigma' }, { layer: 'h', model, evalData: { inputs }, previous }), /`alpha_units` to be one of latent, absolute; got `sigma`/);
  inputs.dispose();
});

test('runMechintEval with enableFeatureSteering runs steering after sae, beside causal and circuit, and the report explains them', async () => {
  const { EvalMechIntRunner } = await import('../src/report/eval-runner.js');
  const { ShardWriter } = await import('../src/storage/shard-writer.js');
  const { recordActivations } = await import('../src/model/interventions.js');
  const { readFile } = await import('node:fs/promises');
  const { model } = await linearReadoutModel();
  const dir = await tempDir();
  const n = 96;
  const inputs = tf.tensor2d(seededMatrix(n, 4, 15), [n, 4]);
  const acts = await recordActivations(model, ['h'], inputs);
  const writer = new ShardWriter({ dir: `${dir}/cache` });
  await writer.write({ layers: { h: { shape: acts.h!.shape, data: acts.h!.data } }, globalStep: 0 });
  await writer.finish();
  const runner = new EvalMechIntRunner(model, {
    sampleLayers: ['h'], analysesToRun: ['causal', 'sae', 'circuit'], enableFeatureSteering: true, verbose: false,
    analysisOptions: { sae: { epochs: 3, n_latents: 8, k: 2, batch_size: 32 }, steering: { n_latents: 2, alphas: [-1, 0, 1] } },
  });
  const results = await runner.runMechintEval({ hiddenShardsPath: `${dir}/cache`, evalData: { inputs } });
  assert.deepEqual(Object.keys(results.analyses), ['causal', 'sae', 'steering', 'circuit']);
  for (const name of ['causal', 'circuit', 'steering']) assert.ok(!('error' in (results.analyses[name]!.h as object)), `${name}: ${JSON.stringify(results.analyses[name]!.h)}`);
  const circuit = results.analyses.circuit!.h as { basis: { upstream: string }; edges: unknown[] };
  assert.equal(circuit.basis.upstream, 'sae_latents');
  assert.ok(circuit.edges.length > 0);
  const files = await runner.exportResults(`${dir}/out`);
  const md = await readFile(files.markdown, 'utf8');
  assert.match(md, /## Causal analysis[\s\S]*ablating unit \d+ of `h` changes the outputs by [\d.]+ \(RMS\)/);
  assert.match(md, /Patching the clean activations of `h` into runs on inputs shuffled across samples restores [\d.]+%/);
  assert.match(md, /## Circuits[\s\S]*From `h` to the model outputs \(sae latents → output units\)/);
  assert.match(md, /## Feature steering[\s\S]*Adding latent \d+'s decoder direction/);
  assert.ok(!md.includes('```'));
  await runner.dispose();
  inputs.dispose();
});
