/**
 * Per-latent activation counts, top-activating rows and activation histograms, gathered in one
 * pass. Each latent keeps its `m` best rows in flat typed arrays (a replace-the-minimum list: m is
 * small) and a fixed number of histogram bins, so memory is O(L·(m + bins)) whatever the number
 * of rows.
 */
import type { RowOrigin, RowRef } from '../storage/provenance.js';

export interface TopRow {
  shard: string | null;
  global_step: number | null;
  row: number;
  value: number;
  /** Where the row came from, from the shard's provenance (and its input and target when they were captured). */
  origin?: Omit<RowOrigin, 'shard' | 'shardRow'>;
}

/** Fills in each top row's `origin` (one lookup for all of them). */
export async function attachOrigins(top: TopLatent[], origins: (refs: readonly RowRef[]) => Promise<RowOrigin[]>): Promise<void> {
  const rows = top.flatMap((t) => t.top_rows).filter((r) => r.shard !== null);
  if (rows.length === 0) return;
  const found = await origins(rows.map((r) => ({ shard: r.shard!, row: r.row })));
  for (const [i, r] of rows.entries()) {
    const { shard: _shard, shardRow: _row, ...origin } = found[i]!;
    r.origin = origin;
  }
}

/** Counts of a latent's positive activations in equal-width bins from 0 to the last edge. */
export interface ActivationHistogram {
  /** `counts.length + 1` edges, from 0 up. */
  bin_edges: number[];
  counts: number[];
}

export interface TopLatent {
  latent: number;
  /** Fraction of rows on which the latent is active. */
  frequency: number;
  top_rows: TopRow[];
  /** Where the latent's activations (when active) fall. */
  activation_histogram: ActivationHistogram;
}

/** Histogram bins per latent; even, so two bins can merge into one when the range doubles. */
export const HISTOGRAM_BINS = 16;

export class LatentTracker {
  readonly counts: Float64Array;
  private readonly vals: Float32Array;
  private readonly rowIds: Float64Array;
  private readonly refs: Int32Array;
  private readonly filled: Int32Array;
  private readonly minAt: Int32Array;
  private readonly hist: Float64Array;
  /** Upper edge of each latent's histogram; 0 until it first fires. */
  private readonly histTop: Float64Array;
  private readonly sources: Array<{ shard: string | null; globalStep: number | null }> = [];
  private readonly sourceIndex = new Map<string, number>();
  rows = 0;
  active = 0;

  constructor(private readonly L: number, private readonly m: number) {
    this.counts = new Float64Array(L);
    this.vals = new Float32Array(L * m);
    this.rowIds = new Float64Array(L * m);
    this.refs = new Int32Array(L * m);
    this.filled = new Int32Array(L);
    this.minAt = new Int32Array(L);
    this.hist = new Float64Array(L * HISTOGRAM_BINS);
    this.histTop = new Float64Array(L);
  }

  /**
   * The range is not known before the pass, so it starts at the first value's power of two and
   * doubles (merging bin pairs) whenever a larger value arrives: one pass, fixed memory.
   */
  private histAdd(i: number, value: number): void {
    if (!Number.isFinite(value)) return;
    const B = HISTOGRAM_BINS;
    const base = i * B;
    let top = this.histTop[i]!;
    if (top === 0) {
      top = 2 ** Math.ceil(Math.log2(value));
      if (!(top >= value) || top === 0) top = value;
    }
    while (value > top) {
      for (let j = 0; j < B / 2; j++) this.hist[base + j] = this.hist[base + 2 * j]! + this.hist[base + 2 * j + 1]!;
      this.hist.fill(0, base + B / 2, base + B);
      top *= 2;
    }
    this.histTop[i] = top;
    this.hist[base + Math.min(B - 1, Math.floor((value / top) * B))]! += 1;
  }

  histogram(i: number): ActivationHistogram {
    const B = HISTOGRAM_BINS;
    const top = this.histTop[i]!;
    return {
      bin_edges: Array.from({ length: B + 1 }, (_, j) => (top * j) / B),
      counts: Array.from(this.hist.subarray(i * B, (i + 1) * B)),
    };
  }

  /** Registers where the next rows come from; returns a reference for `add`. */
  source(shard: string | undefined, globalStep: number | undefined): number {
    const key = `${shard ?? ''}\u0000${globalStep ?? ''}`;
    let ref = this.sourceIndex.get(key);
    if (ref === undefined) {
      ref = this.sources.length;
      this.sources.push({ shard: shard ?? null, globalStep: globalStep ?? null });
      this.sourceIndex.set(key, ref);
    }
    return ref;
  }

  /** Latent `i` took `value` (> 0) on row `row` of source `ref`. */
  add(i: number, value: number, ref: number, row: number): void {
    this.counts[i]! += 1;
    this.active++;
    this.histAdd(i, value);
    const { m } = this;
    const base = i * m;
    const f = this.filled[i]!;
    if (f < m) {
      this.vals[base + f] = value;
      this.rowIds[base + f] = row;
      this.refs[base + f] = ref;
      this.filled[i] = f + 1;
      if (f === 0 || value < this.vals[base + this.minAt[i]!]!) this.minAt[i] = f;
      return;
    }
    const at = this.minAt[i]!;
    if (!(value > this.vals[base + at]!)) return;
    this.vals[base + at] = value;
    this.rowIds[base + at] = row;
    this.refs[base + at] = ref;
    let lo = 0;
    for (let j = 1; j < m; j++) if (this.vals[base + j]! < this.vals[base + lo]!) lo = j;
    this.minAt[i] = lo;
  }

  frequencies(): number[] {
    return Array.from(this.counts, (c) => (this.rows > 0 ? c / this.rows : 0));
  }

  /** The `n` most frequently active latents (ties: lower index), with their best rows, best first. */
  top(n: number): TopLatent[] {
    const order = Array.from({ length: this.L }, (_, i) => i)
      .filter((i) => this.counts[i]! > 0)
      .sort((a, b) => this.counts[b]! - this.counts[a]! || a - b)
      .slice(0, n);
    return order.map((i) => {
      const base = i * this.m;
      const rows: TopRow[] = [];
      for (let j = 0; j < this.filled[i]!; j++) {
        const src = this.sources[this.refs[base + j]!]!;
        rows.push({ shard: src.shard, global_step: src.globalStep, row: this.rowIds[base + j]!, value: this.vals[base + j]! });
      }
      rows.sort((a, b) => b.value - a.value || a.row - b.row);
      return { latent: i, frequency: this.counts[i]! / this.rows, top_rows: rows, activation_histogram: this.histogram(i) };
    });
  }
}
