/**
 * The memory the TopK SAE's workers share (SharedArrayBuffers, so no step copies anything between
 * threads) and the Atomics primitives that order their phases. Sizes depend on the batch, the
 * dimension and the latents, never on the number of rows trained on.
 */

/** Slots of the control array. */
export const CTL = {
  /** Bumped by the main thread to start a command. */
  START: 0,
  /** Workers that finished the current command. */
  DONE: 1,
  CMD: 2,
  NROWS: 3,
  /** Which of the two input slots holds the batch. */
  SLOT: 4,
  BAR_COUNT: 5,
  BAR_GEN: 6,
  /** Set to 1 by a worker whose command threw: every wait gives up. */
  ERROR: 7,
  SIZE: 8,
} as const;

export const CMD = { STEP: 1, ENCODE: 2, VALUES: 3, EXIT: 4 } as const;

export interface SharedConfig {
  dim: number;
  nLatents: number;
  k: number;
  auxK: number;
  auxCoefficient: number;
  deadStepsThreshold: number;
  lr: number;
  /** Number of latent slices (workers). */
  slices: number;
  /** Largest number of rows a command may carry. */
  maxRows: number;
}

export interface SharedBuffers {
  ctl: SharedArrayBuffer;
  x: SharedArrayBuffer;
  topV: SharedArrayBuffer;
  topI: SharedArrayBuffer;
  auxV: SharedArrayBuffer;
  auxI: SharedArrayBuffer;
  dec: SharedArrayBuffer;
  adec: SharedArrayBuffer;
  partials: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  W_enc: SharedArrayBuffer;
  b_enc: SharedArrayBuffer;
  W_dec: SharedArrayBuffer;
  b_dec: SharedArrayBuffer;
  codeV: SharedArrayBuffer;
  codeI: SharedArrayBuffer;
}

/** Typed views of the shared buffers. */
export interface SharedViews {
  ctl: Int32Array;
  /** Two input slots, `maxRows × dim` each. */
  x: Float32Array;
  /** Per slice, its own top-k per row (raw values, global indices): `slices × maxRows × k`. */
  topV: Float32Array;
  topI: Int32Array;
  auxV: Float32Array;
  auxI: Int32Array;
  /** Per slice, its part of the decode of every row (`slices × maxRows × dim`), and of AuxK's. */
  dec: Float32Array;
  adec: Float32Array;
  /** Per slice: W_enc[:, slice] · ∂b_enc[slice] (dim values), for b_dec's gradient. */
  partials: Float64Array;
  /** Per slice: [loss sum, active count, squared error of an encode, unused]. */
  stats: Float64Array;
  /** The parameters, written by the VALUES command. Slice s's encoder block `[dim, Ls]` starts at `dim · start(s)`. */
  W_enc: Float32Array;
  b_enc: Float32Array;
  W_dec: Float32Array;
  b_dec: Float32Array;
  /** An encode's merged code, `maxRows × k`. */
  codeV: Float32Array;
  codeI: Int32Array;
}

export function allocShared(c: SharedConfig): SharedBuffers {
  const { dim: d, nLatents: L, k, auxK, slices: W, maxRows: B } = c;
  const f = (n: number) => new SharedArrayBuffer(Math.max(1, n) * 4);
  return {
    ctl: f(CTL.SIZE), x: f(2 * B * d), topV: f(W * B * k), topI: f(W * B * k), auxV: f(W * B * auxK), auxI: f(W * B * auxK),
    dec: f(W * B * d), adec: f(auxK > 0 ? W * B * d : 0), partials: new SharedArrayBuffer(W * d * 8), stats: new SharedArrayBuffer(W * 4 * 8),
    W_enc: f(d * L), b_enc: f(L), W_dec: f(L * d), b_dec: f(d), codeV: f(B * k), codeI: f(B * k),
  };
}

export function viewShared(b: SharedBuffers): SharedViews {
  return {
    ctl: new Int32Array(b.ctl), x: new Float32Array(b.x), topV: new Float32Array(b.topV), topI: new Int32Array(b.topI),
    auxV: new Float32Array(b.auxV), auxI: new Int32Array(b.auxI), dec: new Float32Array(b.dec), adec: new Float32Array(b.adec),
    partials: new Float64Array(b.partials), stats: new Float64Array(b.stats), W_enc: new Float32Array(b.W_enc),
    b_enc: new Float32Array(b.b_enc), W_dec: new Float32Array(b.W_dec), b_dec: new Float32Array(b.b_dec),
    codeV: new Float32Array(b.codeV), codeI: new Int32Array(b.codeI),
  };
}

/** First latent of slice `s` of `S`: contiguous, near-equal ranges in latent order. */
export const sliceStart = (L: number, S: number, s: number): number => Math.floor((s * L) / S);

/** Thrown inside a worker when another one failed, to unwind without reporting a second error. */
export class PeerFailed extends Error {}

const WAIT_MS = 250;

/** Blocks until `ctl[slot]` differs from `seen`, giving up when a worker reported an error. */
export function waitChange(ctl: Int32Array, slot: number, seen: number): void {
  while (Atomics.load(ctl, slot) === seen) {
    if (Atomics.load(ctl, CTL.ERROR) !== 0) throw new PeerFailed('a peer failed');
    Atomics.wait(ctl, slot, seen, WAIT_MS);
  }
}

/** A reusable barrier for `n` threads on the control array (generation counting). */
export function barrier(ctl: Int32Array, n: number): void {
  if (n <= 1) return;
  const gen = Atomics.load(ctl, CTL.BAR_GEN);
  if (Atomics.add(ctl, CTL.BAR_COUNT, 1) === n - 1) {
    Atomics.store(ctl, CTL.BAR_COUNT, 0);
    Atomics.add(ctl, CTL.BAR_GEN, 1);
    Atomics.notify(ctl, CTL.BAR_GEN);
    return;
  }
  waitChange(ctl, CTL.BAR_GEN, gen);
}
