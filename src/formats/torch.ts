/**
 * Reads files written by `torch.save` (the zip format, torch >= 1.6) without running anything
 * from them: the zip's `data.pkl` goes through the restricted unpickler (torch-layout.ts);
 * storages come from `data/<key>` entries. Every size a file claims is checked against the bytes
 * it holds or a limit before anything is allocated.
 *
 * Two readers share that parsing: `readTorchFile(bytes)` for a file held in memory, and
 * `openTorchFile(path)` for a file of any size on disk (ZIP64 included), which reads the zip's
 * directory and `data.pkl` by positioned reads and each tensor, or range of its rows, by byte
 * range straight into its buffer: memory follows what is read, not the file.
 *
 * Dtypes: float32/16/64 and bfloat16 stay as F32/F16/F64/BF16, integer and bool tensors keep
 * their dtype (I64, I32, I16, I8, U8, BOOL); analyses convert with `toFloat32`.
 */
import { constants as bufferConstants } from 'node:buffer';
import { open, type FileHandle } from 'node:fs/promises';
import { FormatError, LimitError } from '../errors.js';
import { crc32 } from './crc32.js';
import { DTYPE_BYTES, numel, type RawTensor } from './dtypes.js';
import { copyStrided } from './npy.js';
import type { PickleLimits } from './pickle.js';
import { parseTorchLayout, type MetadataValue, type TensorPlan, type TorchLayout, type TorchView } from './torch-layout.js';
import { RangedTensorReader } from './ranged-reader.js';
import { ZipBytes, ZipFile, type ZipEntry } from './zip.js';

export type { MetadataValue } from './torch-layout.js';

export interface TorchReadOptions {
  /** Names the file in messages. @default 'pt file' (the path for openTorchFile) */
  source?: string;
  /** Most bytes the zip's entries may claim uncompressed, all together; checked before inflating. @default 4294967296 (in memory); Number.MAX_SAFE_INTEGER (openTorchFile) */
  maxUncompressedBytes?: number;
  /** Most bytes of `data.pkl`. @default 67108864 */
  maxPickleBytes?: number;
  /**
   * Tensors copied to row-major (non-contiguous views, concatenated lists) may take at most this
   * many times the bytes of the storages read; stops stride-0 views from expanding a tiny file.
   * @default 4
   */
  maxExpansion?: number;
  /** Check each zip entry's CRC-32 (openTorchFile: `data.pkl`, and each storage once it has been read through from its start). @default true */
  verifyCrc?: boolean;
  pickleLimits?: Partial<PickleLimits>;
}

export interface ActivationData {
  tensors: Record<string, RawTensor>;
  /** Metadata values as strings: strings as they are, everything else as JSON (Python's spelling of NaN and ±Infinity). */
  metadata: Record<string, string>;
  /** The same metadata as values: numbers stay numbers (NaN included), dicts are objects. */
  metadataValues: Record<string, MetadataValue>;
}

/** The pickled magic number that opens a legacy (pre-1.6, non-zip) torch.save file. */
const LEGACY_MAGIC = Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
const DEFAULT_MAX_PICKLE = 64 << 20;

function legacyError(source: string): FormatError {
  return new FormatError(`${source}: unsupported legacy format (a pre-1.6 torch.save pickle, not a zip); re-save with torch >= 1.6 (torch.save default): torch.save(torch.load(f), f)`);
}

/** The one `<archive>/data.pkl` of a torch zip, and the prefix its storages share. */
function findArchive(entries: ReadonlyMap<string, ZipEntry>, source: string, maxPickle: number): { prefix: string; pkl: ZipEntry; byteorder?: ZipEntry } {
  const pkl = [...entries.keys()].filter((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (pkl.length !== 1) throw new FormatError(`${source}: expected one <archive>/data.pkl entry in the zip, found ${pkl.length}; is this a torch.save file?`);
  const prefix = pkl[0]!.slice(0, -'data.pkl'.length);
  const entry = entries.get(pkl[0]!)!;
  if (entry.size > maxPickle) throw new LimitError(`${source}: data.pkl is ${entry.size} bytes; the limit is ${maxPickle}`);
  return { prefix, pkl: entry, byteorder: entries.get(`${prefix}byteorder`) };
}

function checkByteorder(bytes: Uint8Array, source: string): void {
  const order = new TextDecoder('latin1').decode(bytes.subarray(0, 16));
  if (order !== 'little') throw new FormatError(`${source}: byteorder is ${JSON.stringify(order)}; only little-endian files are supported`);
}

function checkCrc(data: Uint8Array, e: ZipEntry, source: string, crc = crc32(data)): void {
  if (crc !== e.crc) throw new FormatError(`${source}: zip entry \`${e.name}\` fails its CRC-32 check (corrupt file)`);
}

/** Reads a torch.save zip file held in memory. */
export function readTorchFile(bytes: Uint8Array, options: TorchReadOptions = {}): ActivationData {
  const source = options.source ?? 'pt file';
  if (startsWith(bytes, LEGACY_MAGIC) || bytes[0] === 0x80) throw legacyError(source);
  const zip = new ZipBytes(bytes, source, { maxUncompressedBytes: options.maxUncompressedBytes ?? 2 ** 32 });
  const verifyCrc = options.verifyCrc ?? true;
  const cache = new Map<string, Uint8Array>();
  const read = (entry: ZipEntry): Uint8Array => {
    let data = cache.get(entry.name);
    if (!data) {
      data = zip.read(entry);
      if (verifyCrc) checkCrc(data, entry, source);
      cache.set(entry.name, data);
    }
    return data;
  };
  const archive = findArchive(zip.entries, source, options.maxPickleBytes ?? DEFAULT_MAX_PICKLE);
  if (archive.byteorder) checkByteorder(read(archive.byteorder), source);
  const layout = parseTorchLayout(read(archive.pkl), {
    source, prefix: archive.prefix, entries: zip.entries, maxExpansion: options.maxExpansion ?? 4, pickleLimits: options.pickleLimits,
  });
  const tensors: Record<string, RawTensor> = {};
  for (const [name, plan] of layout.tensors) {
    const item = DTYPE_BYTES[plan.dtype];
    const viewBytes = (v: TorchView): Uint8Array => {
      const storage = read(v.storage.entry);
      if (v.contiguous) return storage.subarray(v.offset * item, (v.offset + v.elements) * item);
      return copyStrided(storage, item, v.size, v.stride, v.offset);
    };
    let data: Uint8Array;
    if (plan.parts.length === 1) data = viewBytes(plan.parts[0]!);
    else {
      data = new Uint8Array(numel(plan.shape) * item);
      let at = 0;
      for (const p of plan.parts) {
        const part = viewBytes(p);
        data.set(part, at);
        at += part.byteLength;
      }
    }
    Object.defineProperty(tensors, name, { value: { dtype: plan.dtype, shape: plan.shape, data }, enumerable: true, writable: true, configurable: true });
  }
  return { tensors, metadata: layout.metadata, metadataValues: layout.metadataValues };
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  return bytes.byteLength >= prefix.byteLength && prefix.every((b, i) => bytes[i] === b);
}

export type { RowRange, TensorInfo } from './ranged-reader.js';

/**
 * A torch.save file open for reading by range. Tensors are read on request, whole or by rows:
 * a contiguous tensor (what torch.save writes for activations) is one positioned read straight
 * into the returned buffer; a non-contiguous view is copied to row-major once and kept until
 * another one is read. Close it when done.
 * @example
 * const file = await openTorchFile('activations_shard_000000_step_0.pt');
 * try {
 *   for (const name of file.tensorNames()) console.log(name, file.tensorInfo(name).shape);
 *   const first = await file.readTensor('encoder.layer0', { start: 0, end: 1024 });
 * } finally {
 *   await file.close();
 * }
 */
export class TorchFile extends RangedTensorReader<TensorPlan> {
  readonly format = 'pt' as const;
  readonly metadata: Record<string, string>;
  readonly metadataValues: Record<string, MetadataValue>;
  /** CRC-32 of each storage, accumulated while it is read from its start, in order. */
  private readonly crcCursor = new Map<string, { next: number; crc: number }>();
  private readonly verifiedEntries = new Set<string>();
  private copied: { view: TorchView; data: Uint8Array } | null = null;

  private constructor(private readonly zip: ZipFile, readonly source: string, layout: TorchLayout, private readonly verifyCrc: boolean) {
    super(layout.tensors);
    this.metadata = layout.metadata;
    this.metadataValues = layout.metadataValues;
  }

  /** The file's size in bytes. */
  get bytes(): number {
    return this.zip.size;
  }

  /** Opens `path` (a FileHandle is closed by `close()` either way). */
  static async open(path: string, options: TorchReadOptions = {}): Promise<TorchFile> {
    const source = options.source ?? path;
    const fh = await open(path, 'r');
    try {
      return await TorchFile.fromHandle(fh, source, options);
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
  }

  private static async fromHandle(fh: FileHandle, source: string, options: TorchReadOptions): Promise<TorchFile> {
    const head = new Uint8Array(16);
    const { bytesRead } = await fh.read(head, 0, 16, 0);
    if (startsWith(head.subarray(0, bytesRead), LEGACY_MAGIC) || head[0] === 0x80) throw legacyError(source);
    const zip = await ZipFile.open(fh, source, { maxUncompressedBytes: options.maxUncompressedBytes ?? Number.MAX_SAFE_INTEGER });
    const verifyCrc = options.verifyCrc ?? true;
    const archive = findArchive(zip.entries, source, options.maxPickleBytes ?? DEFAULT_MAX_PICKLE);
    if (archive.byteorder) {
      if (archive.byteorder.size > 64) throw new FormatError(`${source}: byteorder entry is ${archive.byteorder.size} bytes; expected "little"`);
      checkByteorder(await zip.read(archive.byteorder), source);
    }
    const pkl = await zip.read(archive.pkl);
    if (verifyCrc) checkCrc(pkl, archive.pkl, source);
    const layout = parseTorchLayout(pkl, {
      source, prefix: archive.prefix, entries: zip.entries, maxExpansion: options.maxExpansion ?? 4, pickleLimits: options.pickleLimits,
    });
    return new TorchFile(zip, source, layout, verifyCrc);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.copied = null;
    await this.zip.fh.close();
  }

  /** Elements [e0, e1) of the tensor in row-major order, into a fresh buffer. */
  protected async elements(name: string, plan: TensorPlan, e0: number, e1: number): Promise<Uint8Array> {
    const item = DTYPE_BYTES[plan.dtype];
    const bytes = (e1 - e0) * item;
    if (bytes > bufferConstants.MAX_LENGTH) {
      throw new LimitError(`${this.source}: reading ${bytes} bytes of \`${name}\` at once is past this runtime's largest buffer (${bufferConstants.MAX_LENGTH}); read it by row ranges`);
    }
    const out = new Uint8Array(bytes);
    let partStart = 0;
    for (const part of plan.parts) {
      const partEnd = partStart + part.elements;
      const a = Math.max(e0, partStart);
      const b = Math.min(e1, partEnd);
      if (b > a) {
        const dst = (a - e0) * item;
        if (part.contiguous) {
          const begin = (part.offset + a - partStart) * item;
          const end = (part.offset + b - partStart) * item;
          await this.readStorage(part.storage.entry, begin, end, out, dst);
        } else {
          const whole = await this.copyView(part);
          out.set(whole.subarray((a - partStart) * item, (b - partStart) * item), dst);
        }
      }
      partStart = partEnd;
      if (partStart >= e1) break;
    }
    return out;
  }

  /** A non-contiguous view copied to row-major; the last one is kept for the next row range. */
  private async copyView(view: TorchView): Promise<Uint8Array> {
    if (this.copied?.view === view) return this.copied.data;
    this.copied = null;
    const item = DTYPE_BYTES[view.storage.dtype];
    const [first, last] = view.span();
    const span = new Uint8Array((last - first + 1) * item);
    await this.readStorage(view.storage.entry, first * item, (last + 1) * item, span, 0);
    const data = copyStrided(span, item, view.size, view.stride, 0);
    this.copied = { view, data };
    return data;
  }

  /** Storage bytes [begin, end) into `out` at `at`; checks the CRC once a storage has been read through in order. */
  private async readStorage(e: ZipEntry, begin: number, end: number, out: Uint8Array, at: number): Promise<void> {
    if (e.method === 0) await this.zip.readStored(e, begin, end, out, at);
    else await this.zip.readDeflated(e, begin, end, out, at);
    if (!this.verifyCrc || this.verifiedEntries.has(e.name)) return;
    const cursor = this.crcCursor.get(e.name) ?? { next: 0, crc: 0 };
    if (begin !== cursor.next) return;
    cursor.crc = crc32(out.subarray(at, at + end - begin), cursor.crc);
    cursor.next = end;
    if (end === e.size) {
      this.crcCursor.delete(e.name);
      checkCrc(out, e, this.source, cursor.crc);
      this.verifiedEntries.add(e.name);
    } else {
      this.crcCursor.set(e.name, cursor);
    }
  }
}

/** Opens a torch.save `.pt` file of any size for reading tensors by range. */
export function openTorchFile(path: string, options: TorchReadOptions = {}): Promise<TorchFile> {
  return TorchFile.open(path, options);
}
