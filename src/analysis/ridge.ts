/** Ridge regression with an intercept, and its R² cross-validated over groups (trials). */
import { InsufficientDataError } from '../errors.js';
import { createRng } from '../random.js';

/** Solves (A) x = b for symmetric positive definite A (n×n, row-major), for each column of B (n×k). */
export function choleskySolve(A: Float64Array, B: Float64Array, n: number, k: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * n + j]!;
      for (let p = 0; p < j; p++) s -= L[i * n + p]! * L[j * n + p]!;
      if (i === j) {
        if (s <= 0) throw new InsufficientDataError('The ridge system is not positive definite; increase `ridge`');
        L[i * n + i] = Math.sqrt(s);
      } else L[i * n + j] = s / L[j * n + j]!;
    }
  }
  const X = new Float64Array(n * k);
  for (let c = 0; c < k; c++) {
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = B[i * k + c]!;
      for (let p = 0; p < i; p++) s -= L[i * n + p]! * y[p]!;
      y[i] = s / L[i * n + i]!;
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = y[i]!;
      for (let p = i + 1; p < n; p++) s -= L[p * n + i]! * X[p * k + c]!;
      X[i * k + c] = s / L[i * n + i]!;
    }
  }
  return X;
}

export interface CvR2 {
  /** 1 − Σ residual² / Σ (y − ȳ)² over all held-out rows and target dimensions. */
  r2: number;
  /** The same per target dimension. */
  r2_per_dim: number[];
  /** Ridge strengths (relative to the mean feature variance) chosen in each outer fold. */
  ridge_chosen: number[];
}

/** Relative ridge strengths tried when `ridge` is 'auto'. */
export const RIDGE_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100];

interface Gram {
  xm: Float64Array;
  ym: Float64Array;
  XtX: Float64Array;
  XtY: Float64Array;
  trace: number;
}

/** Centred XᵀX and XᵀY over the given rows. */
function gram(X: Float32Array, Y: Float32Array, rows: readonly number[], d: number, k: number): Gram {
  const xm = new Float64Array(d);
  const ym = new Float64Array(k);
  for (const r of rows) {
    for (let j = 0; j < d; j++) xm[j]! += X[r * d + j]!;
    for (let c = 0; c < k; c++) ym[c]! += Y[r * k + c]!;
  }
  for (let j = 0; j < d; j++) xm[j]! /= rows.length;
  for (let c = 0; c < k; c++) ym[c]! /= rows.length;
  const XtX = new Float64Array(d * d);
  const XtY = new Float64Array(d * k);
  const xr = new Float64Array(d);
  for (const r of rows) {
    for (let j = 0; j < d; j++) xr[j] = X[r * d + j]! - xm[j]!;
    for (let i = 0; i < d; i++) {
      const xi = xr[i]!;
      if (xi === 0) continue;
      for (let j = i; j < d; j++) XtX[i * d + j]! += xi * xr[j]!;
      for (let c = 0; c < k; c++) XtY[i * k + c]! += xi * (Y[r * k + c]! - ym[c]!);
    }
  }
  let trace = 0;
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < i; j++) XtX[i * d + j] = XtX[j * d + i]!;
    trace += XtX[i * d + i]!;
  }
  return { xm, ym, XtX, XtY, trace };
}

function solve(g: Gram, d: number, k: number, ridge: number): Float64Array {
  const A = g.XtX.slice();
  const lambda = ridge * Math.max(g.trace / d, 1e-12);
  for (let i = 0; i < d; i++) A[i * d + i]! += lambda;
  return choleskySolve(A, g.XtY, d, k);
}

/** Adds each test row's squared residuals per target dimension to `ssRes`. */
function residuals(X: Float32Array, Y: Float32Array, rows: readonly number[], d: number, k: number, g: Gram, W: Float64Array, ssRes: Float64Array): void {
  for (const r of rows) {
    for (let c = 0; c < k; c++) {
      let pred = g.ym[c]!;
      for (let j = 0; j < d; j++) pred += (X[r * d + j]! - g.xm[j]!) * W[j * k + c]!;
      ssRes[c]! += (Y[r * k + c]! - pred) ** 2;
    }
  }
}

function foldsOf(groups: Int32Array, rows: readonly number[], folds: number, seed: number): number[][] {
  const ids = [...new Set(rows.map((r) => groups[r]!))];
  const rng = createRng(seed);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  const foldOfGroup = new Map(ids.map((g, i) => [g, i % folds]));
  const out: number[][] = Array.from({ length: folds }, () => []);
  for (const r of rows) out[foldOfGroup.get(groups[r]!)!]!.push(r);
  return out;
}

/** Picks the ridge strength with the lowest inner cross-validated error on the training rows. */
function chooseRidge(X: Float32Array, Y: Float32Array, rows: readonly number[], d: number, k: number, groups: Int32Array, seed: number): number {
  const inner = foldsOf(groups, rows, 3, seed + 1);
  if (inner.some((f) => f.length === 0)) return 1;
  const errors = new Float64Array(RIDGE_GRID.length);
  for (const test of inner) {
    const testSet = new Set(test);
    const g = gram(X, Y, rows.filter((r) => !testSet.has(r)), d, k);
    RIDGE_GRID.forEach((ridge, i) => {
      const ss = new Float64Array(k);
      residuals(X, Y, test, d, k, g, solve(g, d, k, ridge), ss);
      errors[i]! += ss.reduce((a, b) => a + b, 0);
    });
  }
  let best = 0;
  for (let i = 1; i < errors.length; i++) if (errors[i]! < errors[best]!) best = i;
  return RIDGE_GRID[best]!;
}

/**
 * K-fold cross-validated ridge R² of Y (rows × k) from X (rows × d). Rows of one group (trial)
 * stay in one fold, so time bins of a trial never leak between training and testing. With
 * `ridge: 'auto'` each outer fold picks its strength by an inner 3-fold cross-validation on its
 * training rows only (nested), so the reported R² is not tuned on the rows it is measured on.
 */
export function crossValidatedR2(X: Float32Array, Y: Float32Array, rows: number, d: number, k: number, groups: Int32Array, options: { folds?: number; ridge?: number | 'auto'; seed?: number } = {}): CvR2 {
  const nGroups = new Set(groups).size;
  const folds = Math.min(options.folds ?? 5, nGroups);
  if (folds < 2) throw new InsufficientDataError(`A cross-validated probe needs at least 2 trials; got ${nGroups}`);
  const seed = options.seed ?? 0;
  const all = Array.from({ length: rows }, (_, r) => r);
  const outer = foldsOf(groups, all, folds, seed);
  const yMean = new Float64Array(k);
  for (let r = 0; r < rows; r++) for (let c = 0; c < k; c++) yMean[c]! += Y[r * k + c]! / rows;
  const ssRes = new Float64Array(k);
  const ssTot = new Float64Array(k);
  for (let r = 0; r < rows; r++) for (let c = 0; c < k; c++) ssTot[c]! += (Y[r * k + c]! - yMean[c]!) ** 2;
  const chosen: number[] = [];
  for (const test of outer) {
    if (test.length === 0) continue;
    const testSet = new Set(test);
    const train = all.filter((r) => !testSet.has(r));
    const ridge = options.ridge === undefined || options.ridge === 'auto' ? chooseRidge(X, Y, train, d, k, groups, seed) : options.ridge;
    chosen.push(ridge);
    const g = gram(X, Y, train, d, k);
    residuals(X, Y, test, d, k, g, solve(g, d, k, ridge), ssRes);
  }
  const totRes = ssRes.reduce((a, b) => a + b, 0);
  const totTot = ssTot.reduce((a, b) => a + b, 0);
  return {
    r2: totTot > 0 ? 1 - totRes / totTot : 0,
    r2_per_dim: Array.from(ssTot, (t, c) => (t > 0 ? 1 - ssRes[c]! / t : 0)),
    ridge_chosen: chosen,
  };
}
