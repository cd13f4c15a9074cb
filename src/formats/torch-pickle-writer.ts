/**
 * The pickle (protocol 2) of a torch.save `data.pkl`: containers, scalars and tensors, the last as
 * `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with the
 * storage a persistent id `('storage', torch.<Type>Storage, key, 'cpu', numel)`. Only opcodes
 * that `torch.load(weights_only=True)` accepts are written.
 */
import { FormatError } from '../errors.js';
import { isDType, numel, type DType } from './dtypes.js';

/** A tensor whose bytes are produced while the file is written (never held whole). */
export interface TorchTensorChunks {
  dtype: DType;
  shape: number[];
  /** Row-major little-endian bytes, in order; together exactly numel(shape) × the dtype's size. */
  chunks: () => Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
}

/** A tensor in memory: `{dtype, shape, data}` (a RawTensor). */
export interface TorchTensorBytes {
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

export type TorchTensorInput = TorchTensorBytes | TorchTensorChunks;

/**
 * What `writeTorchFile` can save: a tensor, or None/bool/int/float/str and lists and dicts of
 * them. JS numbers that are integers are written as Python ints, others (NaN and ±Infinity
 * included) as floats; bigints as ints. Plain objects and Maps are dicts (keys str, or int in a
 * Map); an object with exactly `dtype`, `shape` and `data` (or `chunks`) is a tensor.
 */
export type TorchValue =
  | null | undefined | boolean | number | bigint | string
  | TorchTensorInput
  | readonly TorchValue[]
  | ReadonlyMap<string | number, TorchValue>
  | { readonly [key: string]: TorchValue };

export const STORAGE_CLASS: Readonly<Partial<Record<DType, string>>> = {
  F32: 'FloatStorage', F64: 'DoubleStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage',
  I64: 'LongStorage', I32: 'IntStorage', I16: 'ShortStorage', I8: 'CharStorage', U8: 'ByteStorage', BOOL: 'BoolStorage',
};

export function isTorchTensor(v: unknown): v is TorchTensorInput {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Map) return false;
  const keys = Object.keys(v).sort().join(',');
  const t = v as Record<string, unknown>;
  if (!isDType(t.dtype) || !Array.isArray(t.shape)) return false;
  return (keys === 'data,dtype,shape' && t.data instanceof Uint8Array) || (keys === 'chunks,dtype,shape' && typeof t.chunks === 'function');
}

const enc = new TextEncoder();

class Out {
  private parts: number[] = [];
  byte(...b: number[]): void { for (const x of b) this.parts.push(x); }
  bytes(b: Uint8Array): void { for (const x of b) this.parts.push(x); }
  u32(n: number): void { this.byte(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff); }
  result(): Uint8Array { return Uint8Array.from(this.parts); }
}

/**
 * Pickles `value`; each tensor met (in order) gets storage key '0', '1', ...
 * Returns the pickle and the tensors by key.
 */
export function pickleTorchValue(value: TorchValue, where = 'value'): { pickle: Uint8Array; tensors: TorchTensorInput[] } {
  const out = new Out();
  const tensors: TorchTensorInput[] = [];
  const keys = new Map<TorchTensorInput, string>();
  const ancestors = new Set<unknown>();
  out.byte(0x80, 2); // PROTO 2
  const str = (s: string): void => {
    const b = enc.encode(s);
    out.byte(0x58); // BINUNICODE
    out.u32(b.byteLength);
    out.bytes(b);
  };
  const global = (module: string, name: string): void => {
    out.byte(0x63); // GLOBAL
    out.bytes(enc.encode(`${module}\n${name}\n`));
  };
  const int = (n: number | bigint): void => {
    if (typeof n === 'number' && n >= 0 && n < 256) out.byte(0x4b, n); // BININT1
    else if (typeof n === 'number' && n >= 0 && n < 65536) out.byte(0x4d, n & 0xff, n >> 8); // BININT2
    else if (typeof n === 'number' && n >= -(2 ** 31) && n < 2 ** 31) { out.byte(0x4a); out.u32(n); } // BININT
    else {
      // LONG1: little-endian two's complement, as few bytes as hold the sign.
      let v = BigInt(n);
      const bytes: number[] = [];
      for (;;) {
        const b = Number(v & 0xffn);
        bytes.push(b);
        v >>= 8n;
        if ((v === 0n && (b & 0x80) === 0) || (v === -1n && (b & 0x80) !== 0)) break;
      }
      if (bytes.length > 255) throw new FormatError(`${where}: integer ${n} is too large to pickle`);
      out.byte(0x8a, bytes.length, ...bytes);
    }
  };
  const float = (x: number): void => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, x, false);
    out.byte(0x47); // BINFLOAT
    out.bytes(b);
  };
  const tuple = (items: (() => void)[]): void => {
    if (items.length === 0) { out.byte(0x29); return; } // EMPTY_TUPLE
    if (items.length > 3) out.byte(0x28); // MARK
    for (const item of items) item();
    out.byte(items.length === 1 ? 0x85 : items.length === 2 ? 0x86 : items.length === 3 ? 0x87 : 0x74); // TUPLE1/2/3, TUPLE
  };
  const tensor = (t: TorchTensorInput, path: string): void => {
    const storage = STORAGE_CLASS[t.dtype];
    if (!storage) throw new FormatError(`${path}: dtype ${t.dtype} has no torch storage type; convert it to one of ${Object.keys(STORAGE_CLASS).join(', ')}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || t.shape.length > 32) throw new FormatError(`${path}: shape [${t.shape}] is not a list of at most 32 non-negative integers`);
    const n = numel(t.shape);
    // The same tensor twice shares one storage, as torch.save does.
    let key = keys.get(t);
    if (key === undefined) {
      key = String(tensors.length);
      keys.set(t, key);
      tensors.push(t);
    }
    const strides: number[] = [];
    let s = 1;
    for (let d = t.shape.length - 1; d >= 0; d--) { strides.unshift(s); s *= t.shape[d]!; }
    global('torch._utils', '_rebuild_tensor_v2');
    out.byte(0x28); // MARK: the argument tuple
    out.byte(0x28); // MARK: the persistent id
    str('storage');
    global('torch', storage);
    str(key);
    str('cpu');
    int(n);
    out.byte(0x74, 0x51); // TUPLE, BINPERSID
    int(0);
    tuple(t.shape.map((d) => () => int(d)));
    tuple(strides.map((d) => () => int(d)));
    out.byte(0x89); // NEWFALSE: requires_grad
    global('collections', 'OrderedDict');
    out.byte(0x29, 0x52); // EMPTY_TUPLE, REDUCE: backward hooks
    out.byte(0x74, 0x52); // TUPLE, REDUCE
  };
  const walk = (v: TorchValue, path: string, depth: number): void => {
    if (depth > 64) throw new FormatError(`${path}: nests deeper than 64 levels`);
    if (v === null || v === undefined) { out.byte(0x4e); return; }
    if (typeof v === 'boolean') { out.byte(v ? 0x88 : 0x89); return; }
    if (typeof v === 'bigint') { int(v); return; }
    if (typeof v === 'number') {
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) int(v);
      else float(v);
      return;
    }
    if (typeof v === 'string') { str(v); return; }
    if (isTorchTensor(v)) { tensor(v, path); return; }
    if (ancestors.has(v)) throw new FormatError(`${path}: contains itself`);
    ancestors.add(v);
    container(v, path, depth);
    ancestors.delete(v);
  };
  const container = (v: TorchValue & object, path: string, depth: number): void => {
    if (Array.isArray(v)) {
      out.byte(0x5d); // EMPTY_LIST
      const list = v as readonly TorchValue[];
      for (let i = 0; i < list.length; i += 1000) {
        out.byte(0x28);
        list.slice(i, i + 1000).forEach((x, j) => walk(x, `${path}[${i + j}]`, depth + 1));
        out.byte(0x65); // APPENDS
      }
      return;
    }
    const items: [string | number, TorchValue][] = v instanceof Map ? [...(v as ReadonlyMap<string | number, TorchValue>)] : Object.entries(v as Record<string, TorchValue>);
    out.byte(0x7d); // EMPTY_DICT
    for (let i = 0; i < items.length; i += 1000) {
      out.byte(0x28);
      for (const [k, x] of items.slice(i, i + 1000)) {
        if (typeof k === 'string') str(k);
        else if (Number.isSafeInteger(k)) int(k);
        else throw new FormatError(`${path}: dict key ${String(k)} is neither a string nor an integer`);
        walk(x, `${path}.${String(k)}`, depth + 1);
      }
      out.byte(0x75); // SETITEMS
    }
  };
  walk(value, where, 0);
  out.byte(0x2e); // STOP
  return { pickle: out.result(), tensors };
}
