/**
 * A restricted unpickler: it understands only the opcodes `torch.load(weights_only=True)` accepts
 * and resolves GLOBAL only through an allowlist the caller supplies. Anything else is refused
 * with UnsafePickleError the moment its opcode is read, before any object is built from it, so
 * no code named by a hostile pickle can run. Sizes are checked against the bytes left before
 * anything is allocated.
 *
 * Why not an npm unpickler: the maintained one (pickleparser) implements every opcode of
 * protocols 0–5 and builds stand-in objects for unknown globals; it has no opcode allowlist
 * and no limits, so refusal before building cannot be guaranteed.
 *
 * Values: None → null, bool → boolean, int → number (bigint past 2^53), float → number,
 * str → string, list → array, tuple → frozen array, dict → Map, set → Set; a call of an
 * allowed global returns whatever its handler returns.
 */
import { FormatError, LimitError, UnsafePickleError } from '../errors.js';

/** What an allowed global does. A global without `call` is a tag (e.g. a storage class) only. */
export interface PickleGlobalHandler {
  /** REDUCE / NEWOBJ with the argument tuple. Validate the arguments; never trust them. */
  call?: (args: readonly unknown[], where: string) => unknown;
}

/** A GLOBAL that was on the allowlist, as it sits on the stack. */
export class PickleGlobal {
  constructor(readonly module: string, readonly name: string, readonly handler: PickleGlobalHandler) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

export interface PickleLimits {
  /** Entries in the memo. @default 1048576 */
  maxMemo: number;
  /** Items on the stack, all marks together. @default 1048576 */
  maxStack: number;
  /** Open MARKs at once (tuple/list/dict nesting while building). @default 256 */
  maxMarkDepth: number;
  /** Opcodes executed, which bounds the objects built. @default 10000000 */
  maxOps: number;
  /** Bytes of one string. @default 16777216 */
  maxStringBytes: number;
}

export const DEFAULT_PICKLE_LIMITS: Readonly<PickleLimits> = {
  maxMemo: 1 << 20,
  maxStack: 1 << 20,
  maxMarkDepth: 256,
  maxOps: 10_000_000,
  maxStringBytes: 16 << 20,
};

export interface UnpickleOptions {
  /** Names the file in messages. @default 'pickle' */
  source?: string;
  /** Allowed globals by `module.name`. Every other GLOBAL is refused. */
  globals: ReadonlyMap<string, PickleGlobalHandler>;
  /** Resolves a BINPERSID id (torch: a storage reference). Absent: BINPERSID is refused. */
  persistentLoad?: (pid: unknown, where: string) => unknown;
  limits?: Partial<PickleLimits>;
}

/** collections.OrderedDict, which torch uses for state dicts and backward hooks: a Map. */
export const ORDERED_DICT_HANDLER: PickleGlobalHandler = {
  call(args, where) {
    const map = new Map<unknown, unknown>();
    if (args.length === 0) return map;
    const [items] = args;
    if (args.length !== 1 || !Array.isArray(items)) throw new FormatError(`${where}: OrderedDict takes no arguments or one list of pairs`);
    for (const pair of items) {
      if (!Array.isArray(pair) || pair.length !== 2) throw new FormatError(`${where}: OrderedDict item is not a (key, value) pair`);
      map.set(checkKey(pair[0], where), pair[1]);
    }
    return map;
  },
};

/** Opcode names, so a refusal names what it saw. Only those in ALLOWED are implemented. */
const OPCODE_NAMES: Readonly<Record<number, string>> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID',
  0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT',
  0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET',
  0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT',
  0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT', 0x80: 'PROTO',
  0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3',
  0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS',
  0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** The weights_only set (torch/_weights_only_unpickler.py). */
const ALLOWED = new Set([
  'PROTO', 'STOP', 'MARK', 'GLOBAL', 'REDUCE', 'NEWOBJ', 'BUILD', 'BINPERSID', 'EMPTY_DICT', 'EMPTY_LIST',
  'EMPTY_TUPLE', 'EMPTY_SET', 'SETITEM', 'SETITEMS', 'APPEND', 'APPENDS', 'TUPLE', 'TUPLE1', 'TUPLE2',
  'TUPLE3', 'NONE', 'NEWTRUE', 'NEWFALSE', 'BININT', 'BININT1', 'BININT2', 'LONG1', 'BINFLOAT',
  'BINUNICODE', 'SHORT_BINSTRING', 'BINPUT', 'LONG_BINPUT', 'BINGET', 'LONG_BINGET',
]);

const NAME_PART = /^[A-Za-z_][A-Za-z0-9_.]{0,127}$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const latin1 = new TextDecoder('latin1');

function checkKey(key: unknown, where: string): unknown {
  const t = typeof key;
  if (key === null || t === 'string' || t === 'number' || t === 'bigint' || t === 'boolean') return key;
  throw new FormatError(`${where}: dict key of type ${describe(key)} is not supported (only str, int, float, bool, None)`);
}

/** A short type name for messages. */
export function describe(v: unknown): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return Object.isFrozen(v) ? 'tuple' : 'list';
  if (v instanceof Map) return 'dict';
  if (v instanceof Set) return 'set';
  if (v instanceof PickleGlobal) return `global ${v.qualifiedName}`;
  return typeof v === 'object' ? (v.constructor?.name ?? 'object') : typeof v;
}

/** Unpickles `bytes`, refusing any opcode or global outside the allowlist before acting on it. */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): unknown {
  const source = options.source ?? 'pickle';
  const limits = { ...DEFAULT_PICKLE_LIMITS, ...options.limits };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const memo = new Map<number, unknown>();
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  let stackTotal = 0;
  let pos = 0;
  let ops = 0;
  let opStart = 0;
  let opName = '';

  const at = (): string => `${source}: ${opName} at byte ${opStart}`;
  const need = (n: number): void => {
    if (n > bytes.byteLength - pos) throw new FormatError(`${at()} needs ${n} bytes but ${bytes.byteLength - pos} remain (truncated pickle)`);
  };
  const u8 = (): number => { need(1); return bytes[pos++]!; };
  const u16 = (): number => { need(2); const v = view.getUint16(pos, true); pos += 2; return v; };
  const u32 = (): number => { need(4); const v = view.getUint32(pos, true); pos += 4; return v; };
  const push = (v: unknown): void => {
    if (++stackTotal > limits.maxStack) throw new LimitError(`${at()}: more than ${limits.maxStack} items on the pickle stack`);
    stack.push(v);
  };
  const pop = (): unknown => {
    if (stack.length === 0) throw new FormatError(`${at()}: pickle stack underflow`);
    stackTotal--;
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) throw new FormatError(`${at()}: pickle stack underflow`);
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const previous = marks.pop();
    if (previous === undefined) throw new FormatError(`${at()}: no MARK to pop to`);
    stack = previous;
    return items;
  };
  const text = (n: number, decoder: TextDecoder): string => {
    need(n);
    if (n > limits.maxStringBytes) throw new LimitError(`${at()}: a string of ${n} bytes exceeds the limit of ${limits.maxStringBytes}`);
    const s = bytes.subarray(pos, pos + n);
    pos += n;
    try {
      return decoder.decode(s);
    } catch (cause) {
      throw new FormatError(`${at()}: string is not valid UTF-8`, { cause });
    }
  };
  const line = (): string => {
    // GLOBAL's module and name are newline-terminated; a name longer than 128 is not a Python name.
    const end = bytes.subarray(pos, pos + 257).indexOf(0x0a) + pos;
    if (end < pos) throw new FormatError(`${at()}: GLOBAL name is not terminated within 256 bytes`);
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const memoPut = (index: number): void => {
    if (!memo.has(index) && memo.size >= limits.maxMemo) throw new LimitError(`${at()}: more than ${limits.maxMemo} memo entries`);
    memo.set(index, top());
  };
  const memoGet = (index: number): void => {
    if (!memo.has(index)) throw new FormatError(`${at()}: memo index ${index} was never stored`);
    push(memo.get(index));
  };
  const call = (fn: unknown, args: unknown): unknown => {
    if (!(fn instanceof PickleGlobal)) throw new FormatError(`${at()}: cannot call a ${describe(fn)} (only allowed globals are callable)`);
    if (!Array.isArray(args) || !Object.isFrozen(args)) throw new FormatError(`${at()}: arguments to ${fn.qualifiedName} are not a tuple`);
    if (!fn.handler.call) throw new UnsafePickleError(`${at()}: ${fn.qualifiedName} is allowed as a type tag only and cannot be called`);
    return fn.handler.call(args, `${at()} (${fn.qualifiedName})`);
  };
  const tuple = (items: unknown[]): unknown[] => Object.freeze(items) as unknown[];

  while (true) {
    if (pos >= bytes.byteLength) throw new FormatError(`${source}: pickle ends at byte ${pos} without STOP (truncated)`);
    if (++ops > limits.maxOps) throw new LimitError(`${source}: pickle runs more than ${limits.maxOps} opcodes`);
    opStart = pos;
    const code = bytes[pos++]!;
    const hex = `0x${code.toString(16).padStart(2, '0')}`;
    opName = OPCODE_NAMES[code] ?? hex;
    if (!ALLOWED.has(opName)) {
      throw new UnsafePickleError(`${source}: opcode ${opName === hex ? hex : `${opName} (${hex})`} at byte ${opStart} is not allowed; allowed opcodes: ${[...ALLOWED].join(', ')}`);
    }
    switch (opName) {
      case 'PROTO': {
        const p = u8();
        if (p > 5) throw new FormatError(`${at()}: unknown pickle protocol ${p}`);
        break;
      }
      case 'STOP': {
        if (marks.length > 0) throw new FormatError(`${at()}: STOP inside an open MARK`);
        return pop();
      }
      case 'MARK':
        if (marks.length >= limits.maxMarkDepth) throw new LimitError(`${at()}: more than ${limits.maxMarkDepth} nested MARKs`);
        marks.push(stack);
        stack = [];
        break;
      case 'GLOBAL': {
        const module = line();
        const name = line();
        const qualified = `${module}.${name}`;
        const handler = options.globals.get(qualified);
        if (!handler || !NAME_PART.test(module) || !NAME_PART.test(name)) {
          throw new UnsafePickleError(`${source}: GLOBAL ${JSON.stringify(qualified).slice(0, 200)} at byte ${opStart} is not allowed; allowed globals: ${[...options.globals.keys()].join(', ')}`);
        }
        push(new PickleGlobal(module, name, handler));
        break;
      }
      case 'REDUCE': {
        const args = pop();
        const fn = pop();
        push(call(fn, args));
        break;
      }
      case 'NEWOBJ': {
        const args = pop();
        const cls = pop();
        push(call(cls, args));
        break;
      }
      case 'BUILD': {
        const state = pop();
        const obj = top();
        // Only dicts take state here: an OrderedDict's attributes (e.g. a state_dict's _metadata) are dropped.
        if (!(obj instanceof Map)) throw new FormatError(`${at()}: BUILD on a ${describe(obj)} is not supported`);
        if (state !== null && !(state instanceof Map) && !Array.isArray(state)) throw new FormatError(`${at()}: BUILD state is a ${describe(state)}`);
        break;
      }
      case 'BINPERSID': {
        const pid = pop();
        if (!options.persistentLoad) throw new UnsafePickleError(`${at()}: persistent ids are not allowed in ${source}`);
        push(options.persistentLoad(pid, at()));
        break;
      }
      case 'EMPTY_DICT': push(new Map()); break;
      case 'EMPTY_LIST': push([]); break;
      case 'EMPTY_TUPLE': push(tuple([])); break;
      case 'EMPTY_SET': push(new Set()); break;
      case 'SETITEM': {
        const value = pop();
        const key = pop();
        const dict = top();
        if (!(dict instanceof Map)) throw new FormatError(`${at()}: SETITEM on a ${describe(dict)}`);
        dict.set(checkKey(key, at()), value);
        break;
      }
      case 'SETITEMS': {
        const items = popMark();
        stackTotal -= items.length;
        const dict = top();
        if (!(dict instanceof Map)) throw new FormatError(`${at()}: SETITEMS on a ${describe(dict)}`);
        if (items.length % 2 !== 0) throw new FormatError(`${at()}: SETITEMS with an odd number of items`);
        for (let i = 0; i < items.length; i += 2) dict.set(checkKey(items[i], at()), items[i + 1]);
        break;
      }
      case 'APPEND': {
        const value = pop();
        const list = top();
        if (!Array.isArray(list) || Object.isFrozen(list)) throw new FormatError(`${at()}: APPEND to a ${describe(list)}`);
        list.push(value);
        break;
      }
      case 'APPENDS': {
        const items = popMark();
        stackTotal -= items.length;
        const list = top();
        if (!Array.isArray(list) || Object.isFrozen(list)) throw new FormatError(`${at()}: APPENDS to a ${describe(list)}`);
        for (const item of items) list.push(item);
        break;
      }
      case 'TUPLE': {
        const items = popMark();
        stackTotal -= items.length;
        push(tuple(items));
        break;
      }
      case 'TUPLE1': { const a = pop(); push(tuple([a])); break; }
      case 'TUPLE2': { const b = pop(); const a = pop(); push(tuple([a, b])); break; }
      case 'TUPLE3': { const c = pop(); const b = pop(); const a = pop(); push(tuple([a, b, c])); break; }
      case 'NONE': push(null); break;
      case 'NEWTRUE': push(true); break;
      case 'NEWFALSE': push(false); break;
      case 'BININT': { need(4); push(view.getInt32(pos, true)); pos += 4; break; }
      case 'BININT1': push(u8()); break;
      case 'BININT2': push(u16()); break;
      case 'LONG1': {
        const n = u8();
        need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[pos + i]!);
        if (n > 0 && bytes[pos + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        pos += n;
        push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 'BINFLOAT': { need(8); push(view.getFloat64(pos, false)); pos += 8; break; }
      case 'BINUNICODE': push(text(u32(), utf8)); break;
      case 'SHORT_BINSTRING': push(text(u8(), latin1)); break;
      case 'BINPUT': memoPut(u8()); break;
      case 'LONG_BINPUT': memoPut(u32()); break;
      case 'BINGET': memoGet(u8()); break;
      case 'LONG_BINGET': memoGet(u32()); break;
      default:
        throw new UnsafePickleError(`${at()}: opcode is outside the allowlist of a tensors-and-containers pickle`);
    }
  }
}
