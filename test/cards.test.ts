import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { initBackend, tf } from '../src/backend.js';
import { executeAnalyses } from '../src/analysis/executor.js';
import { matrixSource, readerSource } from '../src/analysis/sources.js';
import { MechIntCallback } from '../src/capture/callback.js';
import { ShardReader } from '../src/storage/shard-reader.js';
import { decodeSae, encodeSae, loadSae } from '../src/analysis/sae-weights.js';
import type { CardsResult } from '../src/analysis/cards.js';
import type { SaeResult } from '../src/analysis/sae.js';
import type { EvalData } from '../src/analysis/types.js';
import { MechIntConfig } from '../src/config.js';
import { recordActivations } from '../src/model/interventions.js';
import { createRng } from '../src/random.js';
import { readEvalDataFile, writeEvalDataFile } from '../src/report/eval-data-file.js';
import { writeInteropExports } from '../src/report/saelens-export.js';
import { tempDir, unitDirections } from './helpers.js';

const F = 12; // planted features (covariates)
const D = 8; // hidden units: more features than dimensions
const N = 4000;

/**
 * Planted truth: 12 sparse non-negative covariates c_i, unit directions u_i in R^8, a model whose
 * `hidden` layer is exactly Σ c_i u_i (a fixed linear map of the covariates) and a linear readout.
 */
async function plantedWorld() {
  await initBackend();
  const rng = createRng(42);
  const U = unitDirections(rng, F, D);
  const C = new Float32Array(N * F);
  for (let r = 0; r < N; r++) for (let i = 0; i < F; i++) if (rng.uniform() < 0.08) C[r * F + i] = 0.5 + rng.uniform();
  const R = Float32Array.from({ length: D * 2 }, () => rng.normal());
  const x = tf.input({ shape: [F] });
  const hiddenLayer = tf.layers.dense({ units: D, useBias: false, name: 'hidden' });
  const outLayer = tf.layers.dense({ units: 2, name: 'out' });
  const model = tf.model({ inputs: x, outputs: outLayer.apply(hiddenLayer.apply(x)) as tf.SymbolicTensor });
  hiddenLayer.setWeights([tf.tensor2d(U, [F, D])]);
  outLayer.setWeights([tf.tensor2d(R, [D, 2]), tf.tensor1d([0.1, -0.3])]);
  // Learning rate 0: fit captures the planted layer without moving it (or the planted readout).
  model.compile({ optimizer: tf.train.sgd(0), loss: 'meanSquaredError' });
  const inputs = tf.tensor2d(C, [N, F]);
  const clean = tf.tidy(() => model.predict(inputs) as tf.Tensor);
  const targets = tf.tidy(() => tf.add(clean, tf.randomNormal(clean.shape, 0, 0.1, 'float32', 7)));
  const cleanOut = clean.dataSync() as Float32Array;
  clean.dispose();
  const covariates: NonNullable<EvalData['covariates']> = {};
  for (let i = 0; i < F; i++) covariates[`c_${i}`] = { data: Float32Array.from({ length: N }, (_, r) => C[r * F + i]!), shape: [N] };
  covariates.noise = { data: Float32Array.from({ length: N }, () => rng.normal()), shape: [N] };
  const hidden = (await recordActivations(model, ['hidden'], inputs)).hidden!.data;
  return { model, inputs, targets, covariates, U, R, hidden, cleanOut, targetData: targets.dataSync() as Float32Array };
}

const C_at = (w: Awaited<ReturnType<typeof plantedWorld>>, sample: number, i: number) => w.covariates[`c_${i}`]!.data[sample]!;

const cosine = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0, na = 0, nb = 0;
  for (let j = 0; j < a.length; j++) (d += a[j]! * b[j]!), (na += a[j]! ** 2), (nb += b[j]! ** 2);
  return d / Math.sqrt(na * nb);
};

test('cards recover planted sparse features captured during fit: each covariate has a card that tracks it, along its planted direction, with exact output effects', async (t) => {
  const w = await plantedWorld();
  const dir = await tempDir();
  const cache = join(dir, 'cache');
  const config = new MechIntConfig({ sampleLayers: ['hidden'], storagePath: cache, maxActivationsPerShard: N, saveHiddenEveryNSteps: 1000, captureInputs: true, verbose: false });
  await w.model.fit(w.inputs, w.targets, { epochs: 1, batchSize: 100, shuffle: true, verbose: 0, callbacks: [new MechIntCallback(config)] });
  const reader = await ShardReader.open(cache);
  assert.equal(reader.layer('hidden').rows, N);
  const evalData: EvalData = { inputs: w.inputs, targets: w.targets, covariates: w.covariates };
  const outcome = await executeAnalyses(
    {
      analyses: ['cards'], layers: ['hidden'], config,
      options: { sae: { n_latents: 24, k: 2, epochs: 60, batch_size: 64, lr: 0.004, normalize: 'none', seed: 2 }, cards: { max_cards: 24, max_samples: N, alphas: [-1, 0, 1] } },
    },
    { source: readerSource(reader), model: w.model, evalData, outputDir: dir, throwOnError: true },
  );
  const sae = outcome.analyses.sae!.hidden as SaeResult;
  const res = outcome.analyses.cards!.hidden as CardsResult;
  t.diagnostic(`SAE: explained variance ${sae.explained_variance}, L0 ${sae.final_l0}, dead ${sae.n_dead}; ${res.cards.length} cards`);
  assert.equal(res.source, 'sae');
  assert.equal(res.covariate_alignment.c_0, 'per_sample');
  // The SAE's top rows say where they came from: the fit step, batch and row, and the captured input (a row of the dataset).
  const dataset = new Set(Array.from({ length: N }, (_, r) => Array.from(w.inputs.dataSync().subarray(r * F, (r + 1) * F)).join(',')));
  for (const row of sae.top_latents.flatMap((l) => l.top_rows)) {
    const o = row.origin!;
    assert.equal(o.epoch, 0);
    assert.equal(o.batch, o.step, 'one epoch: the batch index is the step');
    assert.ok(o.step! >= 0 && o.step! < N / 100 && o.row! >= 0 && o.row! < 100, JSON.stringify(o));
    assert.ok(dataset.has(o.inputs![w.model.inputNames[0]!]!.values.join(',')), 'the captured input is a dataset row');
  }
  const weights = await loadSae(sae.weights_file!);
  const dec = (l: number) => weights.W_dec.subarray(l * D, (l + 1) * D);

  // Recovery: a card whose best covariate is c_i with r >= 0.8 and decoder cosine >= 0.9 with u_i.
  let recovered = 0;
  for (let i = 0; i < F; i++) {
    const u = w.U.subarray(i * D, (i + 1) * D);
    const hits = res.cards.filter((c) => c.best_covariate?.name === `c_${i}`);
    const best = hits.map((c) => ({ r: c.best_covariate!.r!, cos: cosine(dec(c.index), u), chance: c.best_covariate!.control_r! }))
      .sort((a, b) => b.r - a.r)[0];
    t.diagnostic(`c_${i}: ${best ? `r ${best.r.toFixed(3)} (chance ${best.chance.toFixed(3)}), cos ${best.cos.toFixed(3)}` : 'no card'}`);
    if (best && best.r >= 0.8 && best.cos >= 0.9) recovered++;
    // Each top example carries its input: the planted covariates of that sample, c_i among them.
    for (const c of hits) {
      for (const ex of c.top_examples) {
        assert.deepEqual([ex.input!.start, ex.input!.values.length, ex.input!.values[0]!.length], [0, 1, F]);
        assert.ok(Math.abs(ex.input!.values[0]![i]! - C_at(w, ex.sample, i)) < 1e-5);
        assert.equal(ex.input!.values[0]![i], ex.context[`c_${i}`]);
      }
    }
  }
  t.diagnostic(`recovered ${recovered}/${F}`);
  assert.ok(recovered >= Math.ceil(0.9 * F), `recovered ${recovered} of ${F}`);

  // The pure-noise covariate is never a card's best match above its chance level.
  for (const c of res.cards) {
    assert.ok(Math.abs(c.covariates.noise!) < 0.2, `latent ${c.index}: noise r ${c.covariates.noise}`);
    if (c.best_covariate?.name === 'noise') assert.ok(Math.abs(c.best_covariate.r!) <= c.best_covariate.control_r!, `latent ${c.index} matches noise above chance`);
  }

  // Output effects are the planted linear readout: removing z_l W_dec[l] moves `out` by −z_l (W_dec[l] · R).
  const z = await encodeSae(weights, w.hidden, N);
  const L = weights.nLatents;
  let worst = 0;
  for (const c of res.cards) {
    const l = c.index;
    const read = [0, 1].map((u) => dec(l).reduce((a, v, j) => a + v * w.R[j * 2 + u]!, 0));
    let meanZ = 0;
    let lossClean = 0;
    let lossAfter = 0;
    for (let r = 0; r < N; r++) {
      const zl = z[r * L + l]!;
      meanZ += zl / N;
      for (let u = 0; u < 2; u++) {
        const y = w.cleanOut[r * 2 + u]!;
        const tgt = w.targetData[r * 2 + u]!;
        lossClean += (tgt - y) ** 2 / (2 * N);
        lossAfter += (tgt - (y - zl * read[u]!)) ** 2 / (2 * N);
      }
    }
    const removal = c.output_effects.removal;
    const head = removal.heads[0]!;
    for (let u = 0; u < 2; u++) {
      const err = Math.abs(head.mean_change![u]! - -meanZ * read[u]!);
      const slopeErr = Math.abs(c.output_effects.steering.heads[0]!.slope[u]! - read[u]!);
      worst = Math.max(worst, err, slopeErr);
      assert.ok(err < 1e-3, `latent ${l} unit ${u}: mean change ${head.mean_change![u]} vs ${-meanZ * read[u]!}`);
      assert.ok(slopeErr < 1e-3, `latent ${l} unit ${u}: steering slope ${c.output_effects.steering.heads[0]!.slope[u]} vs ${read[u]}`);
    }
    assert.ok(Math.abs(removal.loss_change! - (lossAfter - lossClean)) < 1e-3, `latent ${l}: loss change ${removal.loss_change} vs ${lossAfter - lossClean}`);
    assert.equal(removal.loss_kind, 'compiled');
    assert.equal(c.neighbours.length, 3);
    assert.ok(c.histogram.counts.reduce((a, b) => a + b, 0) + c.histogram.n_zero === N);
    assert.equal(c.top_examples.length, Math.min(5, Math.round(c.density! * N)));
    assert.equal(c.top_examples[0]!.value, c.max_activation);
    assert.equal(Object.keys(c.top_examples[0]!.context).length, F + 1);
    assert.match(c.description, /^Latent \d+ is active on [\d.]+% of rows/);
  }
  t.diagnostic(`largest output-effect error ${worst.toExponential(2)}`);
  assert.ok(JSON.parse(JSON.stringify(res)));

  // Exports: SAELens's layout (checked with numpy) and the cards as JSON Lines.
  const out = join(dir, 'export');
  const files = await writeInteropExports(out, outcome.analyses, (_l, r) => r.weights_file ?? null);
  assert.deepEqual(files.sort(), ['cards/hidden.jsonl', 'saelens/hidden/cfg.json', 'saelens/hidden/sae_weights.safetensors', 'saelens/hidden/sparsity.safetensors']);
  const cfg = JSON.parse(await readFile(join(out, 'saelens/hidden/cfg.json'), 'utf8'));
  assert.deepEqual([cfg.d_in, cfg.d_sae, cfg.architecture, cfg.k, cfg.layer], [D, 24, 'topk', 2, 'hidden']);
  const lines = (await readFile(join(out, 'cards/hidden.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, res.cards.length);
  for (const k of ['index', 'frac_nonzero', 'freq_hist', 'maxActApprox', 'activations', 'description', 'best_covariate']) assert.ok(k in lines[0], k);
  assert.ok(Array.isArray(lines[0].activations[0].values));

  const rows = 200;
  const xhat = await decodeSae(weights, await encodeSae(weights, w.hidden.subarray(0, rows * D), rows), rows);
  await writeFile(join(out, 'x.f32'), w.hidden.subarray(0, rows * D));
  await writeFile(join(out, 'xhat.f32'), xhat);
  const py = `
import json, struct, sys
try:
    import numpy as np
except ImportError:
    print("SKIP numpy missing"); sys.exit(0)
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4").reshape(v["shape"]).astype(np.float64)
    return out
d = sys.argv[1]; cfg = json.load(open(d + "/saelens/hidden/cfg.json")); w = load(d + "/saelens/hidden/sae_weights.safetensors")
sp = load(d + "/saelens/hidden/sparsity.safetensors")["sparsity"]
assert w["W_enc"].shape == (cfg["d_in"], cfg["d_sae"]) and w["W_dec"].shape == (cfg["d_sae"], cfg["d_in"]) and sp.shape == (cfg["d_sae"],)
x = np.fromfile(d + "/x.f32", dtype="<f4").reshape(-1, cfg["d_in"]).astype(np.float64)
pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
z = np.zeros_like(pre); idx = np.argsort(-pre, axis=1)[:, :cfg["k"]]
np.put_along_axis(z, idx, np.take_along_axis(pre, idx, axis=1), axis=1); z = np.maximum(z, 0)
xhat = z @ w["W_dec"] + w["b_dec"]
ref = np.fromfile(d + "/xhat.f32", dtype="<f4").reshape(xhat.shape)
print("MAXDIFF", float(np.abs(xhat - ref).max()))
`;
  const python = spawnSync('/usr/bin/python3', ['-c', 'import numpy'], { encoding: 'utf8' });
  if (python.status !== 0) {
    t.diagnostic('numpy check skipped: /usr/bin/python3 with numpy is not available');
  } else {
    const printed = execFileSync('/usr/bin/python3', ['-c', py, out], { encoding: 'utf8' });
    const diff = Number(/MAXDIFF (\S+)/.exec(printed)?.[1]);
    t.diagnostic(`numpy reconstruction from the SAELens layout vs mechint: max |Δx̂| ${diff}`);
    assert.ok(diff <= 1e-5, printed);
  }
  w.inputs.dispose();
  w.targets.dispose();
});

test("source 'units': a card per unit of the layer, no SAE; removing a unit is the planted readout of that unit", async () => {
  const w = await plantedWorld();
  const config = new MechIntConfig({ sampleLayers: ['hidden'], verbose: false });
  const outcome = await executeAnalyses(
    { analyses: ['cards'], layers: ['hidden'], config, options: { cards: { source: 'units', max_samples: 1000, alphas: [-1, 1] } } },
    { source: matrixSource({ hidden: { rows: w.hidden, dim: D } }, 'planted'), model: w.model, evalData: { inputs: w.inputs, targets: w.targets, covariates: w.covariates }, throwOnError: true },
  );
  assert.equal(outcome.analyses.sae, undefined, 'no SAE is trained for unit cards');
  const res = outcome.analyses.cards!.hidden as CardsResult;
  assert.equal(res.source, 'units');
  assert.equal(res.n_latents, D);
  assert.equal(res.cards.length, D);
  for (const c of res.cards) {
    const j = c.index;
    let meanH = 0;
    for (let r = 0; r < 1000; r++) meanH += w.hidden[r * D + j]! / 1000;
    for (let u = 0; u < 2; u++) {
      const expected = -meanH * w.R[j * 2 + u]!;
      assert.ok(Math.abs(c.output_effects.removal.heads[0]!.mean_change![u]! - expected) < 1e-4, `unit ${j}: ${c.output_effects.removal.heads[0]!.mean_change![u]} vs ${expected}`);
      assert.ok(Math.abs(c.output_effects.steering.heads[0]!.slope[u]! - w.R[j * 2 + u]!) < 1e-3);
    }
    // A unit mixes planted features: its best covariate is one of them, never the noise.
    assert.ok(c.best_covariate!.name.startsWith('c_'));
    assert.match(c.description, /^Unit \d+ is active/);
    assert.equal(c.neighbours.length, 3);
  }
  w.inputs.dispose();
  w.targets.dispose();
});

test('covariates round-trip through the eval-data file beside probe targets, categorical ones marked', async () => {
  await initBackend();
  const dir = await tempDir();
  const file = join(dir, 'eval_data.safetensors');
  const inputs = tf.tensor2d([[1, 2], [3, 4], [5, 6]]);
  await writeEvalDataFile(file, {
    inputs,
    probeTargets: { latents: { data: Float32Array.from([1, 2, 3, 4, 5, 6]), shape: [3, 2] } },
    covariates: { speed: { data: Float32Array.from([0.5, 1, 1.5, 2, 2.5, 3]), shape: [3, 2] }, condition: { data: Float32Array.from([0, 1, 0]), shape: [3], categorical: true } },
  });
  const back = await readEvalDataFile(file);
  assert.deepEqual(Object.keys(back.probeTargets ?? {}), ['latents']);
  assert.deepEqual(back.covariates!.speed!.shape, [3, 2]);
  assert.equal(back.covariates!.speed!.categorical, undefined);
  assert.deepEqual(Array.from(back.covariates!.condition!.data), [0, 1, 0]);
  assert.equal(back.covariates!.condition!.categorical, true);
  inputs.dispose();
  tf.dispose(back.inputs as tf.Tensor);
});

test('on a [N, T, D] layer, per-position covariates line up bin by bin and a categorical covariate is scored by η', async () => {
  const { sequenceModel, seededMatrix } = await import('./helpers.js');
  const { saveSae } = await import('../src/analysis/sae-weights.js');
  const { runCardsAnalysis } = await import('../src/analysis/cards.js');
  const model = await sequenceModel();
  const dir = await tempDir();
  const n = 60;
  const T = 5;
  const inputs = tf.tensor3d(seededMatrix(n * T, 3, 21), [n, T, 3]);
  const act = (await recordActivations(model, ['proj'], inputs)).proj!.data;
  // A ReLU SAE whose latent 2j reads +proj_j and latent 2j+1 reads −proj_j.
  const enc = new Float32Array(6 * 12);
  const dec = new Float32Array(12 * 6);
  for (let j = 0; j < 6; j++) {
    enc[j * 12 + 2 * j] = 1; enc[j * 12 + 2 * j + 1] = -1;
    dec[2 * j * 6 + j] = 1; dec[(2 * j + 1) * 6 + j] = -1;
  }
  await saveSae(`${dir}/sae/proj.safetensors`, { architecture: 'relu', dim: 6, nLatents: 12, k: 12, W_enc: enc, b_enc: new Float32Array(12), W_dec: dec, b_dec: new Float32Array(6) });
  const relu0 = Float32Array.from({ length: n * T }, (_, r) => Math.max(0, act[r * 6]!));
  // Class 1 where the sample's mean relu(proj_0) is above the median: latent 0 differs by class.
  const means = Array.from({ length: n }, (_, i) => relu0.subarray(i * T, (i + 1) * T).reduce((a, b) => a + b, 0) / T);
  const median = [...means].sort((a, b) => a - b)[n / 2]!;
  const covariates = {
    relu_proj_0: { data: relu0, shape: [n, T] },
    group: { data: Float32Array.from(means, (m) => (m >= median ? 1 : 0)), shape: [n], categorical: true },
    per_trial_mean: { data: Float32Array.from({ length: n * 2 }, (_, i) => i % 2), shape: [n, 2] },
  };
  const res = await runCardsAnalysis({ max_cards: 12, alphas: [-1, 1] }, { layer: 'proj', model, evalData: { inputs, covariates }, previous: { sae: { proj: { weights_file: `${dir}/sae/proj.safetensors` } } }, outputDir: dir });
  assert.deepEqual(res.covariate_alignment, { relu_proj_0: 'per_position', group: 'per_sample_mean_pooled', per_trial_mean: 'per_sample_mean_pooled' });
  assert.deepEqual(res.categorical, ['group']);
  assert.equal(res.positions, T);
  const card = res.cards.find((c) => c.index === 0)!;
  assert.equal(card.best_covariate!.name, 'relu_proj_0');
  assert.ok(Math.abs(card.best_covariate!.r! - 1) < 1e-5);
  assert.ok(card.best_covariate!.control_r! < 0.5);
  assert.ok(card.covariates.group! > 0.5 && card.covariates.group! <= 1, `η ${card.covariates.group}`);
  assert.equal(card.top_examples[0]!.values!.length, T);
  assert.equal(card.top_examples[0]!.context.relu_proj_0, card.top_examples[0]!.value);
  // The input context: the window of input bins around the position, and the per-position covariate over it.
  const x = inputs.arraySync() as number[][][];
  for (const ex of card.top_examples) {
    const { start, values } = ex.input!;
    assert.equal(start, Math.max(0, ex.position - 8));
    assert.equal(values.length, T - start);
    for (const [i, row] of values.entries()) for (const [c, v] of row.entries()) assert.ok(Math.abs(v! - x[ex.sample]![start + i]![c]!) < 1e-5);
    assert.deepEqual(Object.keys(ex.traces!), ['relu_proj_0']);
    assert.equal(ex.traces!.relu_proj_0![ex.position - start], ex.value);
  }
  inputs.dispose();
});

test('exportResults writes SAELens folders for the SAEs and the cards as JSON Lines', async () => {
  const { EvalMechIntRunner } = await import('../src/report/eval-runner.js');
  const { ShardWriter } = await import('../src/storage/shard-writer.js');
  const w = await plantedWorld();
  const dir = await tempDir();
  const writer = new ShardWriter({ dir: `${dir}/cache` });
  await writer.write({ layers: { hidden: { shape: [N, D], data: w.hidden } }, globalStep: 0 });
  await writer.finish();
  const runner = new EvalMechIntRunner(w.model, {
    sampleLayers: ['hidden'], analysesToRun: ['sae', 'cards'], verbose: false,
    analysisOptions: { sae: { epochs: 2, n_latents: 16, k: 2 }, cards: { max_cards: 4, max_samples: 256, alphas: [-1, 1] } },
  });
  const results = await runner.runMechintEval({ hiddenShardsPath: `${dir}/cache`, evalData: { inputs: w.inputs, targets: w.targets, covariates: w.covariates } });
  assert.ok(!('error' in (results.analyses.cards!.hidden as object)), JSON.stringify(results.analyses.cards!.hidden));
  const files = await runner.exportResults(`${dir}/out`);
  for (const f of ['saelens/hidden/cfg.json', 'saelens/hidden/sae_weights.safetensors', 'saelens/hidden/sparsity.safetensors', 'cards/hidden.jsonl']) assert.ok(files.files.includes(f), f);
  const lines = (await readFile(`${dir}/out/cards/hidden.jsonl`, 'utf8')).trim().split('\n');
  assert.equal(lines.length, 4);
  const md = await readFile(files.markdown, 'utf8');
  assert.match(md, /## Latent cards[\s\S]*4 card\(s\) for the most active of 16 SAE latents of `hidden`/);
  await runner.dispose();
  w.inputs.dispose();
  w.targets.dispose();
});
