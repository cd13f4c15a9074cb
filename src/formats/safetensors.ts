/**
 * safetensors read and write (huggingface/safetensors): an 8-byte little-endian header length N,
 * N bytes of JSON header (padded with spaces to a multiple of 8), then the data buffer, which the
 * tensors' [begin, end) offsets cover exactly. Reading validates everything before allocating.
 */
import { open } from 'node:fs/promises';
import { FormatError, LimitError } from '../errors.js';
import { DTYPE_BYTES, isDType, numel, type DType, type RawTensor } from './dtypes.js';

/** The reference parser's cap on the header size. */
export const MAX_HEADER_BYTES = 100_000_000;
const MAX_RANK = 16;

export interface SafetensorsEntry {
  dtype: DType;
  shape: number[];
  /** Byte offsets in the data buffer, [begin, end). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** Where the data buffer starts in the file (8 + N). */
  dataOffset: number;
  metadata: Record<string, string>;
  tensors: Record<string, SafetensorsEntry>;
}

/** Serializes tensors (in the given order) to chunks: the header, then each tensor's bytes. */
export function serializeSafetensors(tensors: Record<string, RawTensor>, metadata: Record<string, string> = {}): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const chunks: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const expected = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== expected) {
      throw new FormatError(`Tensor \`${name}\` has ${t.data.byteLength} bytes but shape [${t.shape}] of ${t.dtype} needs ${expected}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + expected] };
    offset += expected;
    chunks.push(t.data);
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const prefix = Buffer.alloc(8 + json.length);
  prefix.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(prefix, 8);
  return [prefix, ...chunks];
}

/** Reads the header length from the first 8 bytes; checks it against the file size and the cap. */
export function readHeaderLength(first8: Uint8Array, fileSize: number, source = 'safetensors file'): number {
  if (fileSize < 8 || first8.byteLength < 8) throw new FormatError(`${source}: ${fileSize} bytes is too short for a safetensors header`);
  const n = Buffer.from(first8.buffer, first8.byteOffset, 8).readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new LimitError(`${source}: header claims ${n} bytes; the limit is ${MAX_HEADER_BYTES}`);
  if (n > BigInt(fileSize - 8)) throw new FormatError(`${source}: header claims ${n} bytes but the file holds ${fileSize - 8} after the length`);
  if (n < 2n) throw new FormatError(`${source}: header of ${n} bytes is too short`);
  return Number(n);
}

/** Parses and validates a header; `dataLength` is the number of bytes after the header. */
export function parseHeaderJson(json: Uint8Array, dataLength: number, source = 'safetensors file'): SafetensorsHeader {
  if (json[0] !== 0x7b) throw new FormatError(`${source}: header does not start with '{'`);
  checkJsonNesting(json, source);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (cause) {
    throw new FormatError(`${source}: header is not valid UTF-8 JSON`, { cause });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new FormatError(`${source}: header is not a JSON object`);
  const metadata: Record<string, string> = {};
  const tensors: Record<string, SafetensorsEntry> = {};
  for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new FormatError(`${source}: __metadata__ is not an object`);
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw new FormatError(`${source}: __metadata__.${k} is not a string`);
        setOwn(metadata, k, v);
      }
      continue;
    }
    setOwn(tensors, name, parseEntry(name, value, source));
  }
  checkCoverage(tensors, dataLength, source);
  return { dataOffset: 8 + json.byteLength, metadata, tensors };
}

/** Defines an own property, so a name like `__proto__` is stored as data, never as the prototype. */
function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * A valid header nests at most 3 deep (header → entry → shape/offsets). Checking that on the raw
 * bytes before JSON.parse keeps a hostile header from building deep or huge object graphs.
 */
function checkJsonNesting(json: Uint8Array, source: string): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i]!;
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > 3) throw new FormatError(`${source}: header nests deeper than a safetensors header can (3 levels: header, entry, shape)`);
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
}

function parseEntry(name: string, value: unknown, source: string): SafetensorsEntry {
  const where = `${source}: tensor \`${name}\``;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new FormatError(`${where} is not an object`);
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (!isDType(dtype)) throw new FormatError(`${where} has unknown dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new FormatError(`${where} has an invalid shape ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]) {
    throw new FormatError(`${where} has invalid data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  // Product in floating point first: an absurd shape must not overflow into a plausible size.
  const bytes = (shape as number[]).reduce((a, d) => a * d, 1) * DTYPE_BYTES[dtype];
  if (bytes !== end - begin) throw new FormatError(`${where}: shape [${shape}] of ${dtype} needs ${bytes} bytes but data_offsets span ${end - begin}`);
  return { dtype, shape: shape as number[], begin, end };
}

function checkCoverage(tensors: Record<string, SafetensorsEntry>, dataLength: number, source: string): void {
  const sorted = Object.entries(tensors).sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let cursor = 0;
  for (const [name, e] of sorted) {
    if (e.begin !== cursor) {
      throw new FormatError(`${source}: tensor \`${name}\` starts at ${e.begin} but the previous one ends at ${cursor} (${e.begin < cursor ? 'overlap' : 'hole'})`);
    }
    cursor = e.end;
  }
  if (cursor !== dataLength) throw new FormatError(`${source}: tensors cover ${cursor} bytes but the data buffer holds ${dataLength}`);
}

/** Parses a whole safetensors file held in memory. Tensors are views into `bytes`. */
export function parseSafetensors(bytes: Uint8Array, source = 'safetensors file'): { header: SafetensorsHeader; tensors: Record<string, RawTensor> } {
  const n = readHeaderLength(bytes.subarray(0, 8), bytes.byteLength, source);
  const header = parseHeaderJson(bytes.subarray(8, 8 + n), bytes.byteLength - 8 - n, source);
  const tensors: Record<string, RawTensor> = {};
  for (const [name, e] of Object.entries(header.tensors)) {
    setOwn(tensors, name, { dtype: e.dtype, shape: e.shape, data: bytes.subarray(header.dataOffset + e.begin, header.dataOffset + e.end) });
  }
  return { header, tensors };
}

/** Reads only the header of a safetensors file (two small reads, whatever the file's size). */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader & { fileSize: number }> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const first8 = Buffer.alloc(8);
    await fh.read(first8, 0, Math.min(8, size), 0);
    const n = readHeaderLength(first8, size, path);
    const json = Buffer.alloc(n);
    // A read may return fewer bytes than asked; a file that shrank mid-read must not parse zeros.
    for (let got = 0; got < n;) {
      const { bytesRead } = await fh.read(json, got, n - got, 8 + got);
      if (bytesRead === 0) throw new FormatError(`${path}: file ended inside the header`);
      got += bytesRead;
    }
    return { ...parseHeaderJson(json, size - 8 - n, path), fileSize: size };
  } finally {
    await fh.close();
  }
}
