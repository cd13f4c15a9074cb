/** The results file: the guide's `{ config, analyses }`, plus where and when they were computed. */
export type { EvalResults } from '../analysis/runner.js';

/**
 * Makes results valid JSON without losing non-finite numbers: NaN, Infinity and -Infinity become
 * the strings "NaN", "Infinity" and "-Infinity" (Python's json spelling, which `json.loads`
 * reads back as floats with `parse_constant`; `float("NaN")` takes them too). null stays "no value".
 */
export function jsonSafe(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)));
}
