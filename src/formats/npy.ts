/**
 * NumPy `.npy` read and write (numpy/lib/format.py, versions 1.0, 2.0 and 3.0): the magic
 * `\x93NUMPY`, a version, a little-endian header length (u16 in v1, u32 in v2/v3), a header that
 * is a Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`, then the
 * raw data. Little-endian numeric dtypes only; Fortran-order data is copied to row-major. The
 * header is parsed by a tiny literal parser, never evaluated.
 */
import { FormatError, LimitError } from '../errors.js';
import { DTYPE_BYTES, numel, type DType, type RawTensor } from './dtypes.js';

export const NPY_MAGIC = Uint8Array.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);
/** numpy itself refuses headers over 10,000 bytes by default; leave room for long shapes. */
export const MAX_NPY_HEADER_BYTES = 65_536;
const MAX_RANK = 32;

/** `.npy` type codes (without the byte-order character) and the dtype each maps to. */
const NPY_DTYPES: Readonly<Record<string, DType>> = {
  f2: 'F16', f4: 'F32', f8: 'F64', i1: 'I8', i2: 'I16', i4: 'I32', i8: 'I64',
  u1: 'U8', u2: 'U16', u4: 'U32', u8: 'U64', b1: 'BOOL',
};
const DESCR_OF: Partial<Record<DType, string>> = Object.fromEntries(
  Object.entries(NPY_DTYPES).map(([code, dtype]) => [dtype, (DTYPE_BYTES[dtype] === 1 ? '|' : '<') + code]),
);

export function isNpy(bytes: Uint8Array): boolean {
  return bytes.byteLength >= 6 && NPY_MAGIC.every((b, i) => bytes[i] === b);
}

/** What a `.npy` header says: where the data starts and how it is laid out. */
export interface NpyHeader {
  dtype: DType;
  shape: number[];
  fortranOrder: boolean;
  dataStart: number;
}

/**
 * Parses a `.npy` header from the first bytes of a file of `fileSize` bytes (the header is at most
 * MAX_NPY_HEADER_BYTES + 12 bytes) and checks the data the shape needs is what the file holds.
 */
export function parseNpyHeader(head: Uint8Array, fileSize: number, source = 'npy file'): NpyHeader {
  if (!isNpy(head)) throw new FormatError(`${source}: does not start with the .npy magic \\x93NUMPY`);
  if (head.byteLength < 10) throw new FormatError(`${source}: ${head.byteLength} bytes is too short for a .npy header`);
  const major = head[6]!;
  if (major < 1 || major > 3) throw new FormatError(`${source}: .npy version ${major}.${head[7]} is not supported (1.0, 2.0 and 3.0 are)`);
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (major > 1 && head.byteLength < 12) throw new FormatError(`${source}: ${head.byteLength} bytes is too short for a v${major} .npy header`);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const headerStart = major === 1 ? 10 : 12;
  if (headerLength > MAX_NPY_HEADER_BYTES) throw new LimitError(`${source}: .npy header claims ${headerLength} bytes; the limit is ${MAX_NPY_HEADER_BYTES}`);
  if (headerLength > head.byteLength - headerStart) {
    throw new FormatError(`${source}: .npy header claims ${headerLength} bytes but the file holds ${Math.min(head.byteLength, fileSize) - headerStart} after the length`);
  }
  const dataStart = headerStart + headerLength;
  const text = decodeHeader(head.subarray(headerStart, dataStart), major, source);
  const { descr, fortranOrder, shape } = parseHeaderDict(text, source);
  const dtype = dtypeOf(descr, source);
  // Product in floating point: an absurd shape must not wrap into a plausible size.
  const size = shape.reduce((a, d) => a * d, 1) * DTYPE_BYTES[dtype];
  const available = fileSize - dataStart;
  if (size !== available) throw new FormatError(`${source}: shape (${shape.join(', ')}) of ${descr} needs ${size} bytes but the file holds ${available} after the header`);
  return { dtype, shape, fortranOrder, dataStart };
}

/** Element strides of Fortran-order data (they grow from the first dimension). */
export function fortranStrides(shape: readonly number[]): number[] {
  const strides: number[] = [];
  let s = 1;
  for (const d of shape) { strides.push(s); s *= d; }
  return strides;
}

/** Parses a whole `.npy` file. C-order data is a view into `bytes`; Fortran order is copied. */
export function parseNpy(bytes: Uint8Array, source = 'npy file'): RawTensor {
  const { dtype, shape, fortranOrder, dataStart } = parseNpyHeader(bytes, bytes.byteLength, source);
  const data = bytes.subarray(dataStart);
  if (!fortranOrder || shape.length < 2) return { dtype, shape, data };
  return { dtype, shape, data: copyStrided(data, DTYPE_BYTES[dtype], shape, fortranStrides(shape), 0) };
}

function decodeHeader(raw: Uint8Array, major: number, source: string): string {
  try {
    return new TextDecoder(major >= 3 ? 'utf-8' : 'latin1', { fatal: true }).decode(raw);
  } catch (cause) {
    throw new FormatError(`${source}: .npy header is not valid ${major >= 3 ? 'UTF-8' : 'latin-1'}`, { cause });
  }
}

function dtypeOf(descr: unknown, source: string): DType {
  if (typeof descr !== 'string') {
    throw new FormatError(`${source}: .npy descr ${JSON.stringify(descr)} is not supported (structured dtypes are not; use a plain numeric dtype)`);
  }
  const order = descr[0];
  const dtype = NPY_DTYPES[descr.slice(1)];
  if (order === '>' && dtype && DTYPE_BYTES[dtype] > 1) throw new FormatError(`${source}: .npy descr '${descr}' is big-endian; save little-endian (arr.astype('<${descr.slice(1)}'))`);
  if ((order !== '<' && order !== '|' && order !== '>') || !dtype) {
    throw new FormatError(`${source}: .npy descr '${descr}' is not supported; supported: ${Object.keys(NPY_DTYPES).join(', ')} (little-endian)`);
  }
  return dtype;
}

type HeaderValue = string | boolean | number[];

/** Parses the header's dict literal: str keys; str, True/False or int-tuple values. */
function parseHeaderDict(text: string, source: string): { descr: unknown; fortranOrder: boolean; shape: number[] } {
  let i = 0;
  const fail = (what: string): never => {
    throw new FormatError(`${source}: .npy header ${what} at character ${i}: ${JSON.stringify(text.slice(0, 120))}`);
  };
  const ws = (): void => { while (i < text.length && ' \t\n'.includes(text[i]!)) i++; };
  const expect = (c: string): void => { ws(); if (text[i] !== c) fail(`expects '${c}'`); i++; };
  const str = (): string => {
    const q = text[i];
    if (q !== "'" && q !== '"') fail('expects a string');
    const end = text.indexOf(q!, i + 1);
    if (end < 0) fail('has an unterminated string');
    const s = text.slice(i + 1, end);
    if (s.includes('\\')) fail('has an escaped string');
    i = end + 1;
    return s;
  };
  const value = (): HeaderValue => {
    ws();
    if (text.startsWith('True', i)) { i += 4; return true; }
    if (text.startsWith('False', i)) { i += 5; return false; }
    if (text[i] === "'" || text[i] === '"') return str();
    if (text[i] !== '(') fail('has a value that is not a string, bool or tuple');
    i++;
    const dims: number[] = [];
    for (;;) {
      ws();
      if (text[i] === ')') { i++; return dims; }
      const m = /^[0-9]{1,16}L?/.exec(text.slice(i, i + 18));
      if (!m) fail('has a shape entry that is not a non-negative integer');
      dims.push(Number.parseInt(m![0], 10));
      if (dims.length > MAX_RANK) throw new LimitError(`${source}: .npy shape has more than ${MAX_RANK} dimensions`);
      i += m![0].length;
      ws();
      if (text[i] === ',') i++;
      else if (text[i] !== ')') fail("expects ',' or ')' in the shape");
    }
  };
  expect('{');
  const fields = new Map<string, HeaderValue>();
  for (;;) {
    ws();
    if (text[i] === '}') { i++; break; }
    const key = str();
    expect(':');
    if (fields.has(key)) fail(`repeats key '${key}'`);
    fields.set(key, value());
    ws();
    if (text[i] === ',') i++;
    else if (text[i] !== '}') fail("expects ',' or '}'");
  }
  if (text.slice(i).trim() !== '') fail('has text after the dict');
  const descr = fields.get('descr');
  const fortranOrder = fields.get('fortran_order');
  const shape = fields.get('shape');
  if (fields.size !== 3 || descr === undefined || typeof fortranOrder !== 'boolean' || !Array.isArray(shape)) {
    fail("must hold exactly 'descr', 'fortran_order' (bool) and 'shape' (tuple)");
  }
  if (!(shape as number[]).every(Number.isSafeInteger)) fail('has a shape entry past 2^53');
  return { descr, fortranOrder: fortranOrder as boolean, shape: shape as number[] };
}

/**
 * Copies a strided view (strides and offset in elements) into a new row-major buffer.
 * The caller checks that every index it reaches lies inside `src`.
 */
export function copyStrided(src: Uint8Array, itemSize: number, shape: readonly number[], strides: readonly number[], offset: number): Uint8Array {
  const n = numel(shape);
  const out = new Uint8Array(n * itemSize);
  if (n === 0) return out;
  const rank = shape.length;
  if (rank === 0) {
    out.set(src.subarray(offset * itemSize, (offset + 1) * itemSize));
    return out;
  }
  const inner = shape[rank - 1]!;
  const innerStride = strides[rank - 1]!;
  const index = new Array<number>(rank - 1).fill(0);
  let base = offset;
  let dst = 0;
  for (;;) {
    if (innerStride === 1) {
      out.set(src.subarray(base * itemSize, (base + inner) * itemSize), dst);
      dst += inner * itemSize;
    } else {
      for (let k = 0, s = base * itemSize; k < inner; k++, s += innerStride * itemSize) {
        for (let b = 0; b < itemSize; b++) out[dst++] = src[s + b]!;
      }
    }
    // Odometer over the outer dimensions.
    let d = rank - 2;
    for (; d >= 0; d--) {
      base += strides[d]!;
      if (++index[d]! < shape[d]!) break;
      base -= strides[d]! * shape[d]!;
      index[d] = 0;
    }
    if (d < 0) return out;
  }
}

/** Serializes a tensor as a version 1.0 `.npy` file (header padded so data is 64-byte aligned). */
export function serializeNpy(t: RawTensor): Uint8Array {
  const descr = DESCR_OF[t.dtype];
  if (!descr) throw new FormatError(`Tensor of dtype ${t.dtype} cannot be written as .npy (no NumPy equivalent); convert it to F32 first`);
  const expected = numel(t.shape) * DTYPE_BYTES[t.dtype];
  if (t.data.byteLength !== expected) throw new FormatError(`Tensor has ${t.data.byteLength} bytes but shape [${t.shape}] of ${t.dtype} needs ${expected}`);
  const shape = t.shape.length === 1 ? `(${t.shape[0]},)` : `(${t.shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  if (header.length > 0xffff) throw new FormatError(`.npy header of ${header.length} bytes does not fit version 1.0`);
  const out = new Uint8Array(total + expected);
  out.set(NPY_MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(t.data, total);
  return out;
}
