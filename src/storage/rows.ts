/**
 * What the shard reader yields and every analysis consumes: blocks of rows of one layer. A [B,T,D] activation arrives as
 * B·T rows of D. A RowSource can be iterated more than once (one pass per epoch or per stage).
 */
export interface RowBatch {
  /** Row-major values, `nRows × dim`. */
  rows: Float32Array;
  nRows: number;
  dim: number;
  /** Where the rows came from, for top-activating examples: shard file, global step, first row index in that shard. */
  shard?: string;
  globalStep?: number;
  rowOffset?: number;
  /**
   * Where each row came from (ShardReader.rows with `provenance: true`, on shards that have it):
   * row-major `nRows × 5`, columns step, epoch, batch, row, position (storage/provenance.ts).
   */
  provenance?: Int32Array;
}

export type RowSource = () => AsyncIterable<RowBatch>;

/** A RowSource over an in-memory matrix, cut into blocks (for tests and small uploads). */
export function rowsFromMatrix(rows: Float32Array, dim: number, blockRows = 4096, shard = 'memory'): RowSource {
  const nRows = Math.floor(rows.length / dim);
  return async function* () {
    for (let start = 0; start < nRows; start += blockRows) {
      const end = Math.min(nRows, start + blockRows);
      yield { rows: rows.subarray(start * dim, end * dim), nRows: end - start, dim, shard, rowOffset: start };
    }
  };
}
