/**
 * Mutation fuzzer for the file readers (safetensors, .npy, torch .pt). Every mutated file must
 * read successfully or fail with a MechIntError, within a time bound, allocating no more than a
 * small multiple of its size. Usage: `tsx scripts/fuzz.ts [iterations=100000] [seed=1]`; prints
 * the outcome counts as JSON and exits 1 on any failure. test/formats-fuzz.test.ts runs a few
 * thousand iterations of the same engine.
 */
import { createRng } from '../src/random.js';
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { unzipSync, zipSync } from 'fflate';
import { MechIntError } from '../src/errors.js';
import { fromFloat32, type RawTensor } from '../src/formats/dtypes.js';
import { readActivationFile } from '../src/formats/read-any.js';
import { serializeNpy } from '../src/formats/npy.js';
import { serializeSafetensors } from '../src/formats/safetensors.js';

const FIXTURES = fileURLToPath(new URL('../test/fixtures/torch/', import.meta.url));
/** Fresh bytes a read may allocate (outside the input's buffer), as a multiple of the input size. */
export const ALLOCATION_FACTOR = 16;

export interface FuzzResult {
  iterations: number;
  /** Outcome counts: `ok`, or the error code of each MechIntError. */
  outcomes: Record<string, number>;
  /** Counts by mutation kind. */
  mutations: Record<string, number>;
  /** Reads that threw a non-MechIntError, ran past the time bound or allocated too much. */
  failures: { kind: string; mutation: string; seed: string; detail: string }[];
  slowestMs: number;
}

interface Seed { name: string; bytes: Uint8Array; format: 'safetensors' | 'npy' | 'pt' }

/** Seeded, so a failing mutation can be replayed. */
const rng = (seed: number): (() => number) => createRng(seed).uniform;

function concat(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks));
}

export function loadSeeds(): Seed[] {
  const f32 = (n: number, shape: number[]): RawTensor => fromFloat32(Float32Array.from({ length: n }, (_, i) => i * 0.25 - 1), shape);
  const seeds: Seed[] = [
    { name: 'two.safetensors', format: 'safetensors', bytes: concat(serializeSafetensors({ 'blocks.0': f32(12, [3, 4]), b: f32(2, [2]) }, { global_step: '7' })) },
    { name: 'rank3.safetensors', format: 'safetensors', bytes: concat(serializeSafetensors({ x: f32(24, [2, 3, 4]), empty: f32(0, [0, 5]) })) },
    { name: 'written.npy', format: 'npy', bytes: serializeNpy(f32(6, [2, 3])) },
  ];
  for (const name of ['c_f4.npy', 'fortran_f8.npy', 'fortran_i2_3d.npy', 'i8_v2.npy', 'u4_v3.npy']) {
    seeds.push({ name, format: 'npy', bytes: new Uint8Array(readFileSync(FIXTURES + name)) });
  }
  for (const name of ['activations_shard_000000_step_0.pt', 'activations_shard_000001_step_200.pt', 'transposed.pt', 'ordered_dict.pt', 'ints.pt']) {
    seeds.push({ name, format: 'pt', bytes: new Uint8Array(readFileSync(FIXTURES + name)) });
  }
  // The same torch file with deflated entries, so inflate is fuzzed too.
  const entries = unzipSync(seeds[seeds.length - 1]!.bytes);
  seeds.push({ name: 'ints-deflated.pt', format: 'pt', bytes: zipSync(Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, [v, { level: 6 }]]))) });
  return seeds;
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x20];
/** Every pickle opcode byte, allowed or not, so edits hit the refusal paths too. */
const OPCODES = [...'(.012FIJKLMNPQRSTUVXabcd}eghijl]opqrst)uGBC'].map((c) => c.charCodeAt(0)).concat(Array.from({ length: 0x19 }, (_, i) => 0x80 + i));

type Mutator = (b: Uint8Array, r: () => number, seed: Seed) => Uint8Array;

const pick = <T>(xs: readonly T[], r: () => number): T => xs[Math.floor(r() * xs.length)]!;
const int = (n: number, r: () => number): number => Math.floor(r() * n);

const MUTATORS: Record<string, Mutator> = {
  bitflip(b, r) {
    const out = b.slice();
    for (let k = 1 + int(8, r); k > 0; k--) { const i = int(out.length, r); out[i]! ^= 1 << int(8, r); }
    return out;
  },
  byte(b, r) {
    const out = b.slice();
    for (let k = 1 + int(4, r); k > 0; k--) out[int(out.length, r)] = r() < 0.5 ? pick(INTERESTING, r) : int(256, r);
    return out;
  },
  truncate(b, r) {
    return b.slice(0, int(b.length, r));
  },
  splice(b, r) {
    // Delete or duplicate a run of bytes: shifts every later offset.
    const at = int(b.length, r);
    const n = 1 + int(16, r);
    return r() < 0.5 ? concat([b.subarray(0, at), b.subarray(at + n)]) : concat([b.subarray(0, at + n), b.subarray(at)]);
  },
  header(b, r, seed) {
    const out = b.slice();
    const view = new DataView(out.buffer);
    if (seed.format === 'safetensors') {
      if (r() < 0.4) { view.setBigUint64(0, BigInt(pick([0, 1, 7, 8, out.length, out.length - 8, 2 ** 32, 2 ** 53], r)) + BigInt(int(3, r)), true); return out; }
      return editText(out, 8, Number(view.getBigUint64(0, true)), r);
    }
    if (seed.format === 'npy') {
      if (r() < 0.3) { view.setUint16(8, pick([0, 1, 0xffff, out.length], r), true); return out; }
      if (r() < 0.2) { out[6] = int(5, r); return out; }
      return editText(out, 10, view.getUint16(8, true), r);
    }
    // pt: edit a field of a zip record (sizes, offsets, counts, name lengths).
    const sigs: number[] = [];
    for (let i = 0; i + 4 <= out.length; i++) if (out[i] === 0x50 && out[i + 1] === 0x4b && out[i + 2]! < 8) sigs.push(i);
    const at = pick(sigs, r) + 4 + int(44, r);
    if (at + 4 <= out.length) view.setUint32(at, pick([0, 1, 0xffff, 0xffffffff, out.length, view.getUint32(at, true) + 1], r), true);
    return out;
  },
  pickle(b, r, seed) {
    if (seed.format !== 'pt') return MUTATORS.bitflip!(b, r, seed);
    const files = unzipSync(b);
    const name = Object.keys(files).find((k) => k.endsWith('/data.pkl'))!;
    let p: Uint8Array = files[name]!;
    const ops = 1 + int(3, r);
    for (let k = 0; k < ops; k++) {
      const at = int(p.length, r);
      const choice = r();
      if (choice < 0.35) { p = p.slice(); p[at] = pick(OPCODES, r); }
      else if (choice < 0.6) { p = p.slice(); p[at] = pick([0, 1, 2, 3, 4, 5, 6, 0x7f, 0xff], r); }
      else if (choice < 0.8) p = concat([p.subarray(0, at), Uint8Array.of(pick(OPCODES, r)), p.subarray(at)]);
      else p = concat([p.subarray(0, at), p.subarray(at + 1 + int(8, r))]);
    }
    files[name] = new Uint8Array(p);
    // Sometimes drop or resize a storage entry as well.
    if (r() < 0.2) {
      const data = Object.keys(files).filter((k) => k.includes('/data/'));
      const victim = pick(data, r);
      if (r() < 0.5) delete files[victim];
      else files[victim] = files[victim]!.subarray(0, int(files[victim]!.length, r));
    }
    return zipSync(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, [v, { level: 0 }]])));
  },
};

/** Replaces a digit run or a character in the text header at [start, start + length). */
function editText(out: Uint8Array, start: number, length: number, r: () => number): Uint8Array {
  const end = Math.min(out.length, start + length);
  if (end <= start) return out;
  const text = Buffer.from(out.subarray(start, end)).toString('latin1');
  const digits = [...text.matchAll(/[0-9]+/g)];
  let edited: string;
  if (digits.length > 0 && r() < 0.7) {
    const m = pick(digits, r);
    const value = pick(['0', '1', '9999999', '4294967296', '9007199254740993', '-1', '1e9', String(Number(m[0]) + 1)], r);
    edited = text.slice(0, m.index) + value + text.slice(m.index! + m[0].length);
  } else {
    const i = int(text.length, r);
    edited = text.slice(0, i) + pick(['{', '}', '[', ']', '"', "'", ',', ':', '\\', '(', ')', 'True', 'null', ' '], r) + text.slice(i + 1);
  }
  return concat([out.subarray(0, start), Buffer.from(edited, 'latin1'), out.subarray(end)]);
}

/** Runs `iterations` mutations over the seeds; deterministic for a given `seed`. */
export function fuzz(iterations: number, seed = 1, timeBoundMs = 2000): FuzzResult {
  const r = rng(seed);
  const seeds = loadSeeds();
  const result: FuzzResult = { iterations, outcomes: {}, mutations: {}, failures: [], slowestMs: 0 };
  const kinds = Object.keys(MUTATORS);
  for (let i = 0; i < iterations; i++) {
    const s = seeds[i % seeds.length]!;
    const kind = s.format === 'pt' && r() < 0.3 ? 'pickle' : pick(kinds, r);
    const input = MUTATORS[kind]!(s.bytes, r, s);
    result.mutations[kind] = (result.mutations[kind] ?? 0) + 1;
    const fail = (what: string, detail: string): void => {
      if (result.failures.length < 20) result.failures.push({ kind: what, mutation: kind, seed: s.name, detail: `${detail} (iteration ${i}, seed ${seed})` });
    };
    const started = performance.now();
    let outcome: string;
    try {
      const read = readActivationFile(input, s.name, { maxUncompressedBytes: 4 * input.length, maxExpansion: 2 });
      outcome = 'ok';
      // Count each fresh buffer once: views into the input cost nothing.
      const fresh = new Set<ArrayBufferLike>();
      let allocated = 0;
      for (const t of Object.values(read.tensors)) {
        if (t.data.buffer !== input.buffer && !fresh.has(t.data.buffer)) { fresh.add(t.data.buffer); allocated += t.data.byteLength; }
      }
      if (allocated > ALLOCATION_FACTOR * input.length) fail('allocation', `allocated ${allocated} bytes for a ${input.length}-byte file`);
    } catch (error) {
      if (error instanceof MechIntError) outcome = error.code;
      else {
        outcome = 'unexpected';
        fail('exception', error instanceof Error ? `${error.name}: ${error.message}` : String(error));
      }
    }
    const ms = performance.now() - started;
    result.slowestMs = Math.max(result.slowestMs, ms);
    if (ms > timeBoundMs) fail('slow', `took ${ms.toFixed(0)} ms`);
    result.outcomes[outcome] = (result.outcomes[outcome] ?? 0) + 1;
  }
  result.slowestMs = Math.round(result.slowestMs * 10) / 10;
  return result;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const iterations = Number(process.argv[2] ?? 100_000);
  const seed = Number(process.argv[3] ?? 1);
  if (!Number.isSafeInteger(iterations) || iterations < 1) {
    console.error(`Expected the iteration count to be a positive integer, got \`${process.argv[2]}\``);
    process.exit(2);
  }
  const started = Date.now();
  const result = fuzz(iterations, seed);
  console.log(JSON.stringify({ ...result, seconds: (Date.now() - started) / 1000 }, null, 2));
  process.exit(result.failures.length > 0 ? 1 : 0);
}
