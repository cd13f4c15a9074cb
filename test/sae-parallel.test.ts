import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initBackend, tf } from '../src/backend.js';
import { createRng } from '../src/random.js';
import { rowsFromMatrix } from '../src/storage/rows.js';
import { runSaeAnalysis, type SaeResult } from '../src/analysis/sae.js';
import { initTiedWeights } from '../src/analysis/sae-common.js';
import { createKernels } from '../src/analysis/sae-kernels.js';
import { startTopK } from '../src/analysis/sae-parallel.js';
import { mergeTopK, sliceTopK, sliceTopKT } from '../src/analysis/sae-slice-topk.js';
import { selectTopK } from '../src/analysis/sae-topk.js';
import { encodeSae, loadSae, type SaeWeights } from '../src/analysis/sae-weights.js';
import { plantedSuperposition } from '../src/demo/superposition.js';
import { meanMaxCosineSimilarity } from '../src/analysis/sae-metrics.js';

before(() => initBackend());

const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

describe('SIMD kernels', () => {
  test('axpy and dot match plain loops, including lengths that are not a multiple of 4', () => {
    const k = createKernels(4096);
    const rng = createRng(3);
    for (const n of [1, 3, 4, 7, 64, 130]) {
      const a = Float32Array.from({ length: n }, () => rng.normal());
      const b = Float32Array.from({ length: n }, () => rng.normal());
      k.f32.set(a, 0);
      k.f32.set(b, 1024);
      const dot = a.reduce((s, v, i) => s + v * b[i]!, 0);
      assert.ok(Math.abs(k.dot(0, 4096, n) - dot) < 1e-4, `dot, n = ${n}`);
      k.axpy(0, 4096, 0.5, n);
      assert.ok(maxDiff(k.f32.subarray(0, n), a.map((v, i) => v + 0.5 * b[i]!)) < 1e-6, `axpy, n = ${n}`);
      assert.equal(k.f32[n], 0, 'axpy writes nothing past n');
    }
  });
});

describe('per-slice top-k', () => {
  test('merging slices gives the single-slice selection, ties to the lower index, whatever the split', () => {
    const rng = createRng(1);
    const B = 20;
    const L = 37;
    const k = 5;
    // Rounded values, so ties are frequent.
    const pre = Float32Array.from({ length: B * L }, () => Math.round(rng.normal() * 2) / 2);
    const refV = new Float32Array(B * k);
    const refI = new Int32Array(B * k);
    const refActive = selectTopK(pre, B, L, k, refV, refI);
    for (const S of [1, 2, 3, 8]) {
      const stride = B * k;
      const V = new Float32Array(S * stride);
      const I = new Int32Array(S * stride);
      for (let s = 0; s < S; s++) {
        const s0 = Math.floor((s * L) / S);
        const s1 = Math.floor(((s + 1) * L) / S);
        const slice = new Float32Array(B * (s1 - s0));
        for (let r = 0; r < B; r++) slice.set(pre.subarray(r * L + s0, r * L + s1), r * (s1 - s0));
        sliceTopK(slice, B, s1 - s0, s0, k, V.subarray(s * stride), I.subarray(s * stride));
        // The latent-major form the trainer uses gives the same lists.
        const Ls = s1 - s0;
        const sliceT = new Float32Array(B * Ls);
        for (let r = 0; r < B; r++) for (let i = 0; i < Ls; i++) sliceT[i * B + r] = slice[r * Ls + i]!;
        const tV = new Float32Array(B * k);
        const tI = new Int32Array(B * k);
        sliceTopKT(sliceT, B, Ls, s0, k, tV, tI, 0);
        assert.deepEqual(tI, I.subarray(s * stride, (s + 1) * stride), `latent-major, S = ${S}`);
        assert.deepEqual(tV, V.subarray(s * stride, (s + 1) * stride), `latent-major, S = ${S}`);
      }
      const outV = new Float32Array(B * k);
      const outI = new Int32Array(B * k);
      assert.equal(mergeTopK(S, B, k, stride, V, I, outV, outI), refActive, `S = ${S}`);
      assert.deepEqual(outI, refI, `S = ${S}`);
      assert.deepEqual(outV, refV, `S = ${S}`);
    }
  });
});

describe('sliced gradients', () => {
  test('match tfjs autodiff (TopK with AuxK, selection fixed) to 1e-4', async () => {
    const d = 6; // not a multiple of 4: the kernels' scalar tails are used
    const L = 32;
    const B = 8;
    const k = 3;
    const auxK = 2;
    const alpha = 1 / 32;
    const hp = { dim: d, nLatents: L, k, l1Coefficient: 0, lr: 1e-3, auxK, auxCoefficient: alpha, deadStepsThreshold: 1 };
    const rng = createRng(7);
    const init = initTiedWeights(hp, rng, 1);
    init.b_enc.forEach((_, i) => { init.b_enc[i] = 0.1 * rng.normal(); });
    init.b_dec.forEach((_, i) => { init.b_dec[i] = 0.1 * rng.normal(); });
    const x = Float32Array.from({ length: B * d }, () => rng.normal());
    // Threshold 0: every latent that does not fire in this step counts as dead, so AuxK runs.
    const runner = await startTopK(init, { ...hp, deadStepsThreshold: 0, maxRows: B }, 1);
    try {
      const local = runner.local!;
      local.keepGradients = true;
      runner.step(x, B);
      const got = local.lastGradients!;
      assert.equal(got.ka, auxK);
      tf.tidy(() => {
        const X = tf.tensor2d(x, [B, d]);
        const mask = (ind: Int32Array, per: number) => {
          const m = new Float32Array(B * L);
          ind.forEach((i, n) => { if (i >= 0) m[Math.floor(n / per) * L + i] = 1; });
          return tf.tensor2d(m, [B, L]);
        };
        const M = mask(got.selI, k);
        const Ma = mask(got.auxI, auxK);
        const p = [tf.tensor2d(init.W_enc, [d, L]), tf.tensor1d(init.b_enc), tf.tensor2d(init.W_dec, [L, d]), tf.tensor1d(init.b_dec)];
        const act = (We: tf.Tensor, be: tf.Tensor, bd: tf.Tensor) => tf.relu(tf.add(tf.matMul(tf.sub(X, bd), We), be));
        // AuxK's target, the residual x − x̂, is a constant.
        const target = tf.sub(X, tf.add(tf.matMul(tf.mul(act(p[0]!, p[1]!, p[3]!), M), p[2]!), p[3]!));
        const f = (We: tf.Tensor, be: tf.Tensor, Wd: tf.Tensor, bd: tf.Tensor) => {
          const a = act(We, be, bd);
          const e = tf.sub(tf.add(tf.matMul(tf.mul(a, M), Wd), bd), X);
          const ea = tf.sub(tf.matMul(tf.mul(a, Ma), Wd), target);
          return tf.add(tf.div(tf.sum(tf.square(e)), B), tf.mul(tf.div(tf.sum(tf.square(ea)), B), alpha)) as tf.Scalar;
        };
        const auto = tf.grads(f)(p);
        assert.ok(Math.abs(got.loss - (f(p[0]!, p[1]!, p[2]!, p[3]!).dataSync()[0]!)) < 1e-4, 'loss');
        (['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const).forEach((name, i) => {
          const diff = maxDiff(got[name], auto[i]!.dataSync() as Float32Array);
          assert.ok(diff < 1e-4, `${name}: max difference ${diff}`);
        });
      });
    } finally {
      await runner.dispose();
    }
  });
});

describe('worker threads', () => {
  let dir: string;
  const D = 16;
  const { rows } = plantedSuperposition({ rows: 3000, dim: D, features: 32, active: 2, seed: 5 });
  const opts = { n_latents: 62, k: 3, epochs: 2, batch_size: 100, seed: 11, dead_steps_threshold: 20 };
  const runs: Array<{ result: SaeResult; sae: SaeWeights }> = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mechint-sae-par-'));
    for (const workers of [1, 2, 3]) {
      const result = await runSaeAnalysis(rowsFromMatrix(rows, D, 700), { ...opts, workers }, { layer: `w${workers}`, outputDir: dir });
      runs.push({ result, sae: await loadSae(result.weights_file!) });
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('1, 2 and 3 workers give the same SAE on the same seed, up to float rounding', () => {
    const [one, ...others] = runs;
    for (const [i, r] of others.entries()) {
      const label = `${i + 2} workers`;
      for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec'] as const) {
        const diff = maxDiff(one!.sae[name], r.sae[name]);
        assert.ok(diff < 1e-3, `${label}, ${name}: max difference ${diff}`);
      }
      assert.equal(r.result.final_l0, one!.result.final_l0, label);
      assert.ok(Math.abs(r.result.explained_variance! - one!.result.explained_variance!) < 1e-4, label);
      assert.equal(r.result.n_dead, one!.result.n_dead, label);
      assert.deepEqual(r.result.top_latents.map((t) => t.latent), one!.result.top_latents.map((t) => t.latent), label);
      const lossKey = (n: number) => `w${n}/loss`;
      r.result.training_stats[lossKey(i + 2)]!.forEach((v, e) => {
        assert.ok(Math.abs(v - one!.result.training_stats[lossKey(1)]![e]!) < 1e-3 * Math.max(1, v), `${label}, epoch ${e + 1} loss`);
      });
    }
    assert.ok(one!.result.explained_variance! > 0.5, `explained variance ${one!.result.explained_variance}`);
  });

  test('encodeSae on worker threads gives the codes of the single-thread encoder', async () => {
    const sae = runs[0]!.sae;
    const n = 500;
    const threaded = await encodeSae(sae, rows, n, { workers: 2 });
    const single = await encodeSae(sae, rows, n, { workers: 1 });
    assert.equal(threaded.length, n * sae.nLatents);
    assert.ok(maxDiff(threaded, single) < 1e-4, `max difference ${maxDiff(threaded, single)}`);
  });
});

test('two workers recover planted superposed features (MMCS ≥ 0.95)', async () => {
  const dim = 32;
  const data = plantedSuperposition({ rows: 20000, dim, features: 64, active: 3, offset: 0.3, seed: 11 });
  const out = await mkdtemp(join(tmpdir(), 'mechint-sae-par-'));
  try {
    const result = await runSaeAnalysis(rowsFromMatrix(data.rows, dim, 3000), { n_latents: 128, k: 4, epochs: 10, seed: 3, workers: 2 }, { layer: 'l', outputDir: out });
    const score = meanMaxCosineSimilarity(data.features, (await loadSae(result.weights_file!)).W_dec, dim);
    assert.ok(score >= 0.95, `MMCS ${score}`);
    assert.ok(result.explained_variance! > 0.85, `explained variance ${result.explained_variance}`);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});

test('the worker count is how an SAE is computed, not what it is: a result stored with 1 worker answers a request with 2', async () => {
  const { executeAnalyses } = await import('../src/analysis/executor.js');
  const { MemoryResultsStore } = await import('../src/analysis/results-store.js');
  const { matrixSource } = await import('../src/analysis/sources.js');
  const { MechIntConfig } = await import('../src/config.js');
  const { seededMatrix, tempDir } = await import('./helpers.js');
  const store = new MemoryResultsStore(await tempDir());
  const source = matrixSource({ h: { rows: seededMatrix(256, 8, 3), dim: 8 } }, 'h');
  const config = new MechIntConfig({ sampleLayers: ['h'], verbose: false });
  const run = (workers: number, extra: Record<string, unknown> = {}) =>
    executeAnalyses({ analyses: ['sae'], layers: ['h'], config, options: { sae: { epochs: 1, n_latents: 16, k: 2, workers, ...extra } } }, { source, store, persist: true, throwOnError: true });
  const first = await run(1);
  const second = await run(2);
  assert.equal(first.results[0]!.origin, 'computed');
  assert.equal(second.results[0]!.origin, 'stored');
  assert.equal(second.results[0]!.key, first.results[0]!.key);
  // Any option that changes the SAE still makes it another result.
  assert.notEqual((await run(2, { seed: 1 })).results[0]!.key, first.results[0]!.key);
});
