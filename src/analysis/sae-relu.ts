/**
 * ReLU + L1 sparse autoencoder (Anthropic, "Towards Monosemanticity" and its 2024 update):
 * z = ReLU(W_enc(x − b_dec) + b_enc), x̂ = W_dec z + b_dec,
 * loss = mean over rows of ‖x − x̂‖² + l1_coefficient · Σ_i z_i ‖W_dec,i‖.
 * The decoder is not constrained: the penalty carries its row norms, so shrinking a row cannot
 * buy a smaller penalty. Every latent can be active, so the products are dense; gradients are
 * written by hand with explicit transposes (transposed matMuls are slow on wasm).
 */
import { tf } from '../backend.js';
import {
  Adam, initTiedWeights, variableOf,
  type SaeArchitecture, type SaeGradients, type SaeHyper, type SaeParams, type SaeTrainer,
} from './sae-common.js';

/** Loss and hand-derived gradients of the ReLU+L1 SAE; call inside tf.tidy. Exported for the gradient check. */
export function reluLossAndGradients(
  p: Record<keyof SaeParams, tf.Tensor>, x: tf.Tensor2D, l1: number,
): { loss: tf.Scalar; z: tf.Tensor2D; grads: SaeGradients } {
  const B = x.shape[0];
  const xc = tf.sub(x, p.b_dec);
  const pre = tf.add(tf.matMul(xc, p.W_enc), p.b_enc);
  const z = tf.relu(pre) as tf.Tensor2D;
  const norms = tf.sqrt(tf.sum(tf.square(p.W_dec), 1)); // [L]
  const e = tf.sub(tf.add(tf.matMul(z, p.W_dec), p.b_dec), x);
  const zSum = tf.sum(z, 0); // [L]
  const loss = tf.add(tf.div(tf.sum(tf.square(e)), B), tf.mul(tf.sum(tf.mul(zSum, norms)), l1 / B)) as tf.Scalar;
  const g = tf.mul(e, 2 / B);
  const dz = tf.add(tf.matMul(g, tf.transpose(p.W_dec)), tf.mul(norms, l1 / B));
  const dpre = tf.mul(dz, tf.step(pre));
  const dWdec = tf.add(tf.matMul(tf.transpose(z), g), tf.mul(tf.reshape(tf.div(tf.mul(zSum, l1 / B), norms), [-1, 1]), p.W_dec));
  const dWenc = tf.matMul(tf.transpose(xc), dpre);
  const dbenc = tf.sum(dpre, 0);
  const dbdec = tf.sub(tf.sum(g, 0), tf.reshape(tf.matMul(p.W_enc, tf.reshape(dbenc, [-1, 1])), [-1]));
  return { loss, z, grads: { W_enc: dWenc, b_enc: dbenc, W_dec: dWdec, b_dec: dbdec } };
}

class ReluTrainer implements SaeTrainer {
  private readonly adam: Adam;
  private readonly lossSum = variableOf(() => tf.scalar(0));
  private readonly l0Sum = variableOf(() => tf.scalar(0));
  private rows = 0;

  constructor(private readonly p: SaeParams, private readonly hp: SaeHyper) {
    this.adam = new Adam([p.W_enc, p.b_enc, p.W_dec, p.b_dec], hp.lr);
  }

  step(batch: Float32Array, B: number): void {
    const { p, hp } = this;
    tf.tidy(() => {
      const x = tf.tensor2d(batch.subarray(0, B * hp.dim), [B, hp.dim]);
      const { loss, z, grads } = reluLossAndGradients(p, x, hp.l1Coefficient);
      this.adam.apply([grads.W_enc, grads.b_enc, grads.W_dec, grads.b_dec]);
      this.lossSum.assign(tf.add(this.lossSum, tf.mul(loss, B)));
      this.l0Sum.assign(tf.add(this.l0Sum, tf.sum(tf.step(z))));
    });
    this.rows += B;
  }

  takeMetrics(): { loss: number; l0: number; rows: number } {
    const out = { loss: (this.lossSum.dataSync() as Float32Array)[0]!, l0: (this.l0Sum.dataSync() as Float32Array)[0]!, rows: this.rows };
    tf.tidy(() => {
      this.lossSum.assign(tf.scalar(0));
      this.l0Sum.assign(tf.scalar(0));
    });
    this.rows = 0;
    return out;
  }

  dispose(): void {
    this.adam.dispose();
    this.lossSum.dispose();
    this.l0Sum.dispose();
  }
}

export const reluArchitecture: SaeArchitecture = {
  name: 'relu',
  // Small decoder rows at the start, as in the 2024 update, so early latents do not overshoot.
  init: (hp, rng) => initTiedWeights(hp, rng, 0.1),
  createTrainer: (params, hp) => new ReluTrainer(params, hp),
  encode(p, hp, rows, B) {
    const [z, err] = tf.tidy(() => {
      const x = tf.tensor2d(rows.subarray(0, B * hp.dim), [B, hp.dim]);
      const zz = tf.relu(tf.add(tf.matMul(tf.sub(x, p.b_dec), p.W_enc), p.b_enc));
      const xhat = tf.add(tf.matMul(zz, p.W_dec), p.b_dec);
      return [zz, tf.sum(tf.square(tf.sub(xhat, x)))];
    });
    const values = z!.dataSync() as Float32Array;
    const sqErr = (err!.dataSync() as Float32Array)[0]!;
    tf.dispose([z!, err!]);
    return { code: { kind: 'dense', values }, sqErr };
  },
};
