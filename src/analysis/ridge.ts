/** Ridge regression with an intercept, and its R² cross-validated over groups (trials). */
import { InsufficientDataError } from '../errors.js';
import { createRng } from './prng.js';

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
}

/**
 * K-fold cross-validated ridge R² of Y (rows × k) from X (rows × d). Rows of one group (trial)
 * stay in one fold, so time bins of a trial never leak between training and testing.
 */
export function crossValidatedR2(X: Float32Array, Y: Float32Array, rows: number, d: number, k: number, groups: Int32Array, options: { folds?: number; ridge?: number; seed?: number } = {}): CvR2 {
  const nGroups = Math.max(...groups) + 1;
  const folds = Math.min(options.folds ?? 5, nGroups);
  if (folds < 2) throw new InsufficientDataError(`A cross-validated probe needs at least 2 trials; got ${nGroups}`);
  const rng = createRng(options.seed ?? 0);
  const order = Array.from({ length: nGroups }, (_, i) => i);
  for (let i = nGroups - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const foldOf = new Int32Array(nGroups);
  order.forEach((g, i) => (foldOf[g] = i % folds));
  const yMean = new Float64Array(k);
  for (let r = 0; r < rows; r++) for (let c = 0; c < k; c++) yMean[c]! += Y[r * k + c]! / rows;
  const ssRes = new Float64Array(k);
  const ssTot = new Float64Array(k);
  for (let r = 0; r < rows; r++) for (let c = 0; c < k; c++) ssTot[c]! += (Y[r * k + c]! - yMean[c]!) ** 2;

  for (let f = 0; f < folds; f++) {
    const train: number[] = [];
    const test: number[] = [];
    for (let r = 0; r < rows; r++) (foldOf[groups[r]!] === f ? test : train).push(r);
    if (train.length === 0 || test.length === 0) continue;
    const xm = new Float64Array(d);
    const ym = new Float64Array(k);
    for (const r of train) {
      for (let j = 0; j < d; j++) xm[j]! += X[r * d + j]!;
      for (let c = 0; c < k; c++) ym[c]! += Y[r * k + c]!;
    }
    for (let j = 0; j < d; j++) xm[j]! /= train.length;
    for (let c = 0; c < k; c++) ym[c]! /= train.length;
    const XtX = new Float64Array(d * d);
    const XtY = new Float64Array(d * k);
    const xr = new Float64Array(d);
    for (const r of train) {
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
    const lambda = (options.ridge ?? 1e-3) * Math.max(trace / d, 1e-12);
    for (let i = 0; i < d; i++) XtX[i * d + i]! += lambda;
    const W = choleskySolve(XtX, XtY, d, k);
    for (const r of test) {
      for (let c = 0; c < k; c++) {
        let pred = ym[c]!;
        for (let j = 0; j < d; j++) pred += (X[r * d + j]! - xm[j]!) * W[j * k + c]!;
        ssRes[c]! += (Y[r * k + c]! - pred) ** 2;
      }
    }
  }
  const totRes = ssRes.reduce((a, b) => a + b, 0);
  const totTot = ssTot.reduce((a, b) => a + b, 0);
  return {
    r2: totTot > 0 ? 1 - totRes / totTot : 0,
    r2_per_dim: Array.from(ssTot, (t, c) => (t > 0 ? 1 - ssRes[c]! / t : 0)),
  };
}
