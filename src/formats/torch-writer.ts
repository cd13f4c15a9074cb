/**
 * Writes PyTorch's `.pt` zip format, the one `torch.save` writes and `torch.load(path,
 * weights_only=True)` reads: `archive/data.pkl` (protocol 2, tensors rebuilt by
 * `torch._utils._rebuild_tensor_v2` from persistent-id storages), `archive/byteorder`
 * ("little"), one `archive/data/<key>` per tensor (raw little-endian bytes), `archive/version`.
 * Entries are stored (not deflated) with their data 64-byte aligned, as torch aligns them, and
 * ZIP64 records wherever a size or offset passes 4 GiB.
 *
 * `encodeTorchFile` returns the file as a list of chunks whose tensor chunks are views of the
 * caller's bytes (nothing is copied; hand them to an atomic writer). `writeTorchFile` streams to
 * disk tensor by tensor, and takes tensors given as chunk generators, so a file larger than
 * memory can be written.
 */
import { createHash, type Hash } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FormatError } from '../errors.js';
import { crc32 } from './crc32.js';
import { DTYPE_BYTES, numel } from './dtypes.js';
import { pickleTorchValue, type TorchTensorChunks, type TorchTensorInput, type TorchValue } from './torch-pickle-writer.js';

export { isTorchTensor, type TorchTensorBytes, type TorchTensorChunks, type TorchTensorInput, type TorchValue } from './torch-pickle-writer.js';

export interface TorchWriteOptions {
  /** The folder inside the zip (torch.load accepts any). @default 'archive' */
  archiveName?: string;
  /** `auto`: ZIP64 fields only where a size or offset needs them; `always`: on every entry and the end records. @default 'auto' */
  zip64?: 'auto' | 'always';
}

export interface TorchFileWriteOptions extends TorchWriteOptions {
  /** Leave all-zero 1 MiB blocks of tensor data unwritten (holes of a sparse file, read back as zeros). @default false */
  sparse?: boolean;
  /** Hash the file (sha256) while writing it. @default true */
  sha256?: boolean;
  /** Write a temporary file beside `path`, fsync it, then rename it over `path`. @default true */
  atomic?: boolean;
}

export interface TorchWriteResult {
  bytes: number;
  /** Hex sha256 of the file; null with `sha256: false`. */
  sha256: string | null;
}

/** The original system's shard: what its hooks torch.save. */
export interface TorchShard {
  global_step: number;
  shard_id: number;
  activations: Record<string, TorchTensorInput>;
  metadata?: Record<string, TorchValue>;
}

const U32_MAX = 0xffffffff;
const ALIGN = 64;
const DOS_DATE_1980_01_01 = 0x21;
const FLAG_DESCRIPTOR = 0x08;

interface Entry {
  name: Uint8Array;
  size: number;
  /** Known up front (small entries and in-memory tensors); null when computed while writing. */
  crc: number | null;
  data: Uint8Array | TorchTensorChunks;
  tensor: boolean;
}

interface Written {
  entry: Entry;
  offset: number;
  crc: number;
}

const enc = new TextEncoder();

function entriesOf(value: TorchValue, options: TorchWriteOptions): Entry[] {
  const archive = options.archiveName ?? 'archive';
  if (!/^[A-Za-z0-9_.-]{1,100}$/.test(archive)) throw new FormatError(`Expected \`archiveName\` to be a plain folder name; got ${JSON.stringify(archive)}`);
  const { pickle, tensors } = pickleTorchValue(value);
  const small = (name: string, data: Uint8Array): Entry => ({ name: enc.encode(`${archive}/${name}`), size: data.byteLength, crc: crc32(data), data, tensor: false });
  const out = [small('data.pkl', pickle), small('byteorder', enc.encode('little'))];
  tensors.forEach((t, key) => {
    const size = numel(t.shape) * DTYPE_BYTES[t.dtype];
    const inMemory = 'data' in t;
    if (inMemory && t.data.byteLength !== size) throw new FormatError(`Tensor ${key} of shape [${t.shape}] and dtype ${t.dtype} needs ${size} bytes but has ${t.data.byteLength}`);
    out.push({ name: enc.encode(`${archive}/data/${key}`), size, crc: inMemory ? crc32(t.data) : null, data: inMemory ? t.data : t, tensor: true });
  });
  out.push(small('version', enc.encode('3\n')));
  return out;
}

function wantsZip64(size: number, offset: number, options: TorchWriteOptions): { sizes: boolean; offset: boolean } {
  const always = options.zip64 === 'always';
  return { sizes: always || size >= U32_MAX, offset: always || offset >= U32_MAX };
}

/** The local header of an entry written at `offset`, padded so its data starts 64-byte aligned. */
function localHeader(e: Entry, offset: number, options: TorchWriteOptions): Uint8Array {
  const z = wantsZip64(e.size, offset, options);
  const zipExtra = z.sizes ? 20 : 0;
  const base = offset + 30 + e.name.byteLength + zipExtra;
  // torch pads with an extra field 'FB' (4 bytes of header, then filler) to align the data.
  let pad = (ALIGN - (base % ALIGN)) % ALIGN;
  if (pad > 0 && pad < 4) pad += ALIGN;
  const out = new Uint8Array(30 + e.name.byteLength + zipExtra + pad);
  const v = new DataView(out.buffer);
  const deferred = e.crc === null;
  v.setUint32(0, 0x04034b50, true);
  v.setUint16(4, z.sizes ? 45 : 20, true);
  v.setUint16(6, deferred ? FLAG_DESCRIPTOR : 0, true);
  v.setUint16(8, 0, true); // stored
  v.setUint16(10, 0, true);
  v.setUint16(12, DOS_DATE_1980_01_01, true);
  v.setUint32(14, deferred ? 0 : e.crc!, true);
  const size32 = z.sizes ? U32_MAX : deferred ? 0 : e.size;
  v.setUint32(18, size32, true);
  v.setUint32(22, size32, true);
  v.setUint16(26, e.name.byteLength, true);
  v.setUint16(28, zipExtra + pad, true);
  out.set(e.name, 30);
  let at = 30 + e.name.byteLength;
  if (z.sizes) {
    v.setUint16(at, 1, true);
    v.setUint16(at + 2, 16, true);
    v.setBigUint64(at + 4, BigInt(deferred ? 0 : e.size), true);
    v.setBigUint64(at + 12, BigInt(deferred ? 0 : e.size), true);
    at += 20;
  }
  if (pad > 0) {
    v.setUint16(at, 0x4246, true); // 'FB'
    v.setUint16(at + 2, pad - 4, true);
  }
  return out;
}

/** The data descriptor after an entry whose CRC was computed while writing it. */
function descriptor(e: Entry, crc: number, offset: number, options: TorchWriteOptions): Uint8Array {
  const wide = wantsZip64(e.size, offset, options).sizes;
  const out = new Uint8Array(wide ? 24 : 16);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0x08074b50, true);
  v.setUint32(4, crc, true);
  if (wide) {
    v.setBigUint64(8, BigInt(e.size), true);
    v.setBigUint64(16, BigInt(e.size), true);
  } else {
    v.setUint32(8, e.size, true);
    v.setUint32(12, e.size, true);
  }
  return out;
}

/** The central directory and end records, for entries written from offset 0 to `cdOffset`. */
function directory(written: Written[], cdOffset: number, options: TorchWriteOptions): Uint8Array {
  const records: Uint8Array[] = [];
  for (const { entry: e, offset, crc } of written) {
    const z = wantsZip64(e.size, offset, options);
    const extra = (z.sizes ? 16 : 0) + (z.offset ? 8 : 0);
    const r = new Uint8Array(46 + e.name.byteLength + (extra > 0 ? 4 + extra : 0));
    const v = new DataView(r.buffer);
    const version = z.sizes || z.offset ? 45 : 20;
    v.setUint32(0, 0x02014b50, true);
    v.setUint16(4, version, true);
    v.setUint16(6, version, true);
    v.setUint16(8, e.crc === null ? FLAG_DESCRIPTOR : 0, true);
    v.setUint16(10, 0, true);
    v.setUint16(12, 0, true);
    v.setUint16(14, DOS_DATE_1980_01_01, true);
    v.setUint32(16, crc, true);
    v.setUint32(20, z.sizes ? U32_MAX : e.size, true);
    v.setUint32(24, z.sizes ? U32_MAX : e.size, true);
    v.setUint16(28, e.name.byteLength, true);
    v.setUint16(30, extra > 0 ? 4 + extra : 0, true);
    v.setUint32(42, z.offset ? U32_MAX : offset, true);
    r.set(e.name, 46);
    let at = 46 + e.name.byteLength;
    if (extra > 0) {
      v.setUint16(at, 1, true);
      v.setUint16(at + 2, extra, true);
      at += 4;
      if (z.sizes) {
        v.setBigUint64(at, BigInt(e.size), true);
        v.setBigUint64(at + 8, BigInt(e.size), true);
        at += 16;
      }
      if (z.offset) v.setBigUint64(at, BigInt(offset), true);
    }
    records.push(r);
  }
  const cdSize = records.reduce((a, r) => a + r.byteLength, 0);
  const count = written.length;
  const zip64 = options.zip64 === 'always' || count >= 0xffff || cdOffset >= U32_MAX || cdSize >= U32_MAX;
  const end = new Uint8Array((zip64 ? 56 + 20 : 0) + 22);
  const v = new DataView(end.buffer);
  let at = 0;
  if (zip64) {
    v.setUint32(0, 0x06064b50, true);
    v.setBigUint64(4, 44n, true);
    v.setUint16(12, 45, true);
    v.setUint16(14, 45, true);
    v.setBigUint64(24, BigInt(count), true);
    v.setBigUint64(32, BigInt(count), true);
    v.setBigUint64(40, BigInt(cdSize), true);
    v.setBigUint64(48, BigInt(cdOffset), true);
    v.setUint32(56, 0x07064b50, true);
    v.setBigUint64(64, BigInt(cdOffset + cdSize), true);
    v.setUint32(72, 1, true);
    at = 76;
  }
  v.setUint32(at, 0x06054b50, true);
  v.setUint16(at + 8, zip64 ? 0xffff : count, true);
  v.setUint16(at + 10, zip64 ? 0xffff : count, true);
  v.setUint32(at + 12, zip64 ? U32_MAX : cdSize, true);
  v.setUint32(at + 16, zip64 ? U32_MAX : cdOffset, true);
  const out = new Uint8Array(cdSize + end.byteLength);
  let o = 0;
  for (const r of records) { out.set(r, o); o += r.byteLength; }
  out.set(end, o);
  return out;
}

/**
 * Encodes `value` as a `.pt` file, as chunks to write in order; tensor data chunks are views of
 * the caller's bytes. Tensors must be in memory (`{dtype, shape, data}`); use writeTorchFile for
 * chunk generators.
 * @example
 * const chunks = encodeTorchFile({ global_step: 200, shard_id: 1, activations: { 'blocks.0': fromFloat32(rows, [n, d]) }, metadata: {} });
 * await writeFileAtomic(path, chunks);
 */
export function encodeTorchFile(value: TorchValue, options: TorchWriteOptions = {}): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  const written: Written[] = [];
  let offset = 0;
  for (const e of entriesOf(value, options)) {
    if (!(e.data instanceof Uint8Array)) throw new FormatError('encodeTorchFile takes tensors as {dtype, shape, data}; write tensors given as chunks with writeTorchFile');
    const header = localHeader(e, offset, options);
    chunks.push(header, e.data);
    written.push({ entry: e, offset, crc: e.crc! });
    offset += header.byteLength + e.size;
  }
  chunks.push(directory(written, offset, options));
  return chunks;
}

/** The original system's shard layout: `{global_step, shard_id, activations, metadata}`. */
export function torchShardValue(shard: TorchShard): TorchValue {
  return { global_step: shard.global_step, shard_id: shard.shard_id, activations: shard.activations, metadata: shard.metadata ?? {} };
}

const BLOCK = 1 << 20;
const ZERO = Buffer.alloc(BLOCK);

class Sink {
  position = 0;
  constructor(private readonly fh: FileHandle, private readonly hash: Hash | null, private readonly sparse: boolean) {}

  /** Writes `bytes` at the current position; with `holes`, all-zero blocks are skipped (left as holes). */
  async write(bytes: Uint8Array, holes = false): Promise<void> {
    this.hash?.update(bytes);
    for (let at = 0; at < bytes.byteLength; at += BLOCK) {
      const piece = bytes.subarray(at, Math.min(bytes.byteLength, at + BLOCK));
      const skip = holes && this.sparse && Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength).equals(ZERO.subarray(0, piece.byteLength));
      if (!skip) {
        let done = 0;
        while (done < piece.byteLength) {
          const { bytesWritten } = await this.fh.write(piece, done, piece.byteLength - done, this.position + done);
          done += bytesWritten;
        }
      }
      this.position += piece.byteLength;
    }
  }
}

/**
 * Writes `value` as a `.pt` file at `path`, one entry at a time: memory holds one chunk of a
 * tensor at a time, not the file. Tensors given as `{dtype, shape, chunks}` are generated while
 * they are written (their CRC follows in a data descriptor, as torch.save writes it).
 * @example
 * await writeTorchFile('activations_shard_000000_step_0.pt', torchShardValue({ global_step: 0, shard_id: 0, activations: { layer: fromFloat32(rows, [n, d]) } }));
 */
export async function writeTorchFile(path: string, value: TorchValue, options: TorchFileWriteOptions = {}): Promise<TorchWriteResult> {
  const entries = entriesOf(value, options);
  const atomic = options.atomic ?? true;
  const target = atomic ? join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`) : path;
  const fh = await open(target, atomic ? 'wx' : 'w');
  const hash = options.sha256 === false ? null : createHash('sha256');
  const sink = new Sink(fh, hash, options.sparse === true);
  try {
    const written: Written[] = [];
    for (const e of entries) {
      const offset = sink.position;
      await sink.write(localHeader(e, offset, options));
      let crc = e.crc;
      if (e.data instanceof Uint8Array) await sink.write(e.data, e.tensor);
      else {
        let n = 0;
        let running = 0;
        for await (const chunk of e.data.chunks()) {
          if (!(chunk instanceof Uint8Array)) throw new FormatError(`Tensor chunks must be Uint8Arrays; got ${typeof chunk}`);
          n += chunk.byteLength;
          if (n > e.size) break;
          running = crc32(chunk, running);
          await sink.write(chunk, true);
        }
        if (n !== e.size) throw new FormatError(`Tensor of shape [${e.data.shape}] and dtype ${e.data.dtype} needs ${e.size} bytes but its chunks gave ${n > e.size ? 'more' : n}`);
        crc = running;
        await sink.write(descriptor(e, crc, offset, options));
      }
      written.push({ entry: e, offset, crc: crc! });
    }
    await sink.write(directory(written, sink.position, options));
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    if (atomic) await unlink(target).catch(() => {});
    throw err;
  }
  await fh.close();
  if (atomic) await rename(target, path);
  return { bytes: sink.position, sha256: hash ? hash.digest('hex') : null };
}
