/**
 * Mini-batches of shuffled rows from a streamed RowSource, with memory bounded by the shuffle
 * buffer, not by the data: the buffer fills first; then each incoming row replaces a random
 * buffered row, which goes to the batch; at the end the remaining rows leave in random order.
 * When the buffer holds the whole data set this is a full uniform shuffle.
 */
import { FormatError } from '../errors.js';
import type { Rng } from '../random.js';
import type { RowSource } from '../storage/rows.js';

export interface ShuffleOptions {
  dim: number;
  batchSize: number;
  bufferRows: number;
  rng: Rng;
  /** Applied to each row as it enters the buffer (normalisation): `out[j] = (row[j] − shift[j]) · invScale`. */
  shift: Float64Array;
  invScale: number;
}

/**
 * Yields `{ rows, nRows }` batches; `rows` is one buffer reused between batches, so use it
 * before asking for the next. The last batch may be smaller than `batchSize`.
 */
export async function* shuffledBatches(source: RowSource, o: ShuffleOptions): AsyncGenerator<{ rows: Float32Array; nRows: number }> {
  const { dim: d, batchSize: B, rng, shift, invScale } = o;
  const cap = Math.max(1, o.bufferRows);
  let buffer = new Float32Array(Math.min(cap, 1024) * d);
  let held = 0;
  const batch = new Float32Array(B * d);
  let inBatch = 0;
  const put = (dst: Float32Array, at: number, src: Float32Array, from: number) => {
    for (let j = 0; j < d; j++) dst[at + j] = (src[from + j]! - shift[j]!) * invScale;
  };
  for await (const block of source()) {
    if (block.dim !== d) throw new FormatError(`Row block from \`${block.shard ?? 'source'}\` has ${block.dim} values per row; earlier blocks had ${d}`);
    for (let r = 0; r < block.nRows; r++) {
      if (held < cap) {
        // Grow geometrically up to the cap, so small data sets never allocate the full buffer.
        if ((held + 1) * d > buffer.length) {
          const grown = new Float32Array(Math.min(cap, Math.max(held + 1, 2 * (buffer.length / d))) * d);
          grown.set(buffer.subarray(0, held * d));
          buffer = grown;
        }
        put(buffer, held * d, block.rows, r * d);
        held++;
        continue;
      }
      const slot = rng.int(cap);
      batch.set(buffer.subarray(slot * d, slot * d + d), inBatch * d);
      put(buffer, slot * d, block.rows, r * d);
      if (++inBatch === B) {
        yield { rows: batch, nRows: B };
        inBatch = 0;
      }
    }
  }
  const order = rng.shuffle(Int32Array.from({ length: held }, (_, i) => i));
  for (const slot of order) {
    batch.set(buffer.subarray(slot * d, slot * d + d), inBatch * d);
    if (++inBatch === B) {
      yield { rows: batch, nRows: B };
      inBatch = 0;
    }
  }
  if (inBatch > 0) yield { rows: batch, nRows: inBatch };
}
