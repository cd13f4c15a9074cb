/**
 * Training dynamics: shards carry the global step they were saved at, so the same layer can be
 * summarised step by step (activation frequency, magnitude, dead units, how much variance the top
 * PCs hold). One pass; memory is one D×D covariance per step, with steps merged into at most
 * `max_steps` groups.
 */
import { InsufficientDataError } from '../errors.js';
import { defineOptions, int } from '../options.js';
import { CovarianceAccumulator, symmetricEigen } from './linalg.js';
import type { RowSource } from '../storage/rows.js';
import { defineAnalysis } from './definition.js';

export const dynamicsOptions = defineOptions('dynamics option', {
  maxSteps: int({ min: 1, default: 50, doc: 'Training steps reported at most; later steps fold into the nearest earlier group.' }),
});

export interface StepSummary {
  global_step: number;
  n_rows: number;
  /** Mean over units of the fraction of rows > 0. */
  mean_frequency: number;
  mean_abs_activation: number;
  /** Units active (> 0) in under 1% of this step's rows. */
  dead_fraction: number;
  top10_explained_variance: number;
  participation_ratio: number;
  /** Cumulative explained-variance ratio of the top 10 PCs at this step. */
  cumulative_explained_variance: number[];
  /** Units' activation frequencies at this step, highest first (at most 64 points, evenly spaced ranks). */
  sorted_frequencies: number[];
}

export interface DynamicsResult {
  steps: StepSummary[];
  n_units: number;
}

interface StepAcc {
  step: number;
  rows: number;
  active: Float64Array;
  abs: number;
  cov: CovarianceAccumulator;
}

export async function runDynamicsAnalysis(source: RowSource, options: Record<string, unknown> = {}): Promise<DynamicsResult> {
  const { maxSteps } = dynamicsOptions.resolve(options);
  const byStep = new Map<number, StepAcc>();
  let dim = 0;
  for await (const b of source()) {
    const step = b.globalStep ?? 0;
    dim = b.dim;
    let acc = byStep.get(step);
    if (!acc) {
      if (byStep.size >= maxSteps) {
        // Too many steps: fold this one into the nearest earlier step group.
        const earlier = [...byStep.keys()].filter((s) => s <= step);
        acc = byStep.get(earlier.length ? Math.max(...earlier) : Math.min(...byStep.keys()))!;
      } else {
        acc = { step, rows: 0, active: new Float64Array(dim), abs: 0, cov: new CovarianceAccumulator(dim) };
        byStep.set(step, acc);
      }
    }
    const { rows, nRows } = b;
    for (let r = 0; r < nRows; r++) {
      const o = r * dim;
      for (let j = 0; j < dim; j++) {
        const v = rows[o + j]!;
        if (v > 0) acc.active[j]! += 1;
        acc.abs += Math.abs(v);
      }
    }
    acc.rows += nRows;
    await acc.cov.add(rows, nRows);
  }
  if (byStep.size === 0) throw new InsufficientDataError('The dynamics analysis got no rows');
  const steps: StepSummary[] = [];
  for (const acc of [...byStep.values()].sort((a, b) => a.step - b.step)) {
    const freq = Array.from(acc.active, (a) => a / acc.rows);
    let top10 = 0;
    let pr = 0;
    const cumulative: number[] = [];
    if (acc.rows >= 2) {
      const { covariance } = await acc.cov.finish();
      const { values } = symmetricEigen(covariance, dim, { vectors: false });
      const lambdas = Array.from(values, (v) => Math.max(0, v));
      const total = lambdas.reduce((a, b) => a + b, 0);
      const sq = lambdas.reduce((a, b) => a + b * b, 0);
      top10 = total > 0 ? lambdas.slice(0, 10).reduce((a, b) => a + b, 0) / total : 0;
      let c = 0;
      for (const l of lambdas.slice(0, 10)) cumulative.push(total > 0 ? (c += l) / total : 0);
      pr = sq > 0 ? (total * total) / sq : 0;
    }
    steps.push({
      global_step: acc.step,
      n_rows: acc.rows,
      mean_frequency: freq.reduce((a, b) => a + b, 0) / dim,
      mean_abs_activation: acc.abs / (acc.rows * dim),
      dead_fraction: freq.filter((f) => f < 0.01).length / dim,
      top10_explained_variance: top10,
      participation_ratio: pr,
      cumulative_explained_variance: cumulative,
      sorted_frequencies: downsample([...freq].sort((a, b) => b - a), 64),
    });
  }
  return { steps, n_units: dim };
}

/** At most `max` evenly spaced points of a curve (first and last kept). */
function downsample(xs: number[], max: number): number[] {
  if (xs.length <= max) return xs;
  return Array.from({ length: max }, (_, i) => xs[Math.round((i * (xs.length - 1)) / (max - 1))]!);
}

export const dynamicsAnalysis = defineAnalysis({
  name: 'dynamics',
  title: 'Across training steps',
  description: 'per training step (shard global step): activation frequency and magnitude, dead units, variance in the top PCs',
  options: dynamicsOptions,
  run: (rows, options) => runDynamicsAnalysis(rows, options),
});
