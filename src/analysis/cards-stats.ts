/**
 * The statistics of a latent card: how covariates line up with a layer's rows, Pearson r for
 * continuous covariates, the correlation ratio η (sqrt of η², between-class over total variance)
 * for categorical ones, a chance level from covariates shuffled across samples, and histograms.
 */
import { ConfigError } from '../errors.js';
import { createRng } from '../random.js';
import type { Covariate } from './types.js';

/** How a covariate was lined up with the latent: per position, per sample, or per sample with the latent averaged over positions. */
export type CovariateAlignment = 'per_position' | 'per_sample' | 'per_sample_mean_pooled';

export interface AlignedCovariate {
  name: string;
  categorical: boolean;
  alignment: CovariateAlignment;
  /** One value per aligned row (n × P per position, n per sample). */
  values: Float64Array;
  /** Its value for row `sample·P + position` of the layer, for the context of top examples. */
  at(sample: number, position: number): number;
}

/**
 * Lines up a covariate with `n` samples of a layer with `P` positions per sample: [N, T] with
 * T = P per position; [N] per sample; [N, T] with another T is averaged over T per sample.
 */
export function alignCovariate(name: string, c: Covariate, n: number, P: number): AlignedCovariate {
  if (!c || !(c.data instanceof Float32Array) || !Array.isArray(c.shape)) throw new ConfigError(`Expected covariate \`${name}\` to be { data: Float32Array, shape: number[] }`);
  const N = c.shape[0] ?? 0;
  if (N < n) throw new ConfigError(`Covariate \`${name}\` has ${N} samples but the eval inputs used have ${n}`);
  const per = c.shape.slice(1).reduce((a, b) => a * b, 1);
  if (c.shape.length > 2 || c.data.length !== N * per) throw new ConfigError(`Expected covariate \`${name}\` to have shape [N] or [N, T]; got [${c.shape}] with ${c.data.length} values`);
  const categorical = c.categorical === true;
  if (per === P && P > 1) {
    const values = Float64Array.from(c.data.subarray(0, n * P));
    return { name, categorical, alignment: 'per_position', values, at: (i, t) => c.data[i * P + t]! };
  }
  if (per > 1 && categorical) throw new ConfigError(`Categorical covariate \`${name}\` has ${per} values per sample, which fit neither one per sample nor the layer's ${P} positions`);
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let t = 0; t < per; t++) s += c.data[i * per + t]!;
    values[i] = s / per;
  }
  return { name, categorical, alignment: P > 1 ? 'per_sample_mean_pooled' : 'per_sample', values, at: (i, t) => (per === P ? c.data[i * per + t]! : values[i]!) };
}

/** Pearson correlation of x and y; NaN when either is constant. */
export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) (mx += x[i]!), (my += y[i]!);
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const a = x[i]! - mx;
    const b = y[i]! - my;
    sxy += a * b;
    sxx += a * a;
    syy += b * b;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
}

/** Correlation ratio η of `y` by the classes in `labels`: sqrt(between-class / total sum of squares), in [0, 1]. */
export function correlationRatio(labels: ArrayLike<number>, y: ArrayLike<number>): number {
  const sums = new Map<number, [number, number]>();
  let total = 0;
  for (let i = 0; i < y.length; i++) {
    const s = sums.get(labels[i]!) ?? [0, 0];
    s[0] += y[i]!;
    s[1]++;
    sums.set(labels[i]!, s);
    total += y[i]!;
  }
  const mean = total / y.length;
  let ssTotal = 0;
  for (let i = 0; i < y.length; i++) ssTotal += (y[i]! - mean) ** 2;
  let ssBetween = 0;
  for (const [s, c] of sums.values()) ssBetween += c * (s / c - mean) ** 2;
  return ssTotal > 0 ? Math.sqrt(Math.min(1, ssBetween / ssTotal)) : NaN;
}

/** The card statistic: Pearson r (signed) for a continuous covariate, η for a categorical one. */
export function covariateStatistic(cov: AlignedCovariate, latent: ArrayLike<number>): number {
  return cov.categorical ? correlationRatio(cov.values, latent) : pearson(cov.values, latent);
}

/**
 * Copies of a covariate's values with whole samples permuted (positions stay with their sample),
 * so the statistic against them is what chance gives with the same within-sample structure.
 */
export function shuffledAcrossSamples(values: Float64Array, nSamples: number, shuffles: number, seed: number): Float64Array[] {
  const per = values.length / nSamples;
  const rng = createRng(seed + 15485863);
  const out: Float64Array[] = [];
  for (let s = 0; s < shuffles; s++) {
    const perm = rng.shuffle(Int32Array.from({ length: nSamples }, (_, i) => i));
    const v = new Float64Array(values.length);
    for (let i = 0; i < nSamples; i++) v.set(values.subarray(perm[i]! * per, (perm[i]! + 1) * per), i * per);
    out.push(v);
  }
  return out;
}

export interface ActivationHistogram {
  /** Bin edges over (0, max] of the latent's non-zero values: bins + 1 numbers. */
  bin_edges: number[];
  counts: number[];
  /** Rows where the latent is 0. */
  n_zero: number;
}

export function activationHistogram(values: ArrayLike<number>, bins: number): ActivationHistogram {
  let max = 0;
  let zero = 0;
  for (let i = 0; i < values.length; i++) {
    if (values[i]! > 0) max = Math.max(max, values[i]!);
    else zero++;
  }
  const counts = new Array<number>(bins).fill(0);
  const edges = Array.from({ length: bins + 1 }, (_, b) => (max * b) / bins);
  if (max > 0) {
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v > 0) counts[Math.min(bins - 1, Math.floor((v / max) * bins))]!++;
    }
  }
  return { bin_edges: edges.map((e) => Number(e.toPrecision(6))), counts, n_zero: zero };
}
