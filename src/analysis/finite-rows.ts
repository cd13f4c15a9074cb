/**
 * Rows with NaN or ±Infinity are never silently lost or let through: this filter drops them
 * from the stream an analysis reads and counts them, and the executor reports the count in the
 * result (`non_finite`). A block with none is passed on as it is (one multiply-add per value).
 */
import type { RowBatch, RowSource } from '../storage/rows.js';
import { PROVENANCE_COLUMNS } from '../storage/provenance.js';

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
      // Runs of finite rows go on as blocks of their own, so each keeps its true row offset (and provenance).
      let runStart = 0;
      const cut = function* (from: number, to: number): Generator<RowBatch> {
        if (to <= from) return;
        yield {
          ...b,
          rows: b.rows.subarray(from * b.dim, to * b.dim),
          nRows: to - from,
          ...(b.rowOffset === undefined ? {} : { rowOffset: b.rowOffset + from }),
          ...(b.provenance === undefined ? {} : { provenance: b.provenance.subarray(from * PROVENANCE_COLUMNS.length, to * PROVENANCE_COLUMNS.length) }),
        };
      };
      for (let r = 0; r < b.nRows; r++) {
        let bad = 0;
        for (let j = r * b.dim; j < (r + 1) * b.dim; j++) if (!Number.isFinite(b.rows[j]!)) bad++;
        if (bad === 0) continue;
        values += bad;
        excluded++;
        yield* cut(runStart, r);
        runStart = r + 1;
      }
      yield* cut(runStart, b.nRows);
    }
    Object.assign(count, { values, rows: excluded, seen });
  };
}
