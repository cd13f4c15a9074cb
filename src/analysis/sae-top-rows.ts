/**
 * Per-latent activation counts and top-activating rows, gathered in one pass. Each latent keeps
 * its `m` best rows in flat typed arrays (a replace-the-minimum list: m is small), so memory is
 * O(L·m) whatever the number of rows.
 */
export interface TopRow {
  shard: string | null;
  global_step: number | null;
  row: number;
  value: number;
}

export interface TopLatent {
  latent: number;
  /** Fraction of rows on which the latent is active. */
  frequency: number;
  top_rows: TopRow[];
}

export class LatentTracker {
  readonly counts: Float64Array;
  private readonly vals: Float32Array;
  private readonly rowIds: Float64Array;
  private readonly refs: Int32Array;
  private readonly filled: Int32Array;
  private readonly minAt: Int32Array;
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
      return { latent: i, frequency: this.counts[i]! / this.rows, top_rows: rows };
    });
  }
}
