/**
 * Rows with NaN or ±Infinity are never silently lost or let through: this filter drops them
 * from the stream an analysis reads and counts them, and the executor reports the count in the
 * result (`non_finite`). A block with none is passed on as it is (one multiply-add per value).
 */
import type { RowBatch, RowSource } from '../storage/rows.js';

export interface NonFiniteCount {
  /** Non-finite values met in the last complete pass. */
  values: number;
  /** Rows excluded for holding one or more. */
  rows: number;
  /** Rows read in that pass, before exclusion. */
  seen: number;
}

function hasNonFinite(rows: Float32Array, n: number): boolean {
  let acc = 0;
  for (let i = 0; i < n; i++) acc += rows[i]! * 0; // NaN·0 and ±Inf·0 are NaN; finite·0 is 0
  return acc !== 0 || Number.isNaN(acc);
}

export function finiteRows(source: RowSource, count: NonFiniteCount): RowSource {
  return async function* (): AsyncGenerator<RowBatch> {
    let values = 0;
    let excluded = 0;
    let seen = 0;
    for await (const b of source()) {
      seen += b.nRows;
      if (!hasNonFinite(b.rows, b.nRows * b.dim)) {
        yield b;
        continue;
      }
      const kept = new Float32Array(b.nRows * b.dim);
      let k = 0;
      for (let r = 0; r < b.nRows; r++) {
        const row = b.rows.subarray(r * b.dim, (r + 1) * b.dim);
        let bad = 0;
        for (let j = 0; j < b.dim; j++) if (!Number.isFinite(row[j]!)) bad++;
        if (bad === 0) kept.set(row, k++ * b.dim);
        else {
          values += bad;
          excluded++;
        }
      }
      // Row offsets of what follows a dropped row shift; top-row provenance keeps the block's first row.
      if (k > 0) yield { ...b, rows: kept.subarray(0, k * b.dim), nRows: k };
    }
    Object.assign(count, { values, rows: excluded, seen });
  };
}
