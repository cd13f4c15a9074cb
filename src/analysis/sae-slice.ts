/**
 * One slice of a TopK SAE's latents and the work on it: what a worker thread runs (or the main
 * thread, for one slice). The slice's parameters, gradients and Adam moments live in this
 * thread's kernel memory (sae-kernels.ts). tfjs (wasm) runs only the dense encoder product,
 * W_enc[slice] · (x − b_dec)ᵀ, and the few [B, d] ops of the residuals; the B·k active
 * (row, latent) pairs (partial decode, gradients) and the fused Adam pass are SIMD kernel
 * calls, O(B·k·d / S) and O(d·L / S) per slice. (Measured here: plain JS loops ~5 ns per
 * multiply-add; tfjs gatherND / scatterND / broadcast kernels ~1 ns per element and pass; the
 * kernels ~0.3–0.5 ns.)
 *
 * A training step, for slice s of S (each `|` is a barrier of the S threads):
 *   1. the slice's pre-activations and its top-k per row                                  |
 *   2. merge the S lists (every slice, identically); dead latents; the slice's AuxK top-k
 *      (with a barrier only when AuxK has dead latents) and its merge; the partial decode   |
 *   3. x̂ = Σ partials + b_dec, e, g = 2e/B (every slice, identically); the slice's gradients
 *      from its pairs, Adam, renormalised decoder rows; its part of b_dec's gradient         |
 *   4. b_dec's gradient from the per-slice partials, Adam on b_dec (every slice, identically).
 * Every slice sees the same merged selection, residuals and b_dec, so the result does not depend
 * on S up to the rounding of the partial sums.
 */
import { tf } from '../backend.js';
import { createKernels, type Kernels } from './sae-kernels.js';
import { barrier, CTL, CMD, sliceStart, type SharedConfig, type SharedViews } from './sae-parallel-shared.js';
import { mergeTopK, sliceTopKT } from './sae-slice-topk.js';

const B1 = 0.9;
const B2 = 0.999;
const EPS = 1e-8;
/** Rows per encoder product: bounds the wasm heap whatever the batch. */
const MATMUL_ROWS = 4096;

/** The active (row, latent) pairs of one slice: `rows` index the gradient rows, `xRows` the input rows. */
interface Pairs {
  n: number;
  rows: Int32Array;
  xRows: Int32Array;
  lat: Int32Array;
  vals: Float32Array;
}

/** Raw gradients of the last step (before the decoder's tangent projection), for the gradient check. */
export interface SliceGradients {
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  loss: number;
  selV: Float32Array;
  selI: Int32Array;
  auxV: Float32Array;
  auxI: Int32Array;
  ka: number;
}

/** `out[q·rows + i] = src[at + i·cols + q]`: a `rows × cols` block transposed, in 32 × 32 tiles. */
function transposeInto(src: Float32Array, at: number, rows: number, cols: number, out: Float32Array): void {
  const T = 32;
  for (let i0 = 0; i0 < rows; i0 += T) {
    const i1 = Math.min(rows, i0 + T);
    for (let q0 = 0; q0 < cols; q0 += T) {
      const q1 = Math.min(cols, q0 + T);
      for (let i = i0; i < i1; i++) {
        const o = at + i * cols;
        for (let q = q0; q < q1; q++) out[q * rows + i] = src[o + q]!;
      }
    }
  }
}

export class SliceEngine {
  readonly s0: number;
  readonly s1: number;
  readonly Ls: number;
  private readonly d: number;
  private readonly L: number;
  private readonly S: number;
  private pre = new Float32Array(0);
  private readonly selV: Float32Array;
  private readonly selI: Int32Array;
  private readonly auxV: Float32Array;
  private readonly auxI: Int32Array;
  private ka = 0;
  private readonly bdec: Float32Array;
  private readonly mBdec: Float64Array;
  private readonly vBdec: Float64Array;
  private readonly lastActive: Int32Array;
  private readonly dead: Uint8Array;
  private t = 0;
  /**
   * SIMD kernels and their memory (float offsets): the slice's parameters W_dec `[Ls, d]`,
   * W_enc transposed `[Ls, d]` (latent-major like its gradient; transposed for the matMul) and
   * b_enc, their gradients and Adam moments, then x, ∂loss/∂x̂, a partial decode, b_dec, a d-vector.
   */
  private readonly kx: Kernels;
  private readonly oWd: number;
  private readonly oGd: number;
  private readonly oMd: number;
  private readonly oVd: number;
  private readonly oWe: number;
  private readonly oGe: number;
  private readonly oMe: number;
  private readonly oVe: number;
  private readonly oBe: number;
  private readonly oGbe: number;
  private readonly oMbe: number;
  private readonly oVbe: number;
  private readonly oX: number;
  private readonly oG: number;
  private readonly oOut: number;
  private readonly oBd: number;
  private readonly oPb: number;
  private xT = new Float32Array(0);
  /** Set by the gradient check: keep the last step's gradients. */
  keepGradients = false;
  lastGradients?: SliceGradients;

  constructor(private readonly sh: SharedViews, private readonly c: SharedConfig, private readonly s: number) {
    const { dim: d, nLatents: L, slices: S, maxRows: B, k, auxK } = c;
    this.d = d;
    this.L = L;
    this.S = S;
    this.s0 = sliceStart(L, S, s);
    this.s1 = sliceStart(L, S, s + 1);
    const Ls = (this.Ls = this.s1 - this.s0);
    this.selV = new Float32Array(B * k);
    this.selI = new Int32Array(B * k);
    this.auxV = new Float32Array(B * auxK);
    this.auxI = new Int32Array(B * auxK);
    this.bdec = Float32Array.from(sh.b_dec);
    this.mBdec = new Float64Array(d);
    this.vBdec = new Float64Array(d);
    this.lastActive = new Int32Array(L);
    this.dead = new Uint8Array(L);
    const n = Ls * d;
    // Vectors start on 16-byte boundaries (multiples of 4 floats) where the sizes allow.
    const up = (v: number) => Math.ceil(v / 4) * 4;
    [this.oWd, this.oGd, this.oMd, this.oVd, this.oWe, this.oGe, this.oMe, this.oVe] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => i * up(n)) as [number, number, number, number, number, number, number, number];
    const lsUp = up(Ls);
    this.oBe = 8 * up(n);
    [this.oGbe, this.oMbe, this.oVbe] = [1, 2, 3].map((i) => this.oBe + i * lsUp) as [number, number, number];
    this.oX = this.oBe + 4 * lsUp;
    this.oG = this.oX + up(B * d);
    this.oOut = this.oG + up(2 * B * d);
    this.oBd = this.oOut + up(B * d);
    this.oPb = this.oBd + up(d);
    this.kx = createKernels(this.oPb + up(d));
    const f = this.kx.f32;
    f.set(sh.W_dec.subarray(d * this.s0, d * this.s1), this.oWd);
    for (let q = 0; q < d; q++) for (let i = 0; i < Ls; i++) f[this.oWe + i * d + q] = sh.W_enc[d * this.s0 + q * Ls + i]!;
    f.set(sh.b_enc.subarray(this.s0, this.s1), this.oBe);
  }

  private barrier(): void {
    barrier(this.sh.ctl, this.S);
  }

  /** Runs the command in `CTL.CMD` on `CTL.NROWS` rows of input slot `CTL.SLOT`. */
  run(): void {
    const { ctl } = this.sh;
    const cmd = Atomics.load(ctl, CTL.CMD);
    const B = Atomics.load(ctl, CTL.NROWS);
    const slot = Atomics.load(ctl, CTL.SLOT);
    if (cmd === CMD.VALUES) return this.writeValues();
    const x = this.sh.x.subarray(slot * this.c.maxRows * this.d, slot * this.c.maxRows * this.d + B * this.d);
    if (cmd === CMD.STEP) this.step(x, B);
    else this.encode(x, B);
  }

  dispose(): void {
    // Nothing in tfjs outlives a command; the kernel memory goes with this object.
  }

  /**
   * Phase 1: this slice's pre-activations of `x`, latent-major (`pre` holds one `[Ls, n]` block
   * per chunk of ≤ MATMUL_ROWS rows, kept for AuxK), and its top-k per row, to the shared lists.
   * W_enc · (x − b_dec)ᵀ uses the latent-major W_enc as it is; tfjs-wasm re-packs the right-hand
   * operand of every new product, and xᵀ is d·B floats where W_enc is d·Ls (measured 54–75 ms
   * against 81–112 ms for (x − b_dec) · W_enc with a fresh W_enc, at B = 256, Ls = 4096).
   */
  private encodeSlice(x: Float32Array, B: number): void {
    const { d, Ls, c, sh } = this;
    if (this.pre.length < B * Ls) this.pre = new Float32Array(B * Ls);
    const f = this.kx.f32;
    const [bd, We, be] = tf.tidy(() => [
      tf.tensor2d(this.bdec, [d, 1]),
      tf.tensor2d(f.subarray(this.oWe, this.oWe + Ls * d), [Ls, d]),
      tf.tensor2d(f.subarray(this.oBe, this.oBe + Ls), [Ls, 1]),
    ]);
    try {
      for (let r0 = 0; r0 < B; r0 += MATMUL_ROWS) {
        const n = Math.min(MATMUL_ROWS, B - r0);
        if (this.xT.length < n * d) this.xT = new Float32Array(n * d);
        transposeInto(x, r0 * d, n, d, this.xT);
        const out = tf.tidy(() => tf.add(tf.matMul(We!, tf.sub(tf.tensor2d(this.xT.subarray(0, n * d), [d, n]), bd!)), be!));
        // Read outside tidy (see PERFORMANCE.md).
        this.pre.set(out.dataSync() as Float32Array, r0 * Ls);
        out.dispose();
      }
    } finally {
      tf.dispose([bd!, We!, be!]);
    }
    const stride = c.maxRows * c.k;
    this.topKOfPre(B, c.k, sh.topV.subarray(this.s * stride), sh.topI.subarray(this.s * stride));
  }

  /** The slice's top-k per row from the kept pre-activation blocks (only `allowed` latents, when given). */
  private topKOfPre(B: number, k: number, outV: Float32Array, outI: Int32Array, allowed?: Uint8Array): void {
    for (let r0 = 0; r0 < B; r0 += MATMUL_ROWS) {
      const n = Math.min(MATMUL_ROWS, B - r0);
      sliceTopKT(this.pre.subarray(r0 * this.Ls, (r0 + n) * this.Ls), n, this.Ls, this.s0, k, outV, outI, r0, allowed);
    }
  }

  /** The pairs of a merged code (`per` entries per row) that fall in this slice and are active. */
  private pairs(V: Float32Array, I: Int32Array, B: number, per: number, rowOffset: number): Pairs {
    const { s0, s1 } = this;
    let n = 0;
    for (let i = 0; i < B * per; i++) if (V[i]! > 0 && I[i]! >= s0 && I[i]! < s1) n++;
    const p: Pairs = { n, rows: new Int32Array(n), xRows: new Int32Array(n), lat: new Int32Array(n), vals: new Float32Array(n) };
    let at = 0;
    for (let r = 0; r < B; r++) {
      for (let j = 0; j < per; j++) {
        const o = r * per + j;
        const i = I[o]!;
        const v = V[o]!;
        if (!(v > 0) || i < s0 || i >= s1) continue; // ReLU'd to zero: no output, no gradient
        p.rows[at] = r + rowOffset;
        p.xRows[at] = r;
        p.lat[at] = i - s0;
        p.vals[at] = v;
        at++;
      }
    }
    return p;
  }

  /** Σ over the pairs of v · W_dec[latent], into their rows: this slice's part of the decode (`B × d`), to `out`. */
  private partialDecode(p: Pairs, B: number, out: Float32Array): void {
    const { d, kx, oOut, oWd } = this;
    const f = kx.f32;
    f.fill(0, oOut, oOut + B * d);
    for (let q = 0; q < p.n; q++) kx.axpy(4 * (oOut + p.xRows[q]! * d), 4 * (oWd + p.lat[q]! * d), p.vals[q]!, d);
    out.set(f.subarray(oOut, oOut + B * d));
  }

  /** Adds the gradients of the pairs (∂loss/∂x̂ rows at `oG`) to the slice's W_dec and W_enc gradients, and Σ ∂pre per latent to `dbe`. */
  private scatterGradients(p: Pairs, dbe: Float64Array): void {
    const { d, kx, oG, oWd, oGd, oGe, oX } = this;
    for (let q = 0; q < p.n; q++) {
      const gp = 4 * (oG + p.rows[q]! * d);
      const lat = p.lat[q]!;
      const dv = kx.dot(gp, 4 * (oWd + lat * d), d);
      kx.axpy(4 * (oGd + lat * d), gp, p.vals[q]!, d);
      // ∂W_enc[:, i] += ∂pre · x; the b_dec part (− Σ ∂pre · b_dec) is added once per latent after.
      kx.axpy(4 * (oGe + lat * d), 4 * (oX + p.xRows[q]! * d), dv, d);
      dbe[lat]! += dv;
    }
  }

  /** Σ over slices of their partial decodes (`parts`, one `maxRows × d` block per slice) of the first B rows. */
  private sumParts(parts: Float32Array, B: number): tf.Tensor2D {
    const { d, c } = this;
    return tf.tidy(() => {
      let acc: tf.Tensor = tf.tensor2d(parts.subarray(0, B * d), [B, d]);
      for (let s = 1; s < this.S; s++) acc = tf.add(acc, tf.tensor2d(parts.subarray(s * c.maxRows * d, s * c.maxRows * d + B * d), [B, d]));
      return acc as tf.Tensor2D;
    });
  }

  private mergeAll(B: number): number {
    const { c, sh } = this;
    return mergeTopK(this.S, B, c.k, c.maxRows * c.k, sh.topV, sh.topI, this.selV, this.selI);
  }

  private encode(x: Float32Array, B: number): void {
    const { sh, c, d } = this;
    this.encodeSlice(x, B);
    this.barrier();
    this.mergeAll(B);
    if (this.s === 0) {
      sh.codeV.set(this.selV.subarray(0, B * c.k));
      sh.codeI.set(this.selI.subarray(0, B * c.k));
    }
    this.partialDecode(this.pairs(this.selV, this.selI, B, c.k, 0), B, sh.dec.subarray(this.s * c.maxRows * d));
    this.barrier();
    // The error of this slice's share of the rows.
    const r0 = Math.floor((this.s * B) / this.S);
    const r1 = Math.floor(((this.s + 1) * B) / this.S);
    let sq = 0;
    for (let r = r0; r < r1; r++) {
      for (let j = 0; j < d; j++) {
        let v = this.bdec[j]! - x[r * d + j]!;
        for (let s = 0; s < this.S; s++) v += sh.dec[s * c.maxRows * d + r * d + j]!;
        sq += v * v;
      }
    }
    sh.stats[this.s * 4 + 2] = sq;
  }

  private step(x: Float32Array, B: number): void {
    const { sh, c, d, L, S, Ls } = this;
    const k = c.k;
    this.t++;
    // 1.
    this.encodeSlice(x, B);
    this.barrier();
    // 2. Every slice merges all rows, so each knows the whole selection without another exchange.
    const active = this.mergeAll(B);
    if (this.s === 0) sh.stats[1]! += active;
    for (let i = 0; i < B * k; i++) if (this.selV[i]! > 0) this.lastActive[this.selI[i]!] = this.t;
    let ka = 0;
    if (c.auxK > 0) {
      let nDead = 0;
      for (let i = 0; i < L; i++) {
        const dead = this.t - this.lastActive[i]! > c.deadStepsThreshold ? 1 : 0;
        this.dead[i] = dead;
        nDead += dead;
      }
      if (nDead > 0) {
        ka = Math.min(c.auxK, nDead);
        const aStride = c.maxRows * c.auxK;
        this.topKOfPre(B, ka, sh.auxV.subarray(this.s * aStride), sh.auxI.subarray(this.s * aStride), this.dead);
        this.barrier();
        mergeTopK(S, B, ka, aStride, sh.auxV, sh.auxI, this.auxV, this.auxI);
      }
    }
    this.ka = ka;
    const main = this.pairs(this.selV, this.selI, B, k, 0);
    const aux = ka > 0 ? this.pairs(this.auxV, this.auxI, B, ka, B) : undefined;
    this.partialDecode(main, B, sh.dec.subarray(this.s * c.maxRows * d));
    if (aux) this.partialDecode(aux, B, sh.adec.subarray(this.s * c.maxRows * d));
    this.barrier();
    // 3. Residuals (identical in every slice), then this slice's gradients and update.
    const keep = this.keepGradients;
    const [lossT, GT, sumGT] = tf.tidy(() => {
      const X = tf.tensor2d(x.subarray(0, B * d), [B, d]);
      const e = tf.sub(tf.add(this.sumParts(sh.dec, B), tf.tensor1d(this.bdec)), X);
      const g = tf.mul(e, 2 / B);
      let lossT: tf.Tensor = tf.sum(tf.square(e));
      let G: tf.Tensor = g;
      if (aux) {
        const ea = tf.add(this.sumParts(sh.adec, B), e); // ê − (x − x̂), the residual held fixed
        lossT = tf.add(lossT, tf.mul(tf.sum(tf.square(ea)), c.auxCoefficient));
        G = tf.concat([g, tf.mul(ea, (2 * c.auxCoefficient) / B)], 0);
      }
      return [lossT, G, tf.sum(g, 0)];
    });
    const { kx, oGd, oGe, oX, oG, oBd, oPb, oWd, oWe } = this;
    const f = kx.f32;
    f.set(GT!.dataSync() as Float32Array, oG);
    f.set(x.subarray(0, B * d), oX);
    f.set(this.bdec, oBd);
    f.fill(0, oGd, oGd + Ls * d);
    f.fill(0, oGe, oGe + Ls * d);
    const dbe = new Float64Array(Ls);
    this.scatterGradients(main, dbe);
    if (aux) this.scatterGradients(aux, dbe);
    // W_enc[:, slice] · ∂b_enc[slice], for b_dec's gradient: taken before Adam moves W_enc.
    f.fill(0, oPb, oPb + d);
    for (let i = 0; i < Ls; i++) {
      if (dbe[i] === 0) continue;
      kx.axpy(4 * (oGe + i * d), 4 * oBd, -dbe[i]!, d);
      kx.axpy(4 * oPb, 4 * (oWe + i * d), dbe[i]!, d);
    }
    f.set(dbe, this.oGbe);
    sh.partials.set(f.subarray(oPb, oPb + d), this.s * d);
    if (keep) this.keep(B, ka, dbe);
    // Keep decoder rows on the unit sphere: drop the gradient's radial part, renormalise after.
    for (let i = 0; i < Ls; i++) {
      const g = 4 * (oGd + i * d);
      const w = 4 * (oWd + i * d);
      kx.axpy(g, w, -kx.dot(g, w, d), d);
    }
    const lrT = c.lr * Math.sqrt(1 - B2 ** this.t) / (1 - B1 ** this.t);
    kx.adam(4 * oWd, 4 * oGd, 4 * this.oMd, 4 * this.oVd, Ls * d, lrT, B1, B2, EPS);
    kx.adam(4 * oWe, 4 * oGe, 4 * this.oMe, 4 * this.oVe, Ls * d, lrT, B1, B2, EPS);
    kx.adam(4 * this.oBe, 4 * this.oGbe, 4 * this.oMbe, 4 * this.oVbe, Ls, lrT, B1, B2, EPS);
    for (let i = 0; i < Ls; i++) {
      const w = 4 * (oWd + i * d);
      kx.axpy(w, w, 1 / Math.sqrt(kx.dot(w, w, d)) - 1, d);
    }
    const lossV = (lossT!.dataSync() as Float32Array)[0]!;
    if (this.s === 0) sh.stats[0]! += lossV;
    const sumGV = sumGT!.dataSync() as Float32Array;
    tf.dispose([lossT!, GT!, sumGT!]);
    if (keep) this.lastGradients!.loss = lossV / B;
    this.barrier();
    // 4. b_dec enters twice: added to x̂ and subtracted before the encoder.
    const gBdec = new Float32Array(d);
    for (let j = 0; j < d; j++) {
      let gj = sumGV[j]!;
      for (let s = 0; s < S; s++) gj -= sh.partials[s * d + j]!;
      gBdec[j] = gj;
      const m = (this.mBdec[j] = B1 * this.mBdec[j]! + (1 - B1) * gj);
      const v = (this.vBdec[j] = B2 * this.vBdec[j]! + (1 - B2) * gj * gj);
      this.bdec[j] = this.bdec[j]! - lrT * (m / (Math.sqrt(v) + EPS));
    }
    if (keep) this.lastGradients!.b_dec = gBdec;
  }

  /** Copies the step's raw gradients (SAELens layout) and selection for the gradient check. */
  private keep(B: number, ka: number, dbe: Float64Array): void {
    const { d, Ls, kx, c } = this;
    const f = kx.f32;
    const W_enc = new Float32Array(d * Ls);
    for (let i = 0; i < Ls; i++) for (let q = 0; q < d; q++) W_enc[q * Ls + i] = f[this.oGe + i * d + q]!;
    this.lastGradients = {
      W_enc, b_enc: Float32Array.from(dbe), W_dec: f.slice(this.oGd, this.oGd + Ls * d), b_dec: new Float32Array(d), loss: 0,
      selV: this.selV.slice(0, B * c.k), selI: this.selI.slice(0, B * c.k), auxV: this.auxV.slice(0, B * ka), auxI: this.auxI.slice(0, B * ka), ka,
    };
  }

  /** Writes this slice's parameters (and b_dec, from slice 0) to the shared arrays. */
  private writeValues(): void {
    const { sh, d, s0 } = this;
    const { Ls } = this;
    const f = this.kx.f32;
    for (let i = 0; i < Ls; i++) for (let q = 0; q < d; q++) sh.W_enc[d * s0 + q * Ls + i] = f[this.oWe + i * d + q]!;
    sh.b_enc.set(f.subarray(this.oBe, this.oBe + Ls), s0);
    sh.W_dec.set(f.subarray(this.oWd, this.oWd + Ls * d), d * s0);
    if (this.s === 0) sh.b_dec.set(this.bdec);
  }
}
