/**
 * What the SAE architectures share: the parameter layout, the hyper-parameters a trainer sees,
 * the registry of architectures by name, a hand-written Adam, and decoder initialisation.
 *
 * Layout (the SAELens convention, so weights can be used from Python as they are):
 *   W_enc [d, L], b_enc [L], W_dec [L, d] (row i = latent i's direction), b_dec [d];
 *   pre = (x − b_dec) · W_enc + b_enc,  z = act(pre),  x̂ = z · W_dec + b_dec.
 * Keeping W_enc as [d, L] makes the one dense product a plain matMul: transposed matMuls are
 * 8–17× slower on the wasm backend (see PERFORMANCE.md).
 */
import { tf } from '../backend.js';
import type { Rng } from '../random.js';

export type SaeArchitectureName = 'topk' | 'relu';

/** Parameters as plain arrays (what is saved, loaded and initialised). */
export interface SaeParamValues {
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
}

export interface SaeParams {
  W_enc: tf.Variable;
  b_enc: tf.Variable;
  W_dec: tf.Variable;
  b_dec: tf.Variable;
}

export type SaeGradients = Record<keyof SaeParams, tf.Tensor>;

/** Hyper-parameters as the architectures see them (already validated). */
export interface SaeHyper {
  dim: number;
  nLatents: number;
  k: number;
  l1Coefficient: number;
  lr: number;
  auxK: number;
  auxCoefficient: number;
  deadStepsThreshold: number;
  /** Worker threads (TopK): 1 trains in the calling thread; default every core. */
  workers?: number;
  /** Largest batch a step gets (sizes the TopK workers' shared buffers); default 4096. */
  maxRows?: number;
}

/** The latents of a block of rows: the k active ones per row (TopK) or all of them (ReLU). */
export type LatentCode =
  | { kind: 'sparse'; values: Float32Array; indices: Int32Array; perRow: number }
  | { kind: 'dense'; values: Float32Array };

/** One optimisation step's running sums, read back once per epoch. */
export interface StepMetrics {
  loss: number;
  l0: number;
  rows: number;
}

export interface SaeTrainer {
  /** One step on `nRows` rows of the (normalised) batch, row-major `nRows × dim`; the batch may be reused once it returns. */
  step(batch: Float32Array, nRows: number): void;
  /** Sums since the last call (loss × rows, active latents, rows), then resets them. */
  takeMetrics(): StepMetrics;
  /**
   * A trainer that keeps its own copy of the parameters (the TopK workers) returns them here,
   * and encodes with them; otherwise the SaeParams variables it was given are the truth.
   */
  values?(): SaeParamValues;
  encode?(rows: Float32Array, nRows: number): { code: LatentCode; sqErr: number };
  dispose(): void | Promise<void>;
}

export interface SaeArchitecture {
  readonly name: SaeArchitectureName;
  /** Initial parameters in the normalised space (b_dec = 0 there is the data mean). */
  init(hp: SaeHyper, rng: Rng): SaeParamValues;
  createTrainer(params: SaeParams, hp: SaeHyper): SaeTrainer | Promise<SaeTrainer>;
  /** Encodes `nRows` normalised rows; returns the code and the sum of squared reconstruction errors. */
  encode(params: SaeParams, hp: SaeHyper, rows: Float32Array, nRows: number): { code: LatentCode; sqErr: number };
}

/** Decoder rows in random directions, of norm `rowNorm`; the encoder starts as their transpose. */
export function initTiedWeights(hp: SaeHyper, rng: Rng, rowNorm: number): SaeParamValues {
  const { dim: d, nLatents: L } = hp;
  const W_dec = new Float32Array(L * d);
  for (let i = 0; i < L; i++) {
    let norm = 0;
    for (let j = 0; j < d; j++) {
      const v = rng.normal();
      W_dec[i * d + j] = v;
      norm += v * v;
    }
    const s = rowNorm / Math.sqrt(norm);
    for (let j = 0; j < d; j++) W_dec[i * d + j]! *= s;
  }
  const W_enc = new Float32Array(d * L);
  for (let i = 0; i < L; i++) for (let j = 0; j < d; j++) W_enc[j * L + i] = W_dec[i * d + j]!;
  return { W_enc, b_enc: new Float32Array(L), W_dec, b_dec: new Float32Array(d) };
}

/**
 * A variable holding `make()`'s value. The initial tensor is disposed: a variable shares its
 * data but not its Tensor object, which would otherwise outlive the variable.
 */
export function variableOf(make: () => tf.Tensor): tf.Variable {
  return tf.tidy(() => tf.variable(make(), false));
}

export function createParams(v: SaeParamValues, hp: SaeHyper): SaeParams {
  const { dim: d, nLatents: L } = hp;
  return {
    W_enc: variableOf(() => tf.tensor2d(v.W_enc, [d, L])),
    b_enc: variableOf(() => tf.tensor1d(v.b_enc)),
    W_dec: variableOf(() => tf.tensor2d(v.W_dec, [L, d])),
    b_dec: variableOf(() => tf.tensor1d(v.b_dec)),
  };
}

export function readParams(p: SaeParams): SaeParamValues {
  return {
    W_enc: p.W_enc.dataSync() as Float32Array,
    b_enc: p.b_enc.dataSync() as Float32Array,
    W_dec: p.W_dec.dataSync() as Float32Array,
    b_dec: p.b_dec.dataSync() as Float32Array,
  };
}

export function disposeParams(p: SaeParams): void {
  for (const v of Object.values(p)) v.dispose();
}

/**
 * Adam (Kingma & Ba) applied to our own gradients, the moments updated in place. Written out
 * because it measured faster than tf.train.adam's applyGradients on the bench's shapes
 * (~0.35 vs ~0.48 ms per step): the bias correction is one JS scalar per step.
 */
export class Adam {
  private readonly m: tf.Variable[];
  private readonly v: tf.Variable[];
  private t = 0;
  private readonly b1: tf.Scalar;
  private readonly b2: tf.Scalar;
  private readonly c1: tf.Scalar;
  private readonly c2: tf.Scalar;
  private readonly eps: tf.Scalar;

  constructor(private readonly params: tf.Variable[], private readonly lr: number, private readonly beta1 = 0.9, private readonly beta2 = 0.999, epsilon = 1e-8) {
    this.m = params.map((p) => variableOf(() => tf.zerosLike(p)));
    this.v = params.map((p) => variableOf(() => tf.zerosLike(p)));
    this.b1 = tf.keep(tf.scalar(beta1));
    this.b2 = tf.keep(tf.scalar(beta2));
    this.c1 = tf.keep(tf.scalar(1 - beta1));
    this.c2 = tf.keep(tf.scalar(1 - beta2));
    this.eps = tf.keep(tf.scalar(epsilon));
  }

  /** Call inside tf.tidy; `grads` in the order of the params. */
  apply(grads: tf.Tensor[]): void {
    this.t += 1;
    // Bias correction folded into the step size (the paper's efficient form of Algorithm 1).
    const corr = Math.sqrt(1 - this.beta2 ** this.t) / (1 - this.beta1 ** this.t);
    const lrT = tf.scalar(-this.lr * corr);
    for (let i = 0; i < this.params.length; i++) {
      const g = grads[i]!;
      const m = this.m[i]!;
      const v = this.v[i]!;
      m.assign(tf.add(tf.mul(m, this.b1), tf.mul(g, this.c1)));
      v.assign(tf.add(tf.mul(v, this.b2), tf.mul(tf.square(g), this.c2)));
      const p = this.params[i]!;
      p.assign(tf.add(p, tf.mul(lrT, tf.div(m, tf.add(tf.sqrt(v), this.eps)))));
    }
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v, this.b1, this.b2, this.c1, this.c2, this.eps]) t.dispose();
  }
}
