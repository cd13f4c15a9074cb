/**
 * Shard metadata: safetensors `__metadata__` holds strings only, so values given to
 * `saveActivations(step, metadata)` are encoded by one documented rule and read back faithfully
 * with decodeShardMetadata:
 * - a string is stored as it is;
 * - any other JSON value (number, boolean, null, array, plain object) is stored as JSON the way
 *   Python's `json` module writes it: NaN, Infinity and -Infinity as the bare tokens `NaN`,
 *   `Infinity`, `-Infinity` (so `json.loads` in Python gives the same floats back) and -0 as
 *   `-0.0`; its key is listed in the metadata key `json_keys` (a JSON array), so a reader knows
 *   that `"1"` was the number 1 and not the string "1";
 * - a tensor, typed array, Date, Map, Set, class instance, function, symbol or bigint is refused
 *   with a MetadataError naming the key (convert it first: `await t.array()`, `Array.from(x)`,
 *   `d.toISOString()`); `undefined` at the top level means "no value" and is skipped.
 */
import { MetadataError } from '../errors.js';

/** The metadata key listing which keys hold JSON. */
export const JSON_KEYS = 'json_keys';

/** Keys the writer sets itself. */
export const RESERVED_METADATA_KEYS = ['format', 'global_step', 'shard_id', 'epoch', 'batch_idx', 'rank', 'created', 'shapes', JSON_KEYS, 'mechint_aux'] as const;

function describe(v: unknown): string | null {
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'symbol') return 'a symbol';
  if (typeof v === 'bigint') return 'a bigint (pass Number(x) or String(x))';
  if (v === undefined) return 'undefined (pass null)';
  if (v === null || typeof v !== 'object') return null;
  const o = v as Record<string, unknown>;
  if (typeof o.dataSync === 'function' && Array.isArray(o.shape) && typeof o.dtype === 'string') return 'a tf.Tensor (pass `await t.array()` or `t.arraySync()`)';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} (pass Array.from(x))`;
  if (v instanceof Date) return 'a Date (pass d.toISOString())';
  if (Array.isArray(v)) return null;
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return `a ${proto?.constructor?.name ?? 'class'} instance (pass a plain object)`;
  return null;
}

/** JSON text of `v` as Python's json.dumps writes it (non-finite numbers as bare tokens). Throws for what JSON cannot hold. */
export function stringifyMetadataJson(v: unknown, key: string, depth = 0, seen = new Set<object>()): string {
  const bad = describe(v);
  if (bad) throw new MetadataError(`Shard metadata \`${key}\` is ${bad}; metadata values must be strings, numbers, booleans, null, or arrays and plain objects of these`);
  if (depth > 64) throw new MetadataError(`Shard metadata \`${key}\` is nested more than 64 levels deep`);
  if (v === null) return 'null';
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'NaN';
    if (v === Infinity) return 'Infinity';
    if (v === -Infinity) return '-Infinity';
    if (Object.is(v, -0)) return '-0.0';
    return JSON.stringify(v);
  }
  if (typeof v === 'string' || typeof v === 'boolean') return JSON.stringify(v);
  if (seen.has(v as object)) throw new MetadataError(`Shard metadata \`${key}\` contains itself (a cycle)`);
  seen.add(v as object);
  try {
    if (Array.isArray(v)) return `[${v.map((x, i) => stringifyMetadataJson(x, `${key}[${i}]`, depth + 1, seen)).join(',')}]`;
    const parts = Object.entries(v as Record<string, unknown>).map(([k, x]) => `${JSON.stringify(k)}:${stringifyMetadataJson(x, `${key}.${k}`, depth + 1, seen)}`);
    return `{${parts.join(',')}}`;
  } finally {
    seen.delete(v as object);
  }
}

/** Parses JSON that may hold the bare tokens NaN, Infinity, -Infinity (as Python's json writes them). */
export function parseMetadataJson(text: string): unknown {
  // JSON.parse refuses the bare tokens: swap each one outside a string literal for a string that
  // carries a marker the text does not contain, and turn those strings back into numbers in the reviver.
  let mark: string;
  do mark = `\u0000mechint-${Math.random().toString(36).slice(2)}:`;
  while (text.includes(mark));
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    const token = text.startsWith('-Infinity', i) ? '-Infinity' : text.startsWith('Infinity', i) ? 'Infinity' : text.startsWith('NaN', i) ? 'NaN' : null;
    if (token) {
      out += JSON.stringify(mark + token);
      i += token.length;
    } else {
      out += c;
      i++;
    }
  }
  const values: Record<string, number> = { NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity };
  return JSON.parse(out, (_k, v) => (typeof v === 'string' && v.startsWith(mark) ? values[v.slice(mark.length)] : v));
}

/**
 * Encodes user metadata for a shard: strings as they are, other values as JSON (listed in
 * `json_keys`). Refuses reserved keys whose value differs from the writer's.
 */
export function encodeUserMetadata(user: Record<string, unknown>, reserved: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const jsonKeys: string[] = [];
  for (const [k, v] of Object.entries(user)) {
    if (v === undefined) continue;
    const text = typeof v === 'string' ? v : stringifyMetadataJson(v, k);
    if ((RESERVED_METADATA_KEYS as readonly string[]).includes(k)) {
      if (Object.hasOwn(reserved, k) && reserved[k] === text) continue;
      throw new MetadataError(`Shard metadata \`${k}\` is set by mechint itself${Object.hasOwn(reserved, k) ? ` (${JSON.stringify(reserved[k])})` : ''}; got ${JSON.stringify(text)}. Use another key`);
    }
    out[k] = text;
    if (typeof v !== 'string') jsonKeys.push(k);
  }
  if (jsonKeys.length > 0) out[JSON_KEYS] = JSON.stringify(jsonKeys);
  return out;
}

/**
 * A shard's metadata with its values restored: the writer's own keys as numbers (`epoch` and
 * `batch_idx` null when empty), `shapes` and `mechint_aux` (provenance.ts) parsed, keys listed in `json_keys` parsed; others as strings.
 */
export function decodeShardMetadata(metadata: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  let jsonKeys: string[] = [];
  try {
    const parsed = metadata[JSON_KEYS] ? JSON.parse(metadata[JSON_KEYS]) : [];
    if (Array.isArray(parsed)) jsonKeys = parsed.filter((k): k is string => typeof k === 'string');
  } catch {
    // not ours: leave every value a string
  }
  const mechint = metadata.format === 'mechint';
  for (const [k, v] of Object.entries(metadata)) {
    if (k === JSON_KEYS) continue;
    if (jsonKeys.includes(k)) out[k] = parseMetadataJson(v);
    else if (mechint && (k === 'global_step' || k === 'shard_id' || k === 'rank')) out[k] = Number(v);
    else if (mechint && (k === 'epoch' || k === 'batch_idx')) out[k] = v === '' || v === 'null' ? null : Number(v);
    else if (mechint && (k === 'shapes' || k === 'mechint_aux')) out[k] = JSON.parse(v) as unknown;
    else out[k] = v;
  }
  return out;
}
