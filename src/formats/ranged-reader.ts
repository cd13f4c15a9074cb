/**
 * What every on-disk tensor reader offers (tensor info, a tensor or its rows by range) from the
 * two things a format knows: each tensor's dtype and shape, and how to read a run of its
 * elements in row-major order. TorchFile (zip entries, strided views) and the safetensors/`.npy`
 * reader (fixed byte ranges) differ only there.
 */
import { FormatError } from '../errors.js';
import { numel, DTYPE_BYTES, type DType, type RawTensor } from './dtypes.js';

/** A tensor of a file, as the file describes it (nothing read yet). */
export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** Bytes of the tensor when read whole (row-major). */
  byteLength: number;
}

/** A range of rows, `start` inclusive, `end` exclusive. */
export interface RowRange {
  start: number;
  end: number;
}

export abstract class RangedTensorReader<T extends { dtype: DType; shape: number[] }> {
  abstract readonly source: string;
  protected closed = false;

  protected constructor(private readonly entries: ReadonlyMap<string, T>) {}

  /** Elements [e0, e1) of the tensor in row-major order, into a fresh buffer. */
  protected abstract elements(name: string, t: T, e0: number, e1: number): Promise<Uint8Array>;

  tensorNames(): string[] {
    return [...this.entries.keys()];
  }

  tensorInfo(name: string): TensorInfo {
    const t = this.entry(name);
    return { dtype: t.dtype, shape: [...t.shape], byteLength: numel(t.shape) * DTYPE_BYTES[t.dtype] };
  }

  /** Reads a tensor, or rows [start, end) of its first dimension (shape [end − start, ...rest]). */
  async readTensor(name: string, range?: RowRange): Promise<RawTensor> {
    const t = this.entry(name);
    if (t.shape.length === 0 || !range) {
      if (range && (range.start !== 0 || range.end !== 1)) throw new FormatError(`${this.source}: \`${name}\` is 0-d; it has no rows to range over`);
      return { dtype: t.dtype, shape: [...t.shape], data: await this.elements(name, t, 0, numel(t.shape)) };
    }
    const inner = numel(t.shape.slice(1));
    this.checkRange(name, range.start, range.end, t.shape[0]!);
    return { dtype: t.dtype, shape: [range.end - range.start, ...t.shape.slice(1)], data: await this.elements(name, t, range.start * inner, range.end * inner) };
  }

  /**
   * Reads rows [start, end) of the tensor seen as rows of its last dimension ([B, T, D] has B·T
   * rows of D; a 1-D or 0-d tensor has rows of 1), as shape [end − start, D].
   */
  async readRows(name: string, start: number, end: number): Promise<RawTensor> {
    const t = this.entry(name);
    const dim = t.shape.length <= 1 ? 1 : t.shape.at(-1)!;
    this.checkRange(name, start, end, dim === 0 ? 0 : numel(t.shape) / dim);
    return { dtype: t.dtype, shape: [end - start, dim], data: await this.elements(name, t, start * dim, end * dim) };
  }

  protected entry(name: string): T {
    if (this.closed) throw new FormatError(`${this.source}: the file was closed`);
    const t = this.entries.get(name);
    if (!t) throw new FormatError(`${this.source}: no tensor \`${name}\`; the file holds ${this.tensorNames().join(', ') || 'none'}`);
    return t;
  }

  private checkRange(name: string, start: number, end: number, rows: number): void {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start || end > rows) {
      throw new FormatError(`${this.source}: rows ${start}..${end} are outside \`${name}\`, which has ${rows}`);
    }
  }
}
