/**
 * One way to declare an options object: each field once, with its type check, default, doc and
 * snake_case alias. A schema yields the TypeScript type, parses camelCase or the guide's
 * snake_case keys, rejects unknown keys with the nearest valid one, fills defaults (static, or
 * derived from the data at hand) and prints its docs table. MechIntConfig's analysisOptions,
 * every analysis, and the runner's options use it, so every message reads the same.
 */
import { ConfigError } from './errors.js';
import { closest } from './suggest.js';

/** What a derived default may look at: the data (`dim` of the layer's rows) and the options resolved so far. */
export interface DeriveContext {
  dim?: number;
  values: Record<string, unknown>;
}

export interface Field<T> {
  /** The type as the docs state it ("integer ≥ 1"). */
  readonly type: string;
  readonly doc: string;
  /** A value, or a function of the data for derived defaults (`defaultDoc` says what it is). */
  readonly default: T | ((ctx: DeriveContext) => T);
  readonly defaultDoc?: string;
  /** Other accepted spellings besides camelCase and its snake_case. */
  readonly aliases?: readonly string[];
  /** How the result is computed, not what it is (thread counts): left out of results keys. */
  readonly sameResult?: boolean;
  /** Returns the value, or throws a message fragment (what was expected). */
  check(value: unknown): T;
}

export type FieldMap = Record<string, Field<unknown>>;
export type OptionValues<S extends FieldMap> = { -readonly [K in keyof S]: S[K] extends Field<infer T> ? T : never };
/** What a user writes: any subset, camelCase (snake_case is accepted at run time too). */
export type OptionInput<S extends FieldMap> = { readonly [K in keyof S]?: S[K] extends Field<infer T> ? T : never };

const show = (v: unknown): string => {
  try {
    return typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v));
  } catch {
    return String(v);
  }
};

class Expected extends Error {}
const expect = (what: string): never => {
  throw new Expected(what);
};

interface Common<T> {
  default: T | ((ctx: DeriveContext) => T);
  doc: string;
  defaultDoc?: string;
  aliases?: readonly string[];
  sameResult?: boolean;
}

function field<T>(type: string, c: Common<T>, check: (v: unknown) => T): Field<T> {
  return { type, doc: c.doc, default: c.default, ...(c.defaultDoc ? { defaultDoc: c.defaultDoc } : {}), ...(c.aliases ? { aliases: c.aliases } : {}), ...(c.sameResult ? { sameResult: true } : {}), check };
}

const range = (min?: number, max?: number, minExclusive = false) =>
  [min === undefined ? '' : `${minExclusive ? '>' : '>='} ${min}`, max === undefined ? '' : `<= ${max}`].filter(Boolean).join(' and ');

/** A type and its check, to combine (`orLiteral(integer(1), 'auto', …)`). */
export type Check<T> = Pick<Field<T>, 'type' | 'check'>;

export function integer(min?: number, max?: number): Check<number> {
  const type = `integer${range(min, max) ? ' ' + range(min, max) : ''}`;
  return {
    type,
    check: (v) => {
      if (typeof v !== 'number' || !Number.isInteger(v) || (min !== undefined && v < min) || (max !== undefined && v > max)) expect(`an ${type}`);
      return v as number;
    },
  };
}

export function int(c: Common<number> & { min?: number; max?: number }): Field<number> {
  const base = integer(c.min, c.max);
  return field(base.type, c, base.check);
}

export function num(c: Common<number> & { min?: number; max?: number; minExclusive?: boolean }): Field<number> {
  const type = `number${range(c.min, c.max, c.minExclusive) ? ' ' + range(c.min, c.max, c.minExclusive) : ''}`;
  return field(type, c, (v) => {
    const bad = typeof v !== 'number' || !Number.isFinite(v) || (c.min !== undefined && (c.minExclusive ? v <= c.min : v < c.min)) || (c.max !== undefined && v > c.max);
    if (bad) expect(`a finite ${type}`);
    return v as number;
  });
}

export const boolean: Check<boolean> = { type: 'true or false', check: (v) => (typeof v === 'boolean' ? v : expect('true or false')) };

export function bool(c: Common<boolean>): Field<boolean> {
  return field(boolean.type, c, boolean.check);
}

export function oneOf<const T extends string>(values: readonly T[], c: Common<T>): Field<T> {
  return field(values.map((v) => `'${v}'`).join(' | '), c, (v) => ((values as readonly unknown[]).includes(v) ? (v as T) : expect(`one of ${values.join(', ')}`)));
}

export function str(c: Common<string>): Field<string> {
  return field('string', c, (v) => (typeof v === 'string' && v.length > 0 ? v : expect('a non-empty string')));
}

export function strings(c: Common<string[] | null>): Field<string[] | null> {
  return field('string[] | null', c, (v) => {
    if (v === null) return null;
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && s.length > 0)) expect('an array of non-empty strings');
    return [...(v as string[])];
  });
}

export function numbers(c: Common<number[]> & { minLength?: number }): Field<number[]> {
  return field('number[]', c, (v) => {
    if (!Array.isArray(v) || v.length < (c.minLength ?? 0) || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) expect(`an array of finite numbers${c.minLength ? ` (at least ${c.minLength})` : ''}`);
    return [...(v as number[])];
  });
}

/** A field that also takes one literal (`'auto'`, or null). */
export function orLiteral<T, const L extends string | null>(base: Check<T>, literal: L, c: Common<T | L>): Field<T | L> {
  const lit = literal === null ? 'null' : `'${literal}'`;
  return field(`${base.type} | ${lit}`, c, (v) => {
    if (v === literal) return literal;
    try {
      return base.check(v);
    } catch (e) {
      if (e instanceof Expected) expect(`${e.message} or ${lit}`);
      throw e;
    }
  });
}

/** The names to suggest for a mistyped key, in its own style: snake_case for `n_latnets`, camelCase for `nLatnets`. */
export function sameStyle(typed: string, camelNames: readonly string[]): string[] {
  return /[A-Z]/.test(typed) ? [...camelNames] : camelNames.map(snakeCase);
}

/** camelCase → snake_case (`nLatents` → `n_latents`, `auxK` → `aux_k`). */
export const snakeCase = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

export interface OptionsSchema<S extends FieldMap> {
  /** How messages name these options ("SAE option", "MechIntConfig option"). */
  readonly label: string;
  readonly fields: S;
  /** Checks the keys and the values given; fills nothing. Throws ConfigError naming the key. */
  parse(input: unknown): Partial<OptionValues<S>>;
  /** parse, then every default (derived ones from `ctx`), then the cross-field check. */
  resolve(input: unknown, ctx?: Omit<DeriveContext, 'values'>): OptionValues<S>;
  /** The docs table: option, snake_case, type, default, description. */
  docsTable(): string;
  /** The same options plus `more` (the cross-field check still applies). */
  extend<M extends FieldMap>(more: M): OptionsSchema<S & M>;
}

export function defineOptions<S extends FieldMap>(
  label: string,
  fields: S,
  refine?: (values: OptionValues<S>, ctx: Omit<DeriveContext, 'values'>) => void,
): OptionsSchema<S> {
  const byName = new Map<string, string>();
  for (const [key, f] of Object.entries(fields)) {
    for (const n of [key, snakeCase(key), ...(f.aliases ?? [])]) byName.set(n, key);
  }
  const names = Object.keys(fields).map(snakeCase);

  function parse(input: unknown): Partial<OptionValues<S>> {
    if (input === undefined || input === null) return {};
    if (typeof input !== 'object' || Array.isArray(input)) throw new ConfigError(`Expected ${label}s to be an object; got \`${show(input)}\``);
    const out: Record<string, unknown> = {};
    const given: Record<string, string> = {};
    for (const [raw, value] of Object.entries(input)) {
      if (value === undefined) continue;
      const key = byName.get(raw);
      if (!key) {
        const near = closest(raw, sameStyle(raw, Object.keys(fields)));
        throw new ConfigError(`Unknown ${label} \`${raw}\`${near ? `; did you mean \`${near}\`?` : ''} The options are ${names.join(', ')}`);
      }
      if (Object.hasOwn(given, key) && show(out[key]) !== show(value)) {
        throw new ConfigError(`${label} \`${snakeCase(key)}\` is given twice (as \`${given[key]}\` and \`${raw}\`) with different values`);
      }
      try {
        out[key] = fields[key]!.check(value);
      } catch (e) {
        if (e instanceof Expected) throw new ConfigError(`Expected ${label} \`${raw}\` to be ${e.message}; got \`${show(value)}\``);
        throw e;
      }
      given[key] = raw;
    }
    return out as Partial<OptionValues<S>>;
  }

  function resolve(input: unknown, ctx: Omit<DeriveContext, 'values'> = {}): OptionValues<S> {
    const values: Record<string, unknown> = { ...parse(input) };
    for (const [key, f] of Object.entries(fields)) {
      if (Object.hasOwn(values, key)) continue;
      values[key] = typeof f.default === 'function' ? (f.default as (c: DeriveContext) => unknown)({ ...ctx, values }) : f.default;
    }
    refine?.(values as OptionValues<S>, ctx);
    return values as OptionValues<S>;
  }

  function docsTable(): string {
    const rows = Object.entries(fields).map(([key, f]) => {
      const def = f.defaultDoc ?? (typeof f.default === 'function' ? 'derived' : JSON.stringify(f.default));
      return `| \`${key}\` | \`${snakeCase(key)}\` | ${f.type.replace(/\|/g, '\\|')} | \`${def}\` | ${f.doc.replace(/\|/g, '\\|')} |`;
    });
    return ['| option | snake_case | type | default | description |', '| --- | --- | --- | --- | --- |', ...rows].join('\n');
  }

  const extend = <M extends FieldMap>(more: M): OptionsSchema<S & M> =>
    defineOptions(label, { ...fields, ...more } as S & M, refine as ((values: OptionValues<S & M>, ctx: Omit<DeriveContext, 'values'>) => void) | undefined);

  return { label, fields, parse, resolve, docsTable, extend };
}

/** Which training steps an analysis reads: every step, the last one, or an inclusive range of global steps. */
export type StepSelection = 'all' | 'last' | [number, number];

export function steps(c: Common<StepSelection>): Field<StepSelection> {
  return field("'all' | 'last' | [from, to]", c, (v) => {
    if (v === 'all' || v === 'last') return v;
    if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0) && v[0] <= v[1]) return [v[0], v[1]];
    return expect("'all', 'last', or [from, to]: two global steps, from <= to");
  });
}

/** A ConfigError for a cross-field check, worded like the others. */
export function optionError(label: string, key: string, expected: string, value: unknown): ConfigError {
  return new ConfigError(`Expected ${label} \`${snakeCase(key)}\` to be ${expected}; got \`${show(value)}\``);
}

/** Rejects keys of a plain options object that are not `known`, naming the nearest one. */
export function checkKeys(label: string, input: object | undefined, known: readonly string[]): void {
  if (input === undefined) return;
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw new ConfigError(`Expected ${label}s to be an object; got \`${show(input)}\``);
  for (const key of Object.keys(input)) {
    if (known.includes(key)) continue;
    const near = closest(key, known);
    throw new ConfigError(`Unknown ${label} \`${key}\`${near ? `; did you mean \`${near}\`?` : ''} The options are ${known.join(', ')}`);
  }
}
