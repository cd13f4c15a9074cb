/**
 * TopK sparse autoencoder (Gao et al. 2024): z = ReLU(TopK(W_enc(x − b_dec) + b_enc)),
 * x̂ = W_dec z + b_dec, unit-norm decoder rows, optional AuxK loss on dead latents.
 *
 * Training runs on latent slices in worker threads (sae-slice.ts, sae-parallel.ts); what stays
 * here is the selection, the tfjs form of the loss and its gradients (the reference the slices'
 * loops are checked against) and a single-thread tfjs encoder.
 *
 * Speed: only the encoder product is dense. The k active latents per row are chosen in JS from
 * the pre-activations (reading them back on wasm is a memcpy; tf.topk took ~0.9 ms per 256×256
 * batch here, a third of a whole step), which also gives AuxK its dead latents for free; and
 * every other product — the decoder, its gradient, the encoder's weight gradient — runs on the
 * B·k active (row, latent) pairs with gatherND / scatterND: O(B·k·d) instead of O(B·L·d).
 */
import { tf } from '../backend.js';
import {
  initTiedWeights, readParams,
  type LatentCode, type SaeArchitecture, type SaeGradients, type SaeHyper, type SaeParams, type SaeParamValues, type SaeTrainer,
} from './sae-common.js';
import { defaultSaeWorkers, startTopK, type TopKRunner } from './sae-parallel.js';
import { sliceTopK } from './sae-slice-topk.js';

/**
 * Picks the `k` largest entries of each row of `pre` (`nRows × L`), writing ReLU'd values and
 * their latent indices (`nRows × k`). With `allowed`, only latents whose flag is 1 compete
 * (AuxK's dead latents). Ties go to the lower index. Returns the number of positive values.
 */
export function selectTopK(
  pre: Float32Array, nRows: number, L: number, k: number,
  values: Float32Array, indices: Int32Array, allowed?: Uint8Array,
): number {
  // One slice over all latents, then ReLU; fewer candidates than k (AuxK with few dead latents) pad with latent 0 at value 0.
  sliceTopK(pre, nRows, L, 0, k, values, indices, allowed);
  let active = 0;
  for (let i = 0; i < nRows * k; i++) {
    const v = values[i]!;
    if (indices[i]! < 0) indices[i] = 0;
    values[i] = v > 0 ? v : 0;
    if (v > 0) active++;
  }
  return active;
}

/** Active latents of a batch: ReLU'd values `[B, k]` and latent indices `[B, k]` (int32). */
export interface Selection {
  values: tf.Tensor2D;
  indices: tf.Tensor2D;
}

// gatherND, not tf.gather: on wasm gather took ~2.3 ms for these 1024 rows, gatherND ~0.2 ms.
function sparseDecode(W_dec: tf.Tensor, sel: Selection, B: number, k: number, d: number): { Wg: tf.Tensor3D; out: tf.Tensor2D } {
  const Wg = tf.reshape(tf.gatherND(W_dec, tf.reshape(sel.indices, [B * k, 1])), [B, k, d]) as tf.Tensor3D;
  const out = tf.sum(tf.mul(Wg, tf.reshape(sel.values, [B, k, 1])), 1) as tf.Tensor2D;
  return { Wg, out };
}

/**
 * The loss (mean over rows of ‖x − x̂‖², plus auxCoefficient · mean ‖e − ê‖² with e = x − x̂ held
 * fixed) and its gradients, derived by hand for the given selections. Call inside tf.tidy.
 * Exported for the gradient check against tfjs autodiff.
 */
export function topkLossAndGradients(
  p: Record<keyof SaeParams, tf.Tensor>, x: tf.Tensor2D, sel: Selection,
  aux?: { sel: Selection; coefficient: number },
): { loss: tf.Scalar; xhat: tf.Tensor2D; grads: SaeGradients } {
  const [B, d] = x.shape;
  const k = sel.values.shape[1];
  const L = p.W_dec.shape[0]!;
  const xc = tf.sub(x, p.b_dec);
  const { Wg, out } = sparseDecode(p.W_dec, sel, B, k, d);
  const xhat = tf.add(out, p.b_dec) as tf.Tensor2D;
  const e = tf.sub(xhat, x);
  let loss = tf.div(tf.sum(tf.square(e)), B) as tf.Scalar;
  const g = tf.mul(e, 2 / B);
  const g3 = tf.reshape(g, [B, 1, d]);
  let dvals = tf.mul(tf.sum(tf.mul(Wg, g3), 2), tf.step(sel.values));
  let dWdec = tf.scatterND(tf.reshape(sel.indices, [B * k, 1]), tf.reshape(tf.mul(tf.reshape(sel.values, [B, k, 1]), g3), [B * k, d]), [L, d]);
  let idxAll: tf.Tensor = sel.indices;
  if (aux !== undefined) {
    const ka = aux.sel.values.shape[1];
    const a = sparseDecode(p.W_dec, aux.sel, B, ka, d);
    const ea = tf.add(a.out, e); // ê − (x − x̂)
    loss = tf.add(loss, tf.mul(tf.div(tf.sum(tf.square(ea)), B), aux.coefficient));
    const ga3 = tf.reshape(tf.mul(ea, (2 * aux.coefficient) / B), [B, 1, d]);
    const dva = tf.mul(tf.sum(tf.mul(a.Wg, ga3), 2), tf.step(aux.sel.values));
    dWdec = tf.add(dWdec, tf.scatterND(tf.reshape(aux.sel.indices, [B * ka, 1]), tf.reshape(tf.mul(tf.reshape(aux.sel.values, [B, ka, 1]), ga3), [B * ka, d]), [L, d]));
    dvals = tf.concat([dvals, dva], 1);
    idxAll = tf.concat([sel.indices, aux.sel.indices], 1);
  }
  // Encoder side, on the active pairs only: dW_enc[:, i] = Σ_b dpre[b, i] · xc[b].
  const kk = idxAll.shape[1]!;
  const idxCol = tf.reshape(idxAll, [B * kk, 1]);
  const rows = tf.reshape(tf.mul(tf.reshape(dvals, [B, kk, 1]), tf.reshape(xc, [B, 1, d])), [B * kk, d]);
  const dWenc = tf.transpose(tf.scatterND(idxCol, rows, [L, d]));
  const dbenc = tf.scatterND(idxCol, tf.reshape(dvals, [B * kk]), [L]);
  // b_dec enters twice: added to x̂ and subtracted before the encoder.
  const dbdec = tf.sub(tf.sum(g, 0), tf.reshape(tf.matMul(p.W_enc, tf.reshape(dbenc, [L, 1])), [d]));
  return { loss, xhat, grads: { W_enc: dWenc, b_enc: dbenc, W_dec: dWdec, b_dec: dbdec } };
}

/**
 * Trains on latent slices in worker threads (sae-parallel.ts, sae-slice.ts). The all-tfjs trainer
 * this replaced spent more per step on dense Adam, renormalisation and [L, d] scatters than on
 * the encoder product, on one core.
 */
class SlicedTopKTrainer implements SaeTrainer {
  private rows = 0;

  constructor(private readonly runner: TopKRunner, private readonly k: number) {}

  step(batch: Float32Array, B: number): void {
    this.runner.step(batch, B);
    this.rows += B;
  }

  takeMetrics(): { loss: number; l0: number; rows: number } {
    const m = this.runner.takeMetrics();
    const out = { loss: m.loss, l0: m.l0, rows: this.rows };
    this.rows = 0;
    return out;
  }

  values(): SaeParamValues {
    return this.runner.values();
  }

  encode(rows: Float32Array, nRows: number): { code: LatentCode; sqErr: number } {
    const { values, indices, sqErr } = this.runner.encode(rows, nRows);
    return { code: { kind: 'sparse', values, indices, perRow: this.k }, sqErr };
  }

  dispose(): Promise<void> {
    return this.runner.dispose();
  }
}

/** Starts the TopK workers on `init` (SAELens layout, normalised space). */
export async function startTopKTrainer(init: SaeParamValues, hp: SaeHyper): Promise<SaeTrainer> {
  const runner = await startTopK(init, {
    dim: hp.dim, nLatents: hp.nLatents, k: hp.k, auxK: hp.auxK, auxCoefficient: hp.auxCoefficient,
    deadStepsThreshold: hp.deadStepsThreshold, lr: hp.lr, maxRows: hp.maxRows ?? 4096,
  }, hp.workers ?? defaultSaeWorkers());
  return new SlicedTopKTrainer(runner, hp.k);
}

export const topkArchitecture: SaeArchitecture = {
  name: 'topk',
  init: (hp, rng) => initTiedWeights(hp, rng, 1),
  createTrainer: (params, hp) => startTopKTrainer(readParams(params), hp),
  encode(p, hp, rows, B) {
    const { dim: d, nLatents: L, k } = hp;
    const values = new Float32Array(B * k);
    const indices = new Int32Array(B * k);
    const x = tf.tensor2d(rows.subarray(0, B * d), [B, d]);
    const pre = tf.tidy(() => tf.fused.matMul({ a: tf.sub(x, p.b_dec), b: p.W_enc, bias: p.b_enc }));
    selectTopK(pre.dataSync() as Float32Array, B, L, k, values, indices);
    const err = tf.tidy(() => {
      const sel = { values: tf.tensor2d(values, [B, k]), indices: tf.tensor2d(indices, [B, k], 'int32') };
      return tf.sum(tf.square(tf.sub(tf.add(sparseDecode(p.W_dec, sel, B, k, d).out, p.b_dec), x)));
    });
    const sqErr = (err.dataSync() as Float32Array)[0]!;
    tf.dispose([x, pre, err]);
    const code: LatentCode = { kind: 'sparse', values, indices, perRow: k };
    return { code, sqErr };
  },
};
