/**
 * Reads files written by `torch.save` (the zip format, torch >= 1.6) without running anything
 * from them: the zip's `data.pkl` goes through the restricted unpickler with an allowlist of
 * tensor-rebuild functions, storage classes (dtype tags), torch.Size and OrderedDict; storages
 * come from `data/<key>` entries. Every size a file claims is checked against the bytes it
 * holds or a limit before anything is allocated.
 *
 * Dtypes: float32/16/64 and bfloat16 stay as F32/F16/F64/BF16, integer and bool tensors keep
 * their dtype (I64, I32, I16, I8, U8, BOOL); analyses convert with `toFloat32`.
 */
import { inflateSync } from 'fflate';
import { FormatError, LimitError } from '../errors.js';
import { DTYPE_BYTES, numel, type DType, type RawTensor } from './dtypes.js';
import { copyStrided } from './npy.js';
import { DEFAULT_PICKLE_LIMITS, ORDERED_DICT_HANDLER, PickleGlobal, describe, unpickle, type PickleGlobalHandler, type PickleLimits } from './pickle.js';

export interface TorchReadOptions {
  /** Names the file in messages. @default 'pt file' */
  source?: string;
  /** Most bytes the zip's entries may claim uncompressed, all together; checked before inflating. @default 4294967296 */
  maxUncompressedBytes?: number;
  /** Most bytes of `data.pkl`. @default 67108864 */
  maxPickleBytes?: number;
  /**
   * Tensors copied to row-major (non-contiguous views, concatenated lists) may take at most this
   * many times the bytes of the storages read; stops stride-0 views from expanding a tiny file.
   * @default 4
   */
  maxExpansion?: number;
  /** Check each zip entry's CRC-32. @default true */
  verifyCrc?: boolean;
  pickleLimits?: Partial<PickleLimits>;
}

export interface ActivationData {
  tensors: Record<string, RawTensor>;
  metadata: Record<string, string>;
}

const MAX_RANK = 32;
const MAX_DICT_DEPTH = 8;
/** The pickled magic number that opens a legacy (pre-1.6, non-zip) torch.save file. */
const LEGACY_MAGIC = Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);

const STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'F32', DoubleStorage: 'F64', HalfStorage: 'F16', BFloat16Storage: 'BF16',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
};

/** A storage a tensor points into: `numel` elements of `dtype`. */
class TorchStorage {
  constructor(readonly key: string, readonly dtype: DType, readonly numel: number, readonly bytes: Uint8Array) {}
}

/** A tensor as pickled: a strided view (in elements) into a storage, materialised later. */
class TorchTensor {
  constructor(readonly storage: TorchStorage, readonly offset: number, readonly size: number[], readonly stride: number[]) {}
}

/** Reads a torch.save zip file held in memory. */
export function readTorchFile(bytes: Uint8Array, options: TorchReadOptions = {}): ActivationData {
  const source = options.source ?? 'pt file';
  if (startsWith(bytes, LEGACY_MAGIC) || bytes[0] === 0x80) {
    throw new FormatError(`${source}: unsupported legacy format (a pre-1.6 torch.save pickle, not a zip); re-save with torch >= 1.6 (torch.save default): torch.save(torch.load(f), f)`);
  }
  const entries = readZip(bytes, source, options.maxUncompressedBytes ?? 2 ** 32);
  const pkl = [...entries.keys()].filter((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (pkl.length !== 1) throw new FormatError(`${source}: expected one <archive>/data.pkl entry in the zip, found ${pkl.length}; is this a torch.save file?`);
  const prefix = pkl[0]!.slice(0, -'data.pkl'.length);
  const verifyCrc = options.verifyCrc ?? true;
  const read = (entry: ZipEntry): Uint8Array => zipEntryBytes(bytes, entry, source, verifyCrc);

  const byteorder = entries.get(`${prefix}byteorder`);
  if (byteorder) {
    const order = new TextDecoder('latin1').decode(read(byteorder).subarray(0, 16));
    if (order !== 'little') throw new FormatError(`${source}: byteorder is ${JSON.stringify(order)}; only little-endian files are supported`);
  }
  const pklEntry = entries.get(pkl[0]!)!;
  const maxPickle = options.maxPickleBytes ?? 64 << 20;
  if (pklEntry.size > maxPickle) throw new LimitError(`${source}: data.pkl is ${pklEntry.size} bytes; the limit is ${maxPickle}`);

  const storages = new Map<string, TorchStorage>();
  let storageBytes = 0;
  const persistentLoad = (pid: unknown, where: string): TorchStorage => {
    if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage') throw new FormatError(`${where}: persistent id is not ('storage', type, key, location, numel)`);
    const [, type, key, , count] = pid as unknown[];
    const dtype = type instanceof PickleGlobal ? STORAGE_DTYPES[type.name] : undefined;
    if (!dtype) throw new FormatError(`${where}: storage type ${describe(type)} is not one of torch.${Object.keys(STORAGE_DTYPES).join(', torch.')}`);
    if (typeof key !== 'string' || !/^[A-Za-z0-9_.-]{1,128}$/.test(key)) throw new FormatError(`${where}: storage key ${JSON.stringify(key)} is not a plain name`);
    if (!Number.isSafeInteger(count) || (count as number) < 0) throw new FormatError(`${where}: storage ${key} has an invalid element count ${String(count)}`);
    const cached = storages.get(key);
    if (cached) {
      if (cached.dtype !== dtype || cached.numel !== count) throw new FormatError(`${where}: storage ${key} is referenced with two different types or sizes`);
      return cached;
    }
    const entry = entries.get(`${prefix}data/${key}`);
    if (!entry) throw new FormatError(`${where}: storage ${key} has no ${prefix}data/${key} entry in the zip`);
    const need = (count as number) * DTYPE_BYTES[dtype];
    if (entry.size !== need) throw new FormatError(`${where}: storage ${key} claims ${count} × ${dtype} = ${need} bytes but its zip entry holds ${entry.size}`);
    const storage = new TorchStorage(key, dtype, count as number, read(entry));
    storages.set(key, storage);
    storageBytes += need;
    return storage;
  };

  const root = unpickle(read(pklEntry), {
    source: `${source}: ${pkl[0]}`,
    globals: TORCH_GLOBALS,
    persistentLoad,
    limits: { ...DEFAULT_PICKLE_LIMITS, ...options.pickleLimits },
  });
  const limit = options.maxExpansion ?? 4;
  // Metadata comes from the pickle's own strings and numbers; memo references must not multiply it.
  const budget = { left: limit * storageBytes, limit, source, metadataChars: 4 * pklEntry.size + 65_536 };
  return toActivationData(root, budget);
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  return bytes.byteLength >= prefix.byteLength && prefix.every((b, i) => bytes[i] === b);
}

function intTuple(v: unknown, what: string, where: string): number[] {
  if (!Array.isArray(v) || v.length > MAX_RANK || !v.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new FormatError(`${where}: ${what} ${describe(v)} is not a tuple of at most ${MAX_RANK} non-negative integers`);
  }
  return [...(v as number[])];
}

function rebuildTensor(args: readonly unknown[], where: string): TorchTensor {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof TorchStorage)) throw new FormatError(`${where}: first argument is a ${describe(storage)}, not a storage`);
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) throw new FormatError(`${where}: storage offset ${String(offset)} is not a non-negative integer`);
  const shape = intTuple(size, 'size', where);
  const strides = intTuple(stride, 'stride', where);
  if (shape.length !== strides.length) throw new FormatError(`${where}: size has ${shape.length} dimensions but stride has ${strides.length}`);
  if (numel(shape) > 0) {
    // Floating point is fine here: any overflow past 2^53 is far outside a real storage.
    const last = shape.reduce((a, d, i) => a + (d - 1) * strides[i]!, offset as number);
    if (last >= storage.numel) {
      throw new FormatError(`${where}: view (offset ${offset}, size [${shape}], stride [${strides}]) reaches element ${last} of storage ${storage.key}, which holds ${storage.numel}`);
    }
  }
  return new TorchTensor(storage, offset as number, shape, strides);
}

/** The only globals a .pt file may name; everything else is refused by the unpickler. */
const TORCH_GLOBALS: ReadonlyMap<string, PickleGlobalHandler> = new Map<string, PickleGlobalHandler>([
  ['torch._utils._rebuild_tensor_v2', {
    call(args, where) {
      if (args.length < 6 || args.length > 7) throw new FormatError(`${where}: expects 6 or 7 arguments, got ${args.length}`);
      return rebuildTensor(args, where);
    },
  }],
  ['torch._utils._rebuild_tensor', {
    call(args, where) {
      if (args.length !== 4) throw new FormatError(`${where}: expects 4 arguments, got ${args.length}`);
      return rebuildTensor(args, where);
    },
  }],
  ['torch._utils._rebuild_parameter', {
    call(args, where) {
      if (args.length !== 3 || !(args[0] instanceof TorchTensor)) throw new FormatError(`${where}: expects (tensor, requires_grad, hooks)`);
      return args[0];
    },
  }],
  ['torch.Size', {
    call(args, where) {
      if (args.length !== 1) throw new FormatError(`${where}: expects one tuple of sizes`);
      return Object.freeze(intTuple(args[0], 'size', where));
    },
  }],
  ['collections.OrderedDict', ORDERED_DICT_HANDLER],
  ...Object.keys(STORAGE_DTYPES).map((name): [string, PickleGlobalHandler] => [`torch.${name}`, {}]),
]);

interface Budget { left: number; limit: number; source: string; metadataChars: number }

/** Row-major bytes of a tensor: a view when the layout already is row-major, else a copy. */
function materialise(t: TorchTensor, name: string, budget: Budget): RawTensor {
  const item = DTYPE_BYTES[t.storage.dtype];
  const n = numel(t.size);
  let expected = 1;
  let contiguous = true;
  for (let d = t.size.length - 1; d >= 0; d--) {
    if (t.size[d]! !== 1 && t.stride[d]! !== expected) contiguous = false;
    expected *= t.size[d]!;
  }
  if (contiguous || n === 0) {
    const start = t.offset * item;
    return { dtype: t.storage.dtype, shape: t.size, data: t.storage.bytes.subarray(start, start + n * item) };
  }
  spend(budget, n * item, name);
  return { dtype: t.storage.dtype, shape: t.size, data: copyStrided(t.storage.bytes, item, t.size, t.stride, t.offset) };
}

function spend(budget: Budget, bytes: number, name: string): void {
  if (bytes > budget.left) {
    throw new LimitError(`${budget.source}: tensor \`${name}\` would expand to ${bytes} bytes, past ${budget.limit}× the storage bytes in the file (maxExpansion)`);
  }
  budget.left -= bytes;
}

/** A list of tensors for one layer, joined along dim 0 (their trailing dims must match). */
function concat(list: readonly unknown[], name: string, budget: Budget): RawTensor | undefined {
  const parts = list.map((t, i) => {
    if (!(t instanceof TorchTensor)) throw new FormatError(`${budget.source}: \`${name}\`[${i}] is a ${describe(t)}, not a tensor`);
    return t;
  });
  if (parts.length === 0) return undefined;
  if (parts.length === 1) return materialise(parts[0]!, name, budget);
  const first = parts[0]!;
  if (first.size.length === 0) throw new FormatError(`${budget.source}: \`${name}\` is a list of 0-d tensors, which cannot be joined along dim 0`);
  const trailing = first.size.slice(1).join(',');
  let rows = 0;
  for (const [i, p] of parts.entries()) {
    if (p.storage.dtype !== first.storage.dtype || p.size.length === 0 || p.size.slice(1).join(',') !== trailing) {
      throw new FormatError(`${budget.source}: \`${name}\`[${i}] is ${p.storage.dtype} [${p.size}] but [0] is ${first.storage.dtype} [${first.size}]; a layer's list must agree on dtype and trailing dims`);
    }
    rows += p.size[0]!;
  }
  const shape = [rows, ...first.size.slice(1)];
  const out = new Uint8Array(numel(shape) * DTYPE_BYTES[first.storage.dtype]);
  spend(budget, out.byteLength, name);
  let at = 0;
  for (const p of parts) {
    const part = materialise(p, name, budget);
    out.set(part.data, at);
    at += part.data.byteLength;
  }
  return { dtype: first.storage.dtype, shape, data: out };
}

function toActivationData(root: unknown, budget: Budget): ActivationData {
  const tensors: Record<string, RawTensor> = {};
  const metadata: Record<string, string> = {};
  const setOwn = <T>(record: Record<string, T>, key: string, value: T): void => {
    Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
  };
  const addTensor = (name: string, t: RawTensor | undefined): void => {
    if (!t) return;
    if (Object.hasOwn(tensors, name)) throw new FormatError(`${budget.source}: two tensors are named \`${name}\``);
    setOwn(tensors, name, t);
  };
  const isTensorList = (v: unknown): v is unknown[] => Array.isArray(v) && v.length > 0 && v.every((x) => x instanceof TorchTensor);
  // Each dict is walked once: a dict referenced many times (via the memo) must not multiply the output.
  const walked = new Set<unknown>();
  const walk = (map: Map<unknown, unknown>, prefix: string, depth: number): void => {
    if (depth > MAX_DICT_DEPTH || walked.has(map)) throw new FormatError(`${budget.source}: dicts nest deeper than ${MAX_DICT_DEPTH}, repeat, or contain themselves at \`${prefix}\``);
    walked.add(map);
    for (const [k, v] of map) {
      const key = String(k);
      const name = prefix + key;
      if (v instanceof TorchTensor) addTensor(name, materialise(v, name, budget));
      else if (isTensorList(v)) addTensor(name, concat(v, name, budget));
      // The original system's shard: {global_step, shard_id, activations: {...}, metadata: {...}}.
      else if (depth === 0 && key === 'activations' && v instanceof Map) walk(v, '', depth + 1);
      else if (depth === 0 && key === 'metadata' && v instanceof Map) for (const [mk, mv] of v) setOwn(metadata, String(mk), stringify(mv, budget));
      else if (v instanceof Map && [...v.values()].some((x) => x instanceof TorchTensor || x instanceof Map)) walk(v, `${name}.`, depth + 1);
      else setOwn(metadata, name, stringify(v, budget));
    }
  };
  if (root instanceof TorchTensor) addTensor('tensor', materialise(root, 'tensor', budget));
  else if (root instanceof Map) walk(root, '', 0);
  else throw new FormatError(`${budget.source}: holds a ${describe(root)}; expected a tensor or a dict of tensors (e.g. the {global_step, shard_id, activations, metadata} shard layout)`);
  return { tensors, metadata };
}

/** Metadata values: strings as they are, everything else as JSON (bounded, cycle-safe). */
function stringify(value: unknown, budget: Budget): string {
  if (typeof value === 'string') return value;
  const ancestors = new Set<unknown>();
  const spendChars = (n: number): void => {
    budget.metadataChars -= n;
    if (budget.metadataChars < 0) throw new LimitError(`${budget.source}: metadata values would take far more characters than the pickle holds`);
  };
  const json = (v: unknown): string => {
    spendChars(typeof v === 'string' ? v.length + 2 : 2);
    if (v === null || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return JSON.stringify(v) ?? 'null';
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof TorchTensor) return JSON.stringify(`tensor(${v.storage.dtype}, [${v.size}])`);
    if (v instanceof PickleGlobal) return JSON.stringify(v.qualifiedName);
    if (ancestors.has(v)) return '"<cycle>"';
    ancestors.add(v);
    let out: string;
    if (Array.isArray(v) || v instanceof Set) out = `[${[...v].map(json).join(',')}]`;
    else if (v instanceof Map) out = `{${[...v].map(([k, x]) => `${JSON.stringify(String(k))}:${json(x)}`).join(',')}}`;
    else out = JSON.stringify(describe(v));
    ancestors.delete(v);
    return out;
  };
  return json(value);
}

// ---- zip (APPNOTE.TXT): the central directory is the index; local headers locate the data. ----

interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate. */
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  dataStart: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_LOCATOR64 = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;

/** Reads the central directory, checking every offset and size against the file before use. */
function readZip(bytes: Uint8Array, source: string, maxUncompressed: number): Map<string, ZipEntry> {
  const len = bytes.byteLength;
  const view = new DataView(bytes.buffer, bytes.byteOffset, len);
  if (len < 22 || (view.getUint32(0, true) !== SIG_LOCAL && view.getUint32(0, true) !== SIG_EOCD)) {
    throw new FormatError(`${source}: not a zip file (torch.save writes a zip starting with PK\\x03\\x04)`);
  }
  const u64 = (at: number, what: string): number => {
    if (at + 8 > len) throw new FormatError(`${source}: zip64 ${what} lies outside the file`);
    const v = view.getBigUint64(at, true);
    if (v > BigInt(len)) throw new FormatError(`${source}: zip64 ${what} ${v} is larger than the file (${len} bytes)`);
    return Number(v);
  };
  let eocd = -1;
  for (let at = len - 22; at >= Math.max(0, len - 22 - 0xffff); at--) {
    if (view.getUint32(at, true) === SIG_EOCD && at + 22 + view.getUint16(at + 20, true) <= len) { eocd = at; break; }
  }
  if (eocd < 0) throw new FormatError(`${source}: zip end-of-central-directory record not found (truncated file?)`);
  let count = view.getUint16(eocd + 10, true);
  let cdSize = view.getUint32(eocd + 12, true);
  let cdOffset = view.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const locator = eocd - 20;
    if (locator < 0 || view.getUint32(locator, true) !== SIG_LOCATOR64) throw new FormatError(`${source}: zip64 locator missing`);
    const at = u64(locator + 8, 'end record offset');
    if (at + 56 > len || view.getUint32(at, true) !== SIG_EOCD64) throw new FormatError(`${source}: zip64 end record missing`);
    count = u64(at + 32, 'entry count');
    cdSize = u64(at + 40, 'directory size');
    cdOffset = u64(at + 48, 'directory offset');
  }
  if (cdOffset + cdSize > len || count * 46 > cdSize) {
    throw new FormatError(`${source}: zip central directory (${count} entries, ${cdSize} bytes at ${cdOffset}) does not fit the file of ${len} bytes`);
  }
  const entries = new Map<string, ZipEntry>();
  let total = 0;
  let at = cdOffset;
  for (let i = 0; i < count; i++) {
    if (at + 46 > cdOffset + cdSize || view.getUint32(at, true) !== SIG_CENTRAL) throw new FormatError(`${source}: zip central directory entry ${i} is malformed`);
    const flags = view.getUint16(at + 8, true);
    const method = view.getUint16(at + 10, true);
    const nameLength = view.getUint16(at + 28, true);
    const extraLength = view.getUint16(at + 30, true);
    const next = at + 46 + nameLength + extraLength + view.getUint16(at + 32, true);
    if (next > cdOffset + cdSize) throw new FormatError(`${source}: zip central directory entry ${i} runs past the directory`);
    const name = new TextDecoder(flags & 0x800 ? 'utf-8' : 'latin1').decode(bytes.subarray(at + 46, at + 46 + nameLength));
    let compressedSize = view.getUint32(at + 20, true);
    let size = view.getUint32(at + 24, true);
    let local = view.getUint32(at + 42, true);
    // Zip64 extra field (id 1): the 64-bit values of the fields set to 0xffffffff, in this order.
    for (let x = at + 46 + nameLength; x + 4 <= at + 46 + nameLength + extraLength; x += 4 + view.getUint16(x + 2, true)) {
      if (view.getUint16(x, true) !== 1) continue;
      let field = x + 4;
      const end = x + 4 + view.getUint16(x + 2, true);
      const take = (): number => { if (field + 8 > end) throw new FormatError(`${source}: zip64 field of \`${name}\` is short`); const v = u64(field, `size of \`${name}\``); field += 8; return v; };
      if (size === 0xffffffff) size = take();
      if (compressedSize === 0xffffffff) compressedSize = take();
      if (local === 0xffffffff) local = take();
      break;
    }
    if (flags & 1) throw new FormatError(`${source}: zip entry \`${name}\` is encrypted`);
    if (method !== 0 && method !== 8) throw new FormatError(`${source}: zip entry \`${name}\` uses compression method ${method}; only stored (0) and deflate (8) are supported`);
    if (method === 0 && size !== compressedSize) throw new FormatError(`${source}: stored zip entry \`${name}\` claims ${size} bytes but holds ${compressedSize}`);
    // Deflate cannot expand past ~1032:1; a larger claim is corrupt (or a bomb), refused before inflating.
    if (method === 8 && size > compressedSize * 1032 + 64) throw new FormatError(`${source}: zip entry \`${name}\` claims ${size} bytes from ${compressedSize} compressed, more than deflate can produce`);
    if (local + 30 > len || view.getUint32(local, true) !== SIG_LOCAL) throw new FormatError(`${source}: zip entry \`${name}\` has no local header at ${local}`);
    const dataStart = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    if (dataStart + compressedSize > len) throw new FormatError(`${source}: zip entry \`${name}\` claims ${compressedSize} bytes at ${dataStart} but the file has ${len} (truncated?)`);
    total += size;
    if (total > maxUncompressed) throw new LimitError(`${source}: zip entries claim more than ${maxUncompressed} bytes uncompressed (maxUncompressedBytes)`);
    if (entries.has(name)) throw new FormatError(`${source}: zip holds \`${name}\` twice`);
    entries.set(name, { name, method, crc: view.getUint32(at + 16, true), compressedSize, size, dataStart });
    at = next;
  }
  return entries;
}

/** An entry's bytes: a view for stored entries, inflated into exactly its declared size otherwise. */
function zipEntryBytes(bytes: Uint8Array, e: ZipEntry, source: string, verifyCrc: boolean): Uint8Array {
  const raw = bytes.subarray(e.dataStart, e.dataStart + e.compressedSize);
  let data = raw;
  if (e.method === 8) {
    try {
      // One byte of slack shows an entry that inflates past its claim; fflate never grows `out`.
      data = inflateSync(raw, { out: new Uint8Array(e.size + 1) });
    } catch (cause) {
      throw new FormatError(`${source}: zip entry \`${e.name}\` does not inflate`, { cause });
    }
    if (data.byteLength !== e.size) throw new FormatError(`${source}: zip entry \`${e.name}\` inflates to ${data.byteLength === e.size + 1 ? 'more than' : data.byteLength} bytes, not the ${e.size} it claims`);
  }
  if (verifyCrc && crc32(data) !== e.crc) throw new FormatError(`${source}: zip entry \`${e.name}\` fails its CRC-32 check (corrupt file)`);
  return data;
}

let crcTable: Uint32Array | undefined;

function crc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
