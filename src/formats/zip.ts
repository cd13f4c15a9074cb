/**
 * Zip reading (APPNOTE.TXT) for torch.save files, from memory or from a file of any size: the
 * end records (with ZIP64) are found in the last bytes, the central directory is read in one
 * piece, and each entry's data is located from its local header and read by byte range. Every
 * offset and size is checked against the file before it is used. Deflated entries are inflated
 * in a stream that stops the moment the output passes the size the directory declares.
 *
 * The steps that need bytes are written once, as generators that ask for byte ranges: the sync
 * driver answers from a Uint8Array, the async one with positioned reads of a FileHandle.
 */
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createInflateRaw, inflateRawSync } from 'node:zlib';
import { FormatError, LimitError } from '../errors.js';

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate. */
  method: number;
  crc: number;
  compressedSize: number;
  /** Uncompressed bytes, as the central directory declares. */
  size: number;
  localOffset: number;
}

export interface ZipLimits {
  /** Most bytes all entries may declare uncompressed together. */
  maxUncompressedBytes: number;
  /** Most bytes of the central directory (it is read whole). @default 67108864 */
  maxDirectoryBytes?: number;
}

/** A request for `length` bytes at `position`; the driver answers with exactly those bytes. */
interface ReadRequest { position: number; length: number }
type Steps<T> = Generator<ReadRequest, T, Uint8Array>;

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_LOCATOR64 = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const U32_MAX = 0xffffffff;
/** The end record (22 bytes) plus the longest comment it may carry. */
const TAIL_BYTES = 22 + 0xffff;

const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Reads the end records and the central directory. */
function* directorySteps(fileSize: number, source: string, limits: ZipLimits): Steps<Map<string, ZipEntry>> {
  if (fileSize < 22) throw new FormatError(`${source}: not a zip file (torch.save writes a zip starting with PK\\x03\\x04)`);
  const head = dv(yield { position: 0, length: 4 });
  if (head.getUint32(0, true) !== SIG_LOCAL && head.getUint32(0, true) !== SIG_EOCD) {
    throw new FormatError(`${source}: not a zip file (torch.save writes a zip starting with PK\\x03\\x04)`);
  }
  const tailStart = Math.max(0, fileSize - TAIL_BYTES);
  const tailBytes = yield { position: tailStart, length: fileSize - tailStart };
  const tail = dv(tailBytes);
  let eocd = -1;
  for (let at = tailBytes.byteLength - 22; at >= 0; at--) {
    if (tail.getUint32(at, true) === SIG_EOCD && at + 22 + tail.getUint16(at + 20, true) <= tailBytes.byteLength) { eocd = at; break; }
  }
  if (eocd < 0) throw new FormatError(`${source}: zip end-of-central-directory record not found (truncated file?)`);
  let count = tail.getUint16(eocd + 10, true);
  let cdSize = tail.getUint32(eocd + 12, true);
  let cdOffset = tail.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === U32_MAX || cdOffset === U32_MAX) {
    const locatorAt = tailStart + eocd - 20;
    if (locatorAt < 0) throw new FormatError(`${source}: zip64 locator missing`);
    const locator = dv(yield { position: locatorAt, length: 20 });
    if (locator.getUint32(0, true) !== SIG_LOCATOR64) throw new FormatError(`${source}: zip64 locator missing`);
    const recordAt = u64(locator, 8, fileSize, source, 'end record offset');
    if (recordAt + 56 > fileSize) throw new FormatError(`${source}: zip64 end record missing`);
    const record = dv(yield { position: recordAt, length: 56 });
    if (record.getUint32(0, true) !== SIG_EOCD64) throw new FormatError(`${source}: zip64 end record missing`);
    count = u64(record, 32, fileSize, source, 'entry count');
    cdSize = u64(record, 40, fileSize, source, 'directory size');
    cdOffset = u64(record, 48, fileSize, source, 'directory offset');
  }
  if (cdOffset + cdSize > fileSize || count * 46 > cdSize) {
    throw new FormatError(`${source}: zip central directory (${count} entries, ${cdSize} bytes at ${cdOffset}) does not fit the file of ${fileSize} bytes`);
  }
  const maxDirectory = limits.maxDirectoryBytes ?? 64 << 20;
  if (cdSize > maxDirectory) throw new LimitError(`${source}: zip central directory is ${cdSize} bytes; the limit is ${maxDirectory}`);
  const cd = yield { position: cdOffset, length: cdSize };
  return parseCentralDirectory(cd, count, fileSize, source, limits.maxUncompressedBytes);
}

function u64(view: DataView, at: number, fileSize: number, source: string, what: string, max = fileSize): number {
  if (at + 8 > view.byteLength) throw new FormatError(`${source}: zip64 ${what} lies outside its record`);
  const v = view.getBigUint64(at, true);
  if (v > BigInt(max)) throw new FormatError(`${source}: zip64 ${what} ${v} is larger than the file (${fileSize} bytes)`);
  return Number(v);
}

function parseCentralDirectory(cd: Uint8Array, count: number, fileSize: number, source: string, maxUncompressed: number): Map<string, ZipEntry> {
  const view = dv(cd);
  const entries = new Map<string, ZipEntry>();
  let total = 0;
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 46 > cd.byteLength || view.getUint32(at, true) !== SIG_CENTRAL) throw new FormatError(`${source}: zip central directory entry ${i} is malformed`);
    const flags = view.getUint16(at + 8, true);
    const method = view.getUint16(at + 10, true);
    const nameLength = view.getUint16(at + 28, true);
    const extraLength = view.getUint16(at + 30, true);
    const next = at + 46 + nameLength + extraLength + view.getUint16(at + 32, true);
    if (next > cd.byteLength) throw new FormatError(`${source}: zip central directory entry ${i} runs past the directory`);
    const name = new TextDecoder(flags & 0x800 ? 'utf-8' : 'latin1').decode(cd.subarray(at + 46, at + 46 + nameLength));
    let compressedSize = view.getUint32(at + 20, true);
    let size = view.getUint32(at + 24, true);
    let localOffset = view.getUint32(at + 42, true);
    // Zip64 extra field (id 1): the 64-bit values of the fields set to 0xffffffff, in this order.
    const extraEnd = at + 46 + nameLength + extraLength;
    for (let x = at + 46 + nameLength; x + 4 <= extraEnd; x += 4 + view.getUint16(x + 2, true)) {
      if (view.getUint16(x, true) !== 1) continue;
      let field = x + 4;
      const end = Math.min(extraEnd, field + view.getUint16(x + 2, true));
      const take = (what: string, max: number): number => {
        if (field + 8 > end) throw new FormatError(`${source}: zip64 field of \`${name}\` is short`);
        const v = u64(view, field, fileSize, source, `${what} of \`${name}\``, max);
        field += 8;
        return v;
      };
      // The uncompressed size of a deflated entry may exceed the file; the caps below bound it.
      if (size === U32_MAX) size = take('size', Number.MAX_SAFE_INTEGER);
      if (compressedSize === U32_MAX) compressedSize = take('compressed size', fileSize);
      if (localOffset === U32_MAX) localOffset = take('local header offset', fileSize);
      break;
    }
    if (flags & 1) throw new FormatError(`${source}: zip entry \`${name}\` is encrypted`);
    if (method !== 0 && method !== 8) throw new FormatError(`${source}: zip entry \`${name}\` uses compression method ${method}; only stored (0) and deflate (8) are supported`);
    if (method === 0 && size !== compressedSize) throw new FormatError(`${source}: stored zip entry \`${name}\` claims ${size} bytes but holds ${compressedSize}`);
    // Deflate cannot expand past ~1032:1; a larger claim is corrupt (or a bomb), refused before inflating.
    if (method === 8 && size > compressedSize * 1032 + 64) throw new FormatError(`${source}: zip entry \`${name}\` claims ${size} bytes from ${compressedSize} compressed, more than deflate can produce`);
    if (localOffset + 30 + compressedSize > fileSize) throw new FormatError(`${source}: zip entry \`${name}\` claims ${compressedSize} bytes at ${localOffset} but the file has ${fileSize} (truncated?)`);
    total += size;
    if (total > maxUncompressed) throw new LimitError(`${source}: zip entries claim more than ${maxUncompressed} bytes uncompressed (maxUncompressedBytes)`);
    if (entries.has(name)) throw new FormatError(`${source}: zip holds \`${name}\` twice`);
    entries.set(name, { name, method, crc: view.getUint32(at + 16, true), compressedSize, size, localOffset });
    at = next;
  }
  return entries;
}

/** Where an entry's data starts, from its local header. */
function* dataStartSteps(e: ZipEntry, fileSize: number, source: string): Steps<number> {
  const local = dv(yield { position: e.localOffset, length: 30 });
  if (local.getUint32(0, true) !== SIG_LOCAL) throw new FormatError(`${source}: zip entry \`${e.name}\` has no local header at ${e.localOffset}`);
  const dataStart = e.localOffset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
  if (dataStart + e.compressedSize > fileSize) throw new FormatError(`${source}: zip entry \`${e.name}\` claims ${e.compressedSize} bytes at ${dataStart} but the file has ${fileSize} (truncated?)`);
  return dataStart;
}

function runSync<T>(steps: Steps<T>, bytes: Uint8Array, source: string): T {
  let r = steps.next();
  while (!r.done) {
    const { position, length } = r.value;
    if (position < 0 || position + length > bytes.byteLength) throw new FormatError(`${source}: zip record at ${position} lies outside the file (truncated?)`);
    r = steps.next(bytes.subarray(position, position + length));
  }
  return r.value;
}

async function runAsync<T>(steps: Steps<T>, read: (position: number, length: number) => Promise<Uint8Array>): Promise<T> {
  let r = steps.next();
  while (!r.done) r = steps.next(await read(r.value.position, r.value.length));
  return r.value;
}

function tooBig(source: string, e: ZipEntry): FormatError {
  return new FormatError(`${source}: zip entry \`${e.name}\` inflates to more than the ${e.size} bytes it claims (corrupt file, or a zip bomb)`);
}

/** A zip held in memory. */
export class ZipBytes {
  readonly entries: Map<string, ZipEntry>;
  constructor(readonly bytes: Uint8Array, readonly source: string, limits: ZipLimits) {
    this.entries = runSync(directorySteps(bytes.byteLength, source, limits), bytes, source);
  }

  /** An entry's bytes: a view for stored entries; deflated ones are inflated into at most their declared size. */
  read(e: ZipEntry): Uint8Array {
    const start = runSync(dataStartSteps(e, this.bytes.byteLength, this.source), this.bytes, this.source);
    const raw = this.bytes.subarray(start, start + e.compressedSize);
    if (e.method === 0) return raw;
    let data: Uint8Array;
    try {
      // Stops as soon as the output passes the declared size (one byte of slack shows the overrun).
      data = inflateRawSync(raw, { maxOutputLength: e.size + 1 });
    } catch (cause) {
      if ((cause as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooBig(this.source, e);
      throw new FormatError(`${this.source}: zip entry \`${e.name}\` does not inflate`, { cause });
    }
    if (data.byteLength > e.size) throw tooBig(this.source, e);
    if (data.byteLength !== e.size) throw new FormatError(`${this.source}: zip entry \`${e.name}\` inflates to ${data.byteLength} bytes, not the ${e.size} it claims`);
    return data;
  }
}

/** Reads exactly `length` bytes at `position` into `into` at `offset` (fs reads stop at 2 GiB a call). */
export async function readFully(fh: FileHandle, into: Uint8Array, offset: number, length: number, position: number, source: string): Promise<void> {
  const CHUNK = 1 << 30;
  let done = 0;
  while (done < length) {
    const n = Math.min(CHUNK, length - done);
    const { bytesRead } = await fh.read(into, offset + done, n, position + done);
    if (bytesRead === 0) throw new FormatError(`${source}: file ended at byte ${position + done} while reading ${length} bytes at ${position} (truncated, or changed while being read)`);
    done += bytesRead;
  }
}

/** A zip file on disk, read by byte range: memory is bounded by what is asked for, not by the file. */
export class ZipFile {
  private readonly starts = new Map<string, number>();

  private constructor(readonly fh: FileHandle, readonly size: number, readonly source: string, readonly entries: Map<string, ZipEntry>) {}

  static async open(fh: FileHandle, source: string, limits: ZipLimits): Promise<ZipFile> {
    const { size } = await fh.stat();
    const read = async (position: number, length: number): Promise<Uint8Array> => {
      const buf = new Uint8Array(length);
      await readFully(fh, buf, 0, length, position, source);
      return buf;
    };
    const entries = await runAsync(directorySteps(size, source, limits), read);
    return new ZipFile(fh, size, source, entries);
  }

  async dataStart(e: ZipEntry): Promise<number> {
    let start = this.starts.get(e.name);
    if (start === undefined) {
      start = await runAsync(dataStartSteps(e, this.size, this.source), async (position, length) => {
        const buf = new Uint8Array(length);
        await readFully(this.fh, buf, 0, length, position, this.source);
        return buf;
      });
      this.starts.set(e.name, start);
    }
    return start;
  }

  /** Bytes [begin, end) of a stored entry, read straight into `into` at `offset`. */
  async readStored(e: ZipEntry, begin: number, end: number, into: Uint8Array, offset = 0): Promise<void> {
    if (e.method !== 0) throw new FormatError(`${this.source}: zip entry \`${e.name}\` is not stored`);
    if (begin < 0 || end > e.size || begin > end) throw new FormatError(`${this.source}: range ${begin}..${end} is outside zip entry \`${e.name}\` of ${e.size} bytes`);
    await readFully(this.fh, into, offset, end - begin, (await this.dataStart(e)) + begin, this.source);
  }

  /**
   * Bytes [begin, end) of a deflated entry, inflated in a stream on libuv's thread pool (the event
   * loop stays free); stops as soon as `end` is reached. Reading to the end checks the output is
   * exactly the declared size, and stops the moment it passes it.
   */
  async readDeflated(e: ZipEntry, begin: number, end: number, into: Uint8Array, offset = 0): Promise<void> {
    const start = await this.dataStart(e);
    const { fh, source } = this;
    const compressed = async function* (): AsyncGenerator<Uint8Array> {
      const CHUNK = 256 * 1024;
      for (let at = 0; at < e.compressedSize; at += CHUNK) {
        const buf = new Uint8Array(Math.min(CHUNK, e.compressedSize - at));
        await readFully(fh, buf, 0, buf.byteLength, start + at, source);
        yield buf;
      }
    };
    const input = Readable.from(compressed(), { objectMode: false });
    const inflater = createInflateRaw({ chunkSize: 64 * 1024 });
    input.on('error', (err) => inflater.destroy(err));
    input.pipe(inflater);
    let at = 0;
    try {
      for await (const chunk of inflater as AsyncIterable<Buffer>) {
        const from = Math.max(begin, at);
        const to = Math.min(end, at + chunk.length);
        if (to > from) into.set(chunk.subarray(from - at, to - at), offset + from - begin);
        at += chunk.length;
        if (at > e.size) throw tooBig(source, e);
        if (at >= end && end < e.size) break;
      }
    } catch (cause) {
      if (cause instanceof FormatError) throw cause;
      throw new FormatError(`${source}: zip entry \`${e.name}\` does not inflate`, { cause });
    } finally {
      input.destroy();
      inflater.destroy();
    }
    if (at < end) throw new FormatError(`${source}: zip entry \`${e.name}\` inflates to ${at} bytes, not the ${e.size} it claims`);
    if (end === e.size && at !== e.size) throw new FormatError(`${source}: zip entry \`${e.name}\` inflates to ${at} bytes, not the ${e.size} it claims`);
  }

  /** Bytes [begin, end) of any entry, into a fresh buffer. */
  async read(e: ZipEntry, begin = 0, end = e.size): Promise<Uint8Array> {
    const out = new Uint8Array(end - begin);
    if (e.method === 0) await this.readStored(e, begin, end, out);
    else await this.readDeflated(e, begin, end, out);
    return out;
  }
}
