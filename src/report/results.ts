/** The results file: the guide's `{ config, analyses }`, plus where and when they were computed. */
export type { EvalResults } from '../analysis/runner.js';

/** Replaces non-finite numbers (NaN, ±Infinity) with null so the JSON is valid and says "no value". */
export function jsonSafe(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)));
}
