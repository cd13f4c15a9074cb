import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initBackend, tf } from '../src/backend.js';
import { ConfigError } from '../src/errors.js';
import { readSafetensorsHeader } from '../src/formats/safetensors.js';
import { createRng } from '../src/random.js';
import { rowsFromMatrix, type RowSource } from '../src/storage/rows.js';
import { runSaeAnalysis, type SaeResult } from '../src/analysis/sae.js';
import { reluLossAndGradients } from '../src/analysis/sae-relu.js';
import { selectTopK, topkLossAndGradients } from '../src/analysis/sae-topk.js';
import { decodeSae, encodeSae, loadSae } from '../src/analysis/sae-weights.js';
import { meanMaxCosineSimilarity } from '../src/analysis/sae-metrics.js';
import { plantedSuperposition } from '../src/demo/superposition.js';

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

const DIM = 32;
const data = plantedSuperposition({ rows: 20000, dim: DIM, features: 64, active: 3, offset: 0.3, seed: 11 });
const source: RowSource = rowsFromMatrix(data.rows, DIM, 3000, 'activations_shard_000000_step_200.safetensors');
const OPTIONS = { n_latents: 128, k: 4, epochs: 10, seed: 3 } as const;
let dir: string;
let topk: SaeResult;

before(async () => {
  await initBackend();
  dir = await mkdtemp(join(tmpdir(), 'mechint-sae-'));
  topk = await runSaeAnalysis(source, OPTIONS, { layer: 'blocks.3', outputDir: dir });
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('TopK SAE', () => {
  test('recovers planted superposed features (MMCS ≥ 0.95) with L0 equal to k', async () => {
    const sae = await loadSae(topk.weights_file!);
    const score = meanMaxCosineSimilarity(data.features, sae.W_dec, DIM);
    assert.ok(score >= 0.95, `MMCS ${score}`);
    assert.ok(Math.abs(topk.final_l0 - 4) < 0.05, `final_l0 ${topk.final_l0}`);
    assert.ok(topk.explained_variance! > 0.85, `explained variance ${topk.explained_variance}`);
  });

  test('reports per-epoch training stats under the layer name and JSON-safe results', () => {
    assert.equal(topk.training_stats['blocks.3/loss']!.length, 10);
    assert.equal(topk.training_stats['blocks.3/l0_sparsity']!.length, 10);
    const losses = topk.training_stats['blocks.3/loss']!;
    assert.ok(losses.at(-1)! < losses[0]!, 'loss decreases');
    assert.equal(topk.final_loss, losses.at(-1));
    assert.equal(topk.k, 4);
    assert.equal(topk.n_latents, 128);
    assert.equal(topk.latent_frequencies.length, 128);
    assert.ok(topk.dead_fraction >= 0 && topk.dead_fraction < 0.5);
    assert.deepEqual(JSON.parse(JSON.stringify(topk)), topk);
  });

  test('lists the top-activating rows of the most used latents with their shard and row', () => {
    assert.equal(topk.top_latents.length, 10);
    const first = topk.top_latents[0]!;
    assert.ok(first.frequency >= topk.top_latents[1]!.frequency);
    assert.equal(first.top_rows.length, 5);
    for (const r of first.top_rows) {
      assert.equal(r.shard, 'activations_shard_000000_step_200.safetensors');
      assert.ok(Number.isInteger(r.row) && r.row >= 0 && r.row < 20000);
    }
    assert.ok(first.top_rows[0]!.value >= first.top_rows[4]!.value);
  });

  test('the same seed gives the same result, and no tensors are left behind', async () => {
    const tensorsBefore = tf.memory().numTensors;
    const again = await runSaeAnalysis(source, OPTIONS, { layer: 'blocks.3' });
    assert.equal(tf.memory().numTensors, tensorsBefore);
    const { weights_file: _, ...a } = topk;
    assert.deepEqual(again, a);
  });

  test('saves W_enc, b_enc, W_dec, b_dec that load back and encode raw rows as training did', async () => {
    assert.equal(topk.weights_file, join(dir, 'sae', 'blocks.3.safetensors'));
    const header = await readSafetensorsHeader(topk.weights_file!);
    const shapes = Object.fromEntries(Object.entries(header.tensors).map(([n, e]) => [n, e.shape]));
    assert.deepEqual(shapes, { W_enc: [DIM, 128], b_enc: [128], W_dec: [128, DIM], b_dec: [DIM] });
    assert.equal(header.metadata.architecture, 'topk');
    const sae = await loadSae(topk.weights_file!);
    assert.equal(sae.k, 4);
    for (let i = 0; i < 128; i++) {
      const norm = Math.hypot(...sae.W_dec.subarray(i * DIM, (i + 1) * DIM));
      assert.ok(Math.abs(norm - 1) < 1e-4, `decoder row ${i} has norm ${norm}`);
    }
    const n = 2000;
    const z = await encodeSae(sae, data.rows.subarray(0, n * DIM));
    let active = 0;
    for (const v of z) if (v > 0) active++;
    assert.ok(Math.abs(active / n - 4) < 0.1);
    const xhat = await decodeSae(sae, z);
    let err = 0;
    let dev = 0;
    for (let i = 0; i < n * DIM; i++) {
      err += (xhat[i]! - data.rows[i]!) ** 2;
      dev += (data.rows[i]! - 0.3) ** 2; // close to the mean
    }
    assert.ok(1 - err / dev > 0.8, `explained variance through the saved weights ${1 - err / dev}`);
  });

  test('trains with a shuffle buffer much smaller than the data', async () => {
    const res = await runSaeAnalysis(source, { ...OPTIONS, epochs: 3, shuffle_buffer_rows: 500 });
    assert.equal(res.n_rows, 20000);
    assert.ok(res.explained_variance! > 0.5, `explained variance ${res.explained_variance}`);
  });
});

describe('ReLU + L1 SAE', () => {
  test('trains to a reasonable explained variance with sparse codes', async () => {
    const res = await runSaeAnalysis(source, { architecture: 'relu', n_latents: 128, epochs: 6, seed: 1 }, { layer: 'l' });
    assert.equal(res.architecture, 'relu');
    assert.equal(res.k, null);
    assert.ok(res.explained_variance! > 0.8, `explained variance ${res.explained_variance}`);
    assert.ok(res.final_l0 < 40, `final_l0 ${res.final_l0}`);
    assert.equal(res.training_stats['l/loss']!.length, 6);
  });
});

describe('hand-written gradients', () => {
  const B = 7;
  const d = 6;
  const L = 10;
  const rng = createRng(5);
  const rand = (shape: number[], s = 1) => tf.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => s * rng.normal()), shape);

  function params() {
    return { W_enc: rand([d, L], 0.5), b_enc: rand([L], 0.1), W_dec: rand([L, d], 0.5), b_dec: rand([d], 0.1) };
  }

  test('match tfjs autodiff for ReLU + L1 to 1e-4', () => {
    tf.tidy(() => {
      const p = params();
      const x = rand([B, d]) as tf.Tensor2D;
      const l1 = 0.3;
      const mine = reluLossAndGradients(p, x, l1);
      const f = (We: tf.Tensor, be: tf.Tensor, Wd: tf.Tensor, bd: tf.Tensor) => {
        const z = tf.relu(tf.add(tf.matMul(tf.sub(x, bd), We), be));
        const e = tf.sub(tf.add(tf.matMul(z, Wd), bd), x);
        const norms = tf.sqrt(tf.sum(tf.square(Wd), 1));
        return tf.add(tf.div(tf.sum(tf.square(e)), B), tf.mul(tf.sum(tf.mul(tf.sum(z, 0), norms)), l1 / B)) as tf.Scalar;
      };
      const auto = tf.grads(f)([p.W_enc, p.b_enc, p.W_dec, p.b_dec]);
      assert.ok(maxAbsDiff(mine.loss, f(p.W_enc, p.b_enc, p.W_dec, p.b_dec)) < 1e-4);
      ['W_enc', 'b_enc', 'W_dec', 'b_dec'].forEach((name, i) => {
        const diff = maxAbsDiff(mine.grads[name as keyof typeof mine.grads], auto[i]!);
        assert.ok(diff < 1e-4, `${name}: max difference ${diff}`);
      });
    });
  });

  test('match tfjs autodiff for TopK (selection fixed) with AuxK to 1e-4', () => {
    tf.tidy(() => {
      const p = params();
      const x = rand([B, d]) as tf.Tensor2D;
      const k = 3;
      const ka = 2;
      const pre = tf.add(tf.matMul(tf.sub(x, p.b_dec), p.W_enc), p.b_enc);
      const preData = pre.dataSync() as Float32Array;
      const v = new Float32Array(B * k);
      const idx = new Int32Array(B * k);
      selectTopK(preData, B, L, k, v, idx);
      // "Dead" latents for AuxK: a fixed set, larger than ka so no row needs padding.
      const dead = Uint8Array.from({ length: L }, (_, i) => (i >= 6 ? 1 : 0));
      const va = new Float32Array(B * ka);
      const ia = new Int32Array(B * ka);
      selectTopK(preData, B, L, ka, va, ia, dead);
      const sel = { values: tf.tensor2d(v, [B, k]), indices: tf.tensor2d(idx, [B, k], 'int32') };
      const auxSel = { values: tf.tensor2d(va, [B, ka]), indices: tf.tensor2d(ia, [B, ka], 'int32') };
      const mask = (ind: Int32Array, per: number) => {
        const m = new Float32Array(B * L);
        ind.forEach((i, n) => { m[Math.floor(n / per) * L + i] = 1; });
        return tf.tensor2d(m, [B, L]);
      };
      const M = mask(idx, k);
      const Ma = mask(ia, ka);
      const alpha = 1 / 32;
      const mine = topkLossAndGradients(p, x, sel, { sel: auxSel, coefficient: alpha });
      const target = tf.sub(x, mine.xhat); // AuxK's residual is a constant
      const f = (We: tf.Tensor, be: tf.Tensor, Wd: tf.Tensor, bd: tf.Tensor) => {
        const act = tf.relu(tf.add(tf.matMul(tf.sub(x, bd), We), be));
        const e = tf.sub(tf.add(tf.matMul(tf.mul(act, M), Wd), bd), x);
        const ea = tf.sub(tf.matMul(tf.mul(act, Ma), Wd), target);
        return tf.add(tf.div(tf.sum(tf.square(e)), B), tf.mul(tf.div(tf.sum(tf.square(ea)), B), alpha)) as tf.Scalar;
      };
      const auto = tf.grads(f)([p.W_enc, p.b_enc, p.W_dec, p.b_dec]);
      assert.ok(maxAbsDiff(mine.loss, f(p.W_enc, p.b_enc, p.W_dec, p.b_dec)) < 1e-4);
      ['W_enc', 'b_enc', 'W_dec', 'b_dec'].forEach((name, i) => {
        const diff = maxAbsDiff(mine.grads[name as keyof typeof mine.grads], auto[i]!);
        assert.ok(diff < 1e-4, `${name}: max difference ${diff}`);
      });
    });
  });
});

describe('options', () => {
  test('rejects bad values with a ConfigError naming the option, the value and the range', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ k: 0 }, /`k`.*>= 1.*`0`/],
      [{ k: 129 }, /`k`.*<= n_latents \(128\).*`129`/],
      [{ n_latents: 2.5 }, /`n_latents`.*`2.5`/],
      [{ architecture: 'gated' }, /`architecture`.*topk, relu.*`gated`/],
      [{ lr: -1 }, /`lr`.*`-1`/],
      [{ batch_size: 0 }, /`batch_size`/],
      [{ normalise: 'scale' }, /Unknown SAE option `normalise`/],
      [{ n_latents: 64, nLatents: 32 }, /given twice/],
    ];
    for (const [opts, message] of cases) {
      await assert.rejects(runSaeAnalysis(source, { n_latents: 128, ...opts }), (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match((err as Error).message, message);
        return true;
      });
    }
  });
});

test('each top latent carries an activation histogram whose counts are its active rows', async () => {
  const rng = createRng(5);
  const rows = Float32Array.from({ length: 2000 * 8 }, () => rng.normal());
  const res = await runSaeAnalysis(rowsFromMatrix(rows, 8, 300), { k: 2, n_latents: 16, epochs: 1, batch_size: 64, seed: 1 }, { layer: 'h' });
  assert.ok(res.top_latents.length > 0);
  for (const t of res.top_latents) {
    const h = t.activation_histogram;
    assert.equal(h.bin_edges.length, h.counts.length + 1);
    assert.ok(h.bin_edges.every((e, i) => i === 0 || e >= h.bin_edges[i - 1]!), 'edges ascend');
    const active = h.counts.reduce((a, b) => a + b, 0);
    assert.equal(active, Math.round(t.frequency * res.n_rows), `latent ${t.latent}`);
    for (const r of t.top_rows) assert.ok(r.value <= h.bin_edges.at(-1)! + 1e-6);
  }
});
