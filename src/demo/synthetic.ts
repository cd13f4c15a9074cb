/**
 * Seeded synthetic neural population data with known latents, for the demo and for checking
 * analyses against ground truth.
 *
 * Generative model, per trial n of condition c:
 * - latents z_t ∈ R^L are L/2 planes, each rotating at a condition-specific angular frequency
 *   and slowly decaying, with a small process noise; the initial state sits at a condition
 *   phase with per-trial amplitude and phase jitter, so trials of one condition differ;
 * - spike counts y_{t,i} ~ Poisson(exp(baseline_i + loadings_i · z_t));
 * - behaviour b_t = readout · z_t + small noise, then standardised per dimension over the data
 *   set (an affine map, so it stays exactly linear in the latents).
 *
 * Everything is row-major Float32Array (Int32Array for conditions): spikes [N,T,C],
 * rates [N,T,C], latents [N,T,L], behavior [N,T,B] (per bin, like a velocity), conditions [N].
 */
import { createRng } from '../random.js';
import { ConfigError } from '../errors.js';

export interface SyntheticDataOptions {
  /** Number of trials N. @default 400 */
  nTrials?: number;
  /** Number of neurons C. @default 64 */
  nNeurons?: number;
  /** Time bins per trial T. @default 32 */
  nBins?: number;
  /** Latent dimensions L, an even number (pairs of rotating planes). @default 4 */
  nLatents?: number;
  /** Number of conditions (each its own frequencies and start phase). @default 8 */
  nConditions?: number;
  /** Behaviour dimensions B. @default 2 */
  behaviorDims?: number;
  /** Mean firing, in expected spikes per bin, of a typical neuron. @default 1.5 */
  meanRate?: number;
  /** Standard deviation of the latent process noise per bin. @default 0.03 */
  latentNoise?: number;
  /** Standard deviation of the behaviour noise relative to its signal. @default 0.05 */
  behaviorNoise?: number;
  /** Seed; the same seed gives the same data, bit for bit. @default 0 */
  seed?: number;
}

export interface SyntheticNeuralData {
  nTrials: number;
  nBins: number;
  nNeurons: number;
  nLatents: number;
  nConditions: number;
  behaviorDims: number;
  seed: number;
  /** Spike counts, [N,T,C]. */
  spikes: Float32Array;
  /** True Poisson rates (expected counts per bin), [N,T,C]. */
  rates: Float32Array;
  /** Ground-truth latents, [N,T,L]. */
  latents: Float32Array;
  /** Behaviour per bin, standardised per dimension over the whole data set, [N,T,B]. */
  behavior: Float32Array;
  /** Condition of each trial, [N]. */
  conditions: Int32Array;
  /** Index of each trial in the data set it was generated in (kept through splits), [N]. */
  trialIds: Int32Array;
  shapes: {
    spikes: [number, number, number];
    rates: [number, number, number];
    latents: [number, number, number];
    behavior: [number, number, number];
    conditions: [number];
  };
  /** The generative parameters, for checks. */
  truth: {
    /** [C,L] */ loadings: Float32Array;
    /** [C] log baseline rate */ baseline: Float32Array;
    /** [B,L] readout applied before standardisation */ readout: Float32Array;
    /** [nConditions, L/2] radians per bin */ frequencies: Float32Array;
    /** Per-dimension mean and std used to standardise the behaviour, [B] each. */
    behaviorMean: Float32Array;
    behaviorStd: Float32Array;
  };
}

function positiveInt(name: string, value: number, min = 1): number {
  if (!Number.isInteger(value) || value < min) {
    throw new ConfigError(`Expected \`${name}\` to be an integer >= ${min}, got \`${String(value)}\``);
  }
  return value;
}

function finiteNonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new ConfigError(`Expected \`${name}\` to be a finite number >= 0, got \`${String(value)}\``);
  }
  return value;
}

/** Generates the data set. Deterministic per seed (no Math.random). */
export function generateSyntheticNeuralData(options: SyntheticDataOptions = {}): SyntheticNeuralData {
  const N = positiveInt('nTrials', options.nTrials ?? 400);
  const C = positiveInt('nNeurons', options.nNeurons ?? 64);
  const T = positiveInt('nBins', options.nBins ?? 32, 2);
  const L = positiveInt('nLatents', options.nLatents ?? 4, 2);
  if (L % 2 !== 0) throw new ConfigError(`Expected \`nLatents\` to be even (the latents rotate in planes), got \`${L}\``);
  const K = positiveInt('nConditions', options.nConditions ?? 8);
  const B = positiveInt('behaviorDims', options.behaviorDims ?? 2);
  const meanRate = finiteNonNegative('meanRate', options.meanRate ?? 1.5);
  const latentNoise = finiteNonNegative('latentNoise', options.latentNoise ?? 0.03);
  const behaviorNoise = finiteNonNegative('behaviorNoise', options.behaviorNoise ?? 0.05);
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed)) throw new ConfigError(`Expected \`seed\` to be an integer, got \`${String(seed)}\``);
  const rng = createRng(seed);
  const P = L / 2;

  // Parameters first, so they do not depend on the number of trials.
  const frequencies = new Float32Array(K * P);
  const phases = new Float32Array(K * P);
  for (let c = 0; c < K; c++) {
    for (let p = 0; p < P; p++) {
      // 0.5 to 3 cycles per trial, spread over conditions, jittered, so conditions differ in speed.
      const cycles = 0.5 + (2.5 * ((c + 0.5 + 0.4 * (rng.uniform() - 0.5)) / K + p * 0.37)) % 2.5;
      frequencies[c * P + p] = (2 * Math.PI * cycles) / T;
      phases[c * P + p] = (2 * Math.PI * c) / K + p * 1.3 + 0.2 * rng.normal();
    }
  }
  const decay = 0.995; // slow amplitude decay, keeps the rotation stable under noise
  const loadings = new Float32Array(C * L);
  const baseline = new Float32Array(C);
  for (let i = 0; i < C; i++) {
    for (let l = 0; l < L; l++) loadings[i * L + l] = (0.9 / Math.sqrt(P)) * rng.normal();
    // Log-normal spread of baseline rates around meanRate.
    baseline[i] = Math.log(Math.max(meanRate, 1e-6)) + 0.4 * rng.normal() - 0.2;
  }
  const readout = new Float32Array(B * L);
  for (let k = 0; k < B * L; k++) readout[k] = rng.normal() / Math.sqrt(L);

  const spikes = new Float32Array(N * T * C);
  const rates = new Float32Array(N * T * C);
  const latents = new Float32Array(N * T * L);
  const behavior = new Float32Array(N * T * B);
  const conditions = new Int32Array(N);
  const trialIds = new Int32Array(N);
  const z = new Float64Array(L);
  for (let n = 0; n < N; n++) {
    const c = n % K; // balanced conditions, in a fixed order (splitTrials shuffles)
    conditions[n] = c;
    trialIds[n] = n;
    for (let p = 0; p < P; p++) {
      const amp = 1 + 0.2 * rng.normal();
      const ph = phases[c * P + p]! + 0.3 * rng.normal();
      z[2 * p] = amp * Math.cos(ph);
      z[2 * p + 1] = amp * Math.sin(ph);
    }
    for (let t = 0; t < T; t++) {
      if (t > 0) {
        for (let p = 0; p < P; p++) {
          const w = frequencies[c * P + p]!;
          const a = z[2 * p]!, b = z[2 * p + 1]!;
          z[2 * p] = decay * (Math.cos(w) * a - Math.sin(w) * b) + latentNoise * rng.normal();
          z[2 * p + 1] = decay * (Math.sin(w) * a + Math.cos(w) * b) + latentNoise * rng.normal();
        }
      }
      const zOff = (n * T + t) * L;
      for (let l = 0; l < L; l++) latents[zOff + l] = z[l]!;
      const yOff = (n * T + t) * C;
      for (let i = 0; i < C; i++) {
        let eta = baseline[i]!;
        for (let l = 0; l < L; l++) eta += loadings[i * L + l]! * z[l]!;
        const rate = Math.exp(Math.min(eta, 4)); // cap at ~55 spikes per bin
        rates[yOff + i] = rate;
        spikes[yOff + i] = rng.poisson(rate);
      }
      const bOff = (n * T + t) * B;
      for (let k = 0; k < B; k++) {
        let v = 0;
        for (let l = 0; l < L; l++) v += readout[k * L + l]! * z[l]!;
        behavior[bOff + k] = v + behaviorNoise * rng.normal();
      }
    }
  }
  // Standardise the behaviour so an MSE of 1 means "predicts nothing" on every dimension.
  const behaviorMean = new Float32Array(B);
  const behaviorStd = new Float32Array(B);
  const rows = N * T;
  for (let k = 0; k < B; k++) {
    let s = 0, s2 = 0;
    for (let r = 0; r < rows; r++) s += behavior[r * B + k]!;
    const mean = s / rows;
    for (let r = 0; r < rows; r++) s2 += (behavior[r * B + k]! - mean) ** 2;
    const std = Math.sqrt(s2 / rows) || 1;
    behaviorMean[k] = mean;
    behaviorStd[k] = std;
    for (let r = 0; r < rows; r++) behavior[r * B + k] = (behavior[r * B + k]! - mean) / std;
  }
  return {
    nTrials: N, nBins: T, nNeurons: C, nLatents: L, nConditions: K, behaviorDims: B, seed,
    spikes, rates, latents, behavior, conditions, trialIds,
    shapes: { spikes: [N, T, C], rates: [N, T, C], latents: [N, T, L], behavior: [N, T, B], conditions: [N] },
    truth: { loadings, baseline, readout, frequencies, behaviorMean, behaviorStd },
  };
}

/** The data of the given trials, in the given order (typed arrays are copies). */
export function selectTrials(data: SyntheticNeuralData, indices: readonly number[]): SyntheticNeuralData {
  const { nBins: T, nNeurons: C, nLatents: L, behaviorDims: B } = data;
  const n = indices.length;
  const pick = (src: Float32Array, per: number): Float32Array => {
    const out = new Float32Array(n * per);
    indices.forEach((idx, j) => out.set(src.subarray(idx * per, (idx + 1) * per), j * per));
    return out;
  };
  for (const idx of indices) {
    if (!Number.isInteger(idx) || idx < 0 || idx >= data.nTrials) {
      throw new ConfigError(`Expected trial indices in [0, ${data.nTrials}), got \`${String(idx)}\``);
    }
  }
  return {
    ...data,
    nTrials: n,
    spikes: pick(data.spikes, T * C),
    rates: pick(data.rates, T * C),
    latents: pick(data.latents, T * L),
    behavior: pick(data.behavior, T * B),
    conditions: Int32Array.from(indices, (i) => data.conditions[i]!),
    trialIds: Int32Array.from(indices, (i) => data.trialIds[i]!),
    shapes: { spikes: [n, T, C], rates: [n, T, C], latents: [n, T, L], behavior: [n, T, B], conditions: [n] },
  };
}

export interface SplitOptions {
  /** Fraction of trials held out (rounded per condition, at least one per condition when possible). @default 0.2 */
  heldOutFraction?: number;
  /** Seed of the shuffle. @default 0 */
  seed?: number;
}

/**
 * Splits trials into train and held-out sets, stratified by condition so that every condition
 * appears in both. Deterministic per seed.
 */
export function splitTrials(
  data: SyntheticNeuralData,
  options: SplitOptions = {},
): { train: SyntheticNeuralData; heldOut: SyntheticNeuralData; trainIndices: number[]; heldOutIndices: number[] } {
  const frac = options.heldOutFraction ?? 0.2;
  if (!(frac > 0 && frac < 1)) {
    throw new ConfigError(`Expected \`heldOutFraction\` to be a number in (0, 1), got \`${String(frac)}\``);
  }
  const rng = createRng((options.seed ?? 0) ^ 0x51ab);
  const byCondition = new Map<number, number[]>();
  for (let i = 0; i < data.nTrials; i++) {
    const c = data.conditions[i]!;
    const list = byCondition.get(c) ?? [];
    list.push(i);
    byCondition.set(c, list);
  }
  const trainIndices: number[] = [];
  const heldOutIndices: number[] = [];
  for (const c of [...byCondition.keys()].sort((a, b) => a - b)) {
    const list = rng.shuffle(byCondition.get(c)!);
    const k = list.length < 2 ? 0 : Math.min(list.length - 1, Math.max(1, Math.round(list.length * frac)));
    heldOutIndices.push(...list.slice(0, k));
    trainIndices.push(...list.slice(k));
  }
  // Interleave conditions in both sets so batches are mixed even without shuffling.
  rng.shuffle(trainIndices);
  rng.shuffle(heldOutIndices);
  return {
    train: selectTrials(data, trainIndices),
    heldOut: selectTrials(data, heldOutIndices),
    trainIndices,
    heldOutIndices,
  };
}
