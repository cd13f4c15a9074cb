/** Element types of stored tensors (safetensors' names), and conversion of their bytes to floats. */
export type DType =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8'
  | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && Object.hasOwn(DTYPE_BYTES, value);
}

/** A tensor as stored: little-endian raw bytes, row-major, with its shape. */
export interface RawTensor {
  dtype: DType;
  shape: number[];
  /** Raw little-endian bytes, row-major; length = product(shape) × DTYPE_BYTES[dtype]. */
  data: Uint8Array;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function bfloat16ToFloat(b: number): number {
  u32[0] = b << 16;
  return f32[0]!;
}

/** Converts a tensor's bytes to Float32 (a view without copying when already F32 and aligned). */
export function toFloat32(t: RawTensor): Float32Array {
  const n = numel(t.shape);
  const { data } = t;
  if (t.dtype === 'F32') {
    if (data.byteOffset % 4 === 0) return new Float32Array(data.buffer, data.byteOffset, n);
    return new Float32Array(data.slice(0, n * 4).buffer);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out = new Float32Array(n);
  const read: (i: number) => number = {
    F64: (i: number) => view.getFloat64(i * 8, true),
    F16: (i: number) => halfToFloat(view.getUint16(i * 2, true)),
    BF16: (i: number) => bfloat16ToFloat(view.getUint16(i * 2, true)),
    I64: (i: number) => Number(view.getBigInt64(i * 8, true)),
    U64: (i: number) => Number(view.getBigUint64(i * 8, true)),
    I32: (i: number) => view.getInt32(i * 4, true),
    U32: (i: number) => view.getUint32(i * 4, true),
    I16: (i: number) => view.getInt16(i * 2, true),
    U16: (i: number) => view.getUint16(i * 2, true),
    I8: (i: number) => view.getInt8(i),
    U8: (i: number) => view.getUint8(i),
    BOOL: (i: number) => (view.getUint8(i) ? 1 : 0),
  }[t.dtype];
  for (let i = 0; i < n; i++) out[i] = read(i);
  return out;
}

/** Wraps a Float32Array as an F32 RawTensor without copying. */
export function fromFloat32(values: Float32Array, shape: number[]): RawTensor {
  return { dtype: 'F32', shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
}
