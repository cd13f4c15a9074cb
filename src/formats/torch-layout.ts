/**
 * What a torch.save `data.pkl` describes, without any tensor bytes: the restricted unpickler
 * (an allowlist of tensor-rebuild functions, storage classes as dtype tags, torch.Size and
 * OrderedDict) turns it into named tensor plans — strided views into storages, or lists of them
 * joined along dim 0 — and metadata. Storages are only named here (`data/<key>` zip entries);
 * the readers in torch.ts fetch the bytes a plan needs, from memory or by range from a file.
 */
import { FormatError, LimitError } from '../errors.js';
import { DTYPE_BYTES, numel, type DType } from './dtypes.js';
import { DEFAULT_PICKLE_LIMITS, ORDERED_DICT_HANDLER, PickleGlobal, describe, unpickle, type PickleGlobalHandler, type PickleLimits } from './pickle.js';
import type { ZipEntry } from './zip.js';

const MAX_RANK = 32;
const MAX_DICT_DEPTH = 8;

export const STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'F32', DoubleStorage: 'F64', HalfStorage: 'F16', BFloat16Storage: 'BF16',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
};

/** A storage a tensor points into: `numel` elements of `dtype`, held by zip entry `entry`. */
export class TorchStorage {
  constructor(readonly key: string, readonly dtype: DType, readonly numel: number, readonly entry: ZipEntry) {}
}

/** A tensor as pickled: a strided view (in elements) into a storage. */
export class TorchView {
  /** Row-major already (a slice of the storage), so it reads by one byte range. */
  readonly contiguous: boolean;
  readonly elements: number;
  constructor(readonly storage: TorchStorage, readonly offset: number, readonly size: number[], readonly stride: number[]) {
    this.elements = numel(size);
    let expected = 1;
    let contiguous = true;
    for (let d = size.length - 1; d >= 0; d--) {
      if (size[d]! !== 1 && stride[d]! !== expected) contiguous = false;
      expected *= size[d]!;
    }
    this.contiguous = contiguous || this.elements === 0;
  }

  /** Storage elements [first, last] a non-contiguous view reaches (strides are non-negative). */
  span(): [number, number] {
    return [this.offset, this.size.reduce((a, d, i) => a + (d - 1) * this.stride[i]!, this.offset)];
  }
}

/** A named tensor: one view, or several joined along dim 0 (the original system's per-step lists). */
export interface TensorPlan {
  dtype: DType;
  shape: number[];
  parts: TorchView[];
}

/** A JSON-like value from a metadata dict: Python floats stay numbers (NaN and ±Infinity included). */
export type MetadataValue = null | boolean | number | bigint | string | MetadataValue[] | { [key: string]: MetadataValue };

export interface TorchLayout {
  tensors: Map<string, TensorPlan>;
  /** Metadata as strings: strings as they are, everything else as JSON (NaN, Infinity as Python's json writes them). */
  metadata: Record<string, string>;
  /** The same metadata as values. */
  metadataValues: Record<string, MetadataValue>;
  /** Bytes of the storages the pickle references. */
  storageBytes: number;
}

export interface LayoutOptions {
  source: string;
  /** `<archive>/`: the prefix of `data.pkl` and `data/<key>`. */
  prefix: string;
  entries: ReadonlyMap<string, ZipEntry>;
  maxExpansion: number;
  pickleLimits?: Partial<PickleLimits>;
}

/** Unpickles `data.pkl` into tensor plans and metadata; checks every view against its storage. */
export function parseTorchLayout(pkl: Uint8Array, options: LayoutOptions): TorchLayout {
  const { source, prefix, entries } = options;
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
    const storage = new TorchStorage(key, dtype, count as number, entry);
    storages.set(key, storage);
    storageBytes += need;
    return storage;
  };
  const root = unpickle(pkl, {
    source: `${source}: ${prefix}data.pkl`,
    globals: TORCH_GLOBALS,
    persistentLoad,
    limits: { ...DEFAULT_PICKLE_LIMITS, ...options.pickleLimits },
  });
  // Metadata comes from the pickle's own strings and numbers; memo references must not multiply it.
  const budget: Budget = { left: options.maxExpansion * storageBytes, limit: options.maxExpansion, source, metadataChars: 4 * pkl.byteLength + 65_536 };
  return { ...walkRoot(root, budget), storageBytes };
}

function intTuple(v: unknown, what: string, where: string): number[] {
  if (!Array.isArray(v) || v.length > MAX_RANK || !v.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new FormatError(`${where}: ${what} ${describe(v)} is not a tuple of at most ${MAX_RANK} non-negative integers`);
  }
  return [...(v as number[])];
}

function rebuildTensor(args: readonly unknown[], where: string): TorchView {
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
  return new TorchView(storage, offset as number, shape, strides);
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
      if (args.length !== 3 || !(args[0] instanceof TorchView)) throw new FormatError(`${where}: expects (tensor, requires_grad, hooks)`);
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

/** Copies (non-contiguous views, joined lists) may take at most maxExpansion × the storage bytes. */
function spend(budget: Budget, bytes: number, name: string): void {
  if (bytes > budget.left) {
    throw new LimitError(`${budget.source}: tensor \`${name}\` would expand to ${bytes} bytes, past ${budget.limit}× the storage bytes in the file (maxExpansion)`);
  }
  budget.left -= bytes;
}

function viewPlan(v: TorchView, name: string, budget: Budget): TensorPlan {
  if (!v.contiguous) spend(budget, v.elements * DTYPE_BYTES[v.storage.dtype], name);
  return { dtype: v.storage.dtype, shape: v.size, parts: [v] };
}

/** A list of tensors for one layer, joined along dim 0 (their trailing dims must match). */
function listPlan(list: readonly unknown[], name: string, budget: Budget): TensorPlan | undefined {
  const parts = list.map((t, i) => {
    if (!(t instanceof TorchView)) throw new FormatError(`${budget.source}: \`${name}\`[${i}] is a ${describe(t)}, not a tensor`);
    return t;
  });
  if (parts.length === 0) return undefined;
  if (parts.length === 1) return viewPlan(parts[0]!, name, budget);
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
  spend(budget, numel(shape) * DTYPE_BYTES[first.storage.dtype], name);
  for (const p of parts) if (!p.contiguous) spend(budget, p.elements * DTYPE_BYTES[p.storage.dtype], name);
  return { dtype: first.storage.dtype, shape, parts };
}

function walkRoot(root: unknown, budget: Budget): Omit<TorchLayout, 'storageBytes'> {
  const tensors = new Map<string, TensorPlan>();
  const metadata: Record<string, string> = {};
  const metadataValues: Record<string, MetadataValue> = {};
  const setOwn = <T>(record: Record<string, T>, key: string, value: T): void => {
    Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
  };
  const setMeta = (key: string, value: unknown): void => {
    const [text, plain] = toMetadata(value, budget);
    setOwn(metadata, key, text);
    setOwn(metadataValues, key, plain);
  };
  const addTensor = (name: string, t: TensorPlan | undefined): void => {
    if (!t) return;
    if (tensors.has(name)) throw new FormatError(`${budget.source}: two tensors are named \`${name}\``);
    tensors.set(name, t);
  };
  const isTensorList = (v: unknown): v is unknown[] => Array.isArray(v) && v.length > 0 && v.every((x) => x instanceof TorchView);
  // Each dict is walked once: a dict referenced many times (via the memo) must not multiply the output.
  const walked = new Set<unknown>();
  const walk = (map: Map<unknown, unknown>, prefix: string, depth: number): void => {
    if (depth > MAX_DICT_DEPTH || walked.has(map)) throw new FormatError(`${budget.source}: dicts nest deeper than ${MAX_DICT_DEPTH}, repeat, or contain themselves at \`${prefix}\``);
    walked.add(map);
    for (const [k, v] of map) {
      const key = String(k);
      const name = prefix + key;
      if (v instanceof TorchView) addTensor(name, viewPlan(v, name, budget));
      else if (isTensorList(v)) addTensor(name, listPlan(v, name, budget));
      // The original system's shard: {global_step, shard_id, activations: {...}, metadata: {...}}.
      else if (depth === 0 && key === 'activations' && v instanceof Map) walk(v, '', depth + 1);
      else if (depth === 0 && key === 'metadata' && v instanceof Map) for (const [mk, mv] of v) setMeta(String(mk), mv);
      else if (v instanceof Map && [...v.values()].some((x) => x instanceof TorchView || x instanceof Map)) walk(v, `${name}.`, depth + 1);
      else setMeta(name, v);
    }
  };
  if (root instanceof TorchView) addTensor('tensor', viewPlan(root, 'tensor', budget));
  else if (root instanceof Map) walk(root, '', 0);
  else throw new FormatError(`${budget.source}: holds a ${describe(root)}; expected a tensor or a dict of tensors (e.g. the {global_step, shard_id, activations, metadata} shard layout)`);
  return { tensors, metadata, metadataValues };
}

/** Python's json.dumps spelling of non-finite floats (float('nan') → NaN). */
function numberText(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  return JSON.stringify(v);
}

/**
 * A metadata value as text (strings as they are, everything else as JSON, bounded, cycle-safe)
 * and as a plain value (dicts → objects, tuples and sets → arrays, tensors → a description).
 */
function toMetadata(value: unknown, budget: Budget): [string, MetadataValue] {
  const ancestors = new Set<unknown>();
  const spendChars = (n: number): void => {
    budget.metadataChars -= n;
    if (budget.metadataChars < 0) throw new LimitError(`${budget.source}: metadata values would take far more characters than the pickle holds`);
  };
  const convert = (v: unknown): [string, MetadataValue] => {
    spendChars(typeof v === 'string' ? v.length + 2 : 2);
    if (v === null || typeof v === 'boolean' || typeof v === 'string') return [JSON.stringify(v), v];
    if (typeof v === 'number') return [numberText(v), v];
    if (typeof v === 'bigint') return [v.toString(), v];
    if (v instanceof TorchView) { const d = `tensor(${v.storage.dtype}, [${v.size}])`; return [JSON.stringify(d), d]; }
    if (v instanceof PickleGlobal) return [JSON.stringify(v.qualifiedName), v.qualifiedName];
    if (ancestors.has(v)) return ['"<cycle>"', '<cycle>'];
    ancestors.add(v);
    let out: [string, MetadataValue];
    if (Array.isArray(v) || v instanceof Set) {
      const items = [...v].map(convert);
      out = [`[${items.map((x) => x[0]).join(',')}]`, items.map((x) => x[1])];
    } else if (v instanceof Map) {
      const items = [...v].map(([k, x]) => [String(k), convert(x)] as const);
      const plain: { [key: string]: MetadataValue } = {};
      for (const [k, [, p]] of items) Object.defineProperty(plain, k, { value: p, enumerable: true, writable: true, configurable: true });
      out = [`{${items.map(([k, [t]]) => `${JSON.stringify(k)}:${t}`).join(',')}}`, plain];
    } else {
      const d = describe(v);
      out = [JSON.stringify(d), d];
    }
    ancestors.delete(v);
    return out;
  };
  if (typeof value === 'string') {
    spendChars(value.length);
    return [value, value];
  }
  return convert(value);
}
