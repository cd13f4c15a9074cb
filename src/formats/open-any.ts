/**
 * Opens an activation file on disk, of any size, for reading tensors by range: safetensors,
 * `.npy` and torch.save `.pt`, told apart by their first bytes as readActivationFile does. Only
 * headers (and a `.pt` file's zip directory and data.pkl) are read on open; tensor bytes are read
 * when asked for, whole or by rows, straight into the returned buffer.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { FormatError, LimitError } from '../errors.js';
import { DTYPE_BYTES, numel, type DType, type RawTensor } from './dtypes.js';
import { copyStrided, fortranStrides, isNpy, MAX_NPY_HEADER_BYTES, parseNpyHeader } from './npy.js';
import type { ActivationFileFormat } from './read-any.js';
import { parseHeaderJson, readHeaderLength } from './safetensors.js';
import { RangedTensorReader, type RowRange, type TensorInfo } from './ranged-reader.js';
import { TorchFile, type MetadataValue, type TorchReadOptions } from './torch.js';
import { readFully } from './zip.js';

/** An activation file open for reading by range (TorchFile is one). Close it when done. */
export interface ActivationFileReader {
  readonly format: ActivationFileFormat;
  /** Names the file in messages (its path unless told otherwise). */
  readonly source: string;
  /** The file's size in bytes. */
  readonly bytes: number;
  readonly metadata: Record<string, string>;
  /** Metadata as values, where the format has them (`.pt`); strings otherwise. */
  readonly metadataValues: Record<string, MetadataValue>;
  tensorNames(): string[];
  tensorInfo(name: string): TensorInfo;
  /** A tensor, or rows [start, end) of its first dimension. */
  readTensor(name: string, range?: RowRange): Promise<RawTensor>;
  /** Rows [start, end) of the tensor seen as rows of its last dimension, as [end − start, D]. */
  readRows(name: string, start: number, end: number): Promise<RawTensor>;
  close(): Promise<void>;
}

export interface OpenActivationOptions extends Omit<TorchReadOptions, 'source'> {
  /** Names the file in messages. @default the path */
  source?: string;
}

interface RangeTensor {
  dtype: DType;
  shape: number[];
  /** Absolute offset of the data in the file. */
  start: number;
  /** Fortran-order `.npy` data: copied to row-major on first read. */
  fortran: boolean;
}

/** safetensors and `.npy`: tensors at fixed byte ranges of the file. */
class RangeFile extends RangedTensorReader<RangeTensor> implements ActivationFileReader {
  readonly metadataValues: Record<string, MetadataValue>;
  private copied: { name: string; data: Uint8Array } | null = null;

  constructor(
    readonly format: ActivationFileFormat,
    readonly source: string,
    readonly bytes: number,
    readonly metadata: Record<string, string>,
    tensors: Map<string, RangeTensor>,
    private readonly fh: FileHandle,
  ) {
    super(tensors);
    this.metadataValues = { ...metadata };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.copied = null;
    await this.fh.close();
  }

  protected async elements(name: string, t: RangeTensor, e0: number, e1: number): Promise<Uint8Array> {
    const item = DTYPE_BYTES[t.dtype];
    if ((e1 - e0) * item > 2 ** 32) throw new LimitError(`${this.source}: reading ${(e1 - e0) * item} bytes of \`${name}\` at once is too large; read it by row ranges`);
    if (t.fortran && t.shape.length >= 2) {
      if (this.copied?.name !== name) {
        this.copied = null;
        const raw = new Uint8Array(numel(t.shape) * item);
        await readFully(this.fh, raw, 0, raw.byteLength, t.start, this.source);
        this.copied = { name, data: copyStrided(raw, item, t.shape, fortranStrides(t.shape), 0) };
      }
      return this.copied.data.slice(e0 * item, e1 * item);
    }
    const out = new Uint8Array((e1 - e0) * item);
    await readFully(this.fh, out, 0, out.byteLength, t.start + e0 * item, this.source);
    return out;
  }
}

async function readHead(fh: FileHandle, size: number, length: number, source: string): Promise<Uint8Array> {
  const head = new Uint8Array(Math.min(size, length));
  await readFully(fh, head, 0, head.byteLength, 0, source);
  return head;
}

/**
 * Opens a safetensors, `.npy` or torch.save `.pt` file for reading by range. A `.npy` file's one
 * tensor is named after the file, or `source` when given (`layer3.npy` → `layer3`).
 * @example
 * const file = await openActivationFile('mechint_cache/activations_shard_000000_step_0.pt');
 * try {
 *   const rows = toFloat32(await file.readRows('encoder.layer0', 0, 4096));
 * } finally {
 *   await file.close();
 * }
 */
export async function openActivationFile(path: string, options: OpenActivationOptions = {}): Promise<ActivationFileReader> {
  const source = options.source ?? path;
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const head = await readHead(fh, size, 16, source);
    const zip = head[0] === 0x50 && head[1] === 0x4b && ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6));
    if (zip || head[0] === 0x80) {
      await fh.close();
      return await TorchFile.open(path, { ...options, source });
    }
    if (isNpy(head)) {
      const header = parseNpyHeader(await readHead(fh, size, MAX_NPY_HEADER_BYTES + 12, source), size, source);
      const name = basename(source, extname(source)) || 'tensor';
      const tensors = new Map([[name, { dtype: header.dtype, shape: header.shape, start: header.dataStart, fortran: header.fortranOrder }]]);
      return new RangeFile('npy', source, size, {}, tensors, fh);
    }
    if (head.byteLength >= 9 && head[8] === 0x7b) {
      const n = readHeaderLength(head.subarray(0, 8), size, source);
      const json = new Uint8Array(n);
      await readFully(fh, json, 0, n, 8, source);
      const header = parseHeaderJson(json, size - 8 - n, source);
      const tensors = new Map(Object.entries(header.tensors).map(([k, e]) => [k, { dtype: e.dtype, shape: e.shape, start: header.dataOffset + e.begin, fortran: false }]));
      return new RangeFile('safetensors', source, size, header.metadata, tensors, fh);
    }
    throw new FormatError(`${source}: unrecognised file format; expected safetensors (8-byte length then '{'), .npy (\\x93NUMPY) or a torch.save .pt zip (PK\\x03\\x04)`);
  } catch (err) {
    await fh.close().catch(() => {});
    throw err;
  }
}
