import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { unzipSync, zipSync } from 'fflate';
import { readTorchFile } from '../src/formats/torch.js';
import { readActivationFile } from '../src/formats/read-any.js';
import { unpickle, PickleGlobal } from '../src/formats/pickle.js';
import { type RawTensor } from '../src/formats/dtypes.js';
import { serializeNpy } from '../src/formats/npy.js';
import { serializeSafetensors } from '../src/formats/safetensors.js';
import { FormatError, LimitError, UnsafePickleError } from '../src/errors.js';

const DIR = new URL('./fixtures/torch/', import.meta.url);
const fixture = (name: string): Uint8Array => new Uint8Array(readFileSync(new URL(name, DIR)));
interface Expected { dtype: string; shape: number[]; values: number[] }
const expected = JSON.parse(readFileSync(new URL('expected.json', DIR), 'utf8')) as {
  pt: Record<string, { tensors: Record<string, Expected>; metadata: Record<string, string> }>;
  marker: string;
};

/** Values at full precision for the dtype (F64 and I64 are not squeezed through float32). */
function valuesOf(t: RawTensor): number[] {
  const v = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const n = t.shape.reduce((a, d) => a * d, 1);
  const get: Record<string, (i: number) => number> = {
    F32: (i) => v.getFloat32(i * 4, true), F64: (i) => v.getFloat64(i * 8, true),
    F16: (i) => halfBits(v.getUint16(i * 2, true)), BF16: (i) => new Float32Array(new Uint32Array([v.getUint16(i * 2, true) << 16]).buffer)[0]!,
    I64: (i) => Number(v.getBigInt64(i * 8, true)), I32: (i) => v.getInt32(i * 4, true), I16: (i) => v.getInt16(i * 2, true),
    I8: (i) => v.getInt8(i), U8: (i) => v.getUint8(i), U16: (i) => v.getUint16(i * 2, true), U32: (i) => v.getUint32(i * 4, true),
    U64: (i) => Number(v.getBigUint64(i * 8, true)), BOOL: (i) => v.getUint8(i),
  };
  return Array.from({ length: n }, (_, i) => get[t.dtype]!(i));
}

function halfBits(h: number): number {
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  const s = h & 0x8000 ? -1 : 1;
  return e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
}

for (const [name, want] of Object.entries(expected.pt)) {
  test(`reads ${name} as PyTorch wrote it (shapes, dtypes, values, metadata)`, () => {
    const got = readTorchFile(fixture(name), { source: name });
    assert.deepEqual(Object.keys(got.tensors).sort(), Object.keys(want.tensors).sort());
    for (const [key, w] of Object.entries(want.tensors)) {
      const t = got.tensors[key]!;
      assert.equal(t.dtype, w.dtype, key);
      assert.deepEqual(t.shape, w.shape, key);
      assert.deepEqual(valuesOf(t), w.values, key);
    }
    assert.deepEqual(got.metadata, want.metadata);
  });
}

test('refuses the os.system pickle with UnsafePickleError naming the global, and never runs it', () => {
  rmSync(expected.marker, { force: true });
  assert.throws(() => readActivationFile(fixture('hostile.pt'), 'hostile.pt'), (error: unknown) => {
    assert.ok(error instanceof UnsafePickleError);
    assert.equal(error.code, 'MECHINT_ERR_UNSAFE_PICKLE');
    assert.match(error.message, /hostile\.pt.*posix\.system.*not allowed.*allowed globals: torch\._utils\._rebuild_tensor_v2/);
    return true;
  });
  assert.equal(existsSync(expected.marker), false, 'the hostile command ran');
});

test('refuses a legacy (pre-1.6) torch.save file with a re-save hint', () => {
  assert.throws(() => readTorchFile(fixture('legacy.pt'), { source: 'legacy.pt' }), /legacy\.pt: unsupported legacy format.*re-save with torch >= 1\.6/);
});

test('fails cleanly on truncated files and on data that is not a zip', () => {
  const bytes = fixture('activations_shard_000000_step_0.pt');
  for (const cut of [0, 1, 4, 30, 100, bytes.length / 2, bytes.length - 30, bytes.length - 1]) {
    assert.throws(() => readTorchFile(bytes.subarray(0, Math.floor(cut))), FormatError, `cut at ${cut}`);
  }
  assert.throws(() => readTorchFile(new TextEncoder().encode('PK\x03\x04 this is not really a zip at all, just text')), /end-of-central-directory/);
  assert.throws(() => readTorchFile(new Uint8Array(64).fill(7)), /not a zip/);
  assert.throws(() => readActivationFile(new TextEncoder().encode('hello, world'), 'notes.txt'), /notes\.txt: unrecognised file format/);
});

/** Rebuilds a torch zip with some entries replaced, e.g. a hand-written data.pkl. */
function rezip(name: string, replace: Record<string, Uint8Array> = {}, level: 0 | 6 = 0): Uint8Array {
  const files: Record<string, Uint8Array> = unzipSync(fixture(name));
  for (const [k, v] of Object.entries(replace)) files[k] = v;
  return zipSync(Object.fromEntries(Object.entries(files).map(([k, v]) => [k, [v, { level }]])));
}

test('reads deflated zip entries, and refuses one that claims more than the limit before inflating', () => {
  const deflated = rezip('ints.pt', {}, 6);
  const got = readTorchFile(deflated);
  assert.deepEqual(valuesOf(got.tensors.i64!), expected.pt['ints.pt']!.tensors.i64!.values);
  assert.throws(() => readTorchFile(deflated, { maxUncompressedBytes: 100 }), LimitError);
  // A zip bomb's claim: a deflated entry that says it expands 10^6-fold is refused unread.
  const view = new DataView(deflated.buffer, deflated.byteOffset);
  const cd = deflated.findIndex((_, i) => i + 4 <= deflated.length && view.getUint32(i, true) === 0x02014b50);
  view.setUint32(cd + 24, 0x7fffffff, true);
  assert.throws(() => readTorchFile(deflated), /claims 2147483647 bytes from \d+ compressed, more than deflate can produce/);
  // A plausible ratio, but past the caller's cap: refused from the directory, nothing inflated.
  view.setUint32(cd + 24, view.getUint32(cd + 20, true) * 1000, true);
  assert.throws(() => readTorchFile(deflated, { maxUncompressedBytes: 100_000 }), /claim more than 100000 bytes uncompressed/);
});

test('refuses a stride-0 view that would expand a tiny storage past maxExpansion', () => {
  // torch.zeros(1).expand(100000): 4 bytes of storage, 400 KB if materialised.
  const pickle = buildPickle((p) => {
    p.global('torch._utils', '_rebuild_tensor_v2').mark().mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(1).op(0x74)
      .op(0x51).int(0).int(100000).op(0x85).int(0).op(0x85).op(0x89).op(0x7d).op(0x74).op(0x52);
  });
  const bytes = rezip('bare_tensor.pt', { 'bare_tensor/data.pkl': pickle, 'bare_tensor/data/0': new Uint8Array(4) });
  assert.throws(() => readTorchFile(bytes), /would expand to 400000 bytes.*maxExpansion/);
  assert.deepEqual(readTorchFile(bytes, { maxExpansion: 1e6 }).tensors.tensor!.shape, [100000]);
});

test('refuses a view that reaches past the end of its storage', () => {
  const pickle = buildPickle((p) => {
    p.global('torch._utils', '_rebuild_tensor_v2').mark().mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(6).op(0x74)
      .op(0x51).int(1).int(2).int(3).op(0x86).int(3).int(1).op(0x86).op(0x89).op(0x7d).op(0x74).op(0x52);
  });
  const bytes = rezip('bare_tensor.pt', { 'bare_tensor/data.pkl': pickle });
  assert.throws(() => readTorchFile(bytes), /reaches element 6 of storage 0, which holds 6/);
});

/** A tiny pickle assembler for hand-made hostile and edge-case pickles (protocol 2). */
class PickleBuilder {
  readonly bytes: number[] = [0x80, 2];
  op(code: number): this { this.bytes.push(code); return this; }
  mark(): this { return this.op(0x28); }
  int(n: number): this {
    if (n >= 0 && n < 256) this.bytes.push(0x4b, n);
    else { this.bytes.push(0x4a); const b = Buffer.alloc(4); b.writeInt32LE(n); this.bytes.push(...b); }
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    this.bytes.push(0x58, ...len, ...b);
    return this;
  }
  global(module: string, name: string): this {
    this.bytes.push(0x63, ...Buffer.from(`${module}\n${name}\n`, 'latin1'));
    return this;
  }
}

function buildPickle(body: (p: PickleBuilder) => void): Uint8Array {
  const p = new PickleBuilder();
  body(p);
  p.op(0x2e);
  return Uint8Array.from(p.bytes);
}

test('refuses every global outside the allowlist and every opcode weights_only refuses, before calling anything', () => {
  let calls = 0;
  const globals = new Map([['collections.OrderedDict', { call: () => { calls++; return new Map(); } }]]);
  const run = (bytes: Uint8Array): unknown => unpickle(bytes, { source: 'evil.pkl', globals });
  for (const [module, name] of [['builtins', 'eval'], ['os', 'system'], ['posix', 'system'], ['subprocess', 'Popen'], ['torch', 'load']]) {
    const evil = buildPickle((p) => p.global(module!, name!).str('touch /tmp/x').op(0x85).op(0x52));
    assert.throws(() => run(evil), (e: unknown) => e instanceof UnsafePickleError && e.message.includes(`${module}.${name!.split('\n')[0]}`) && /at byte 2 is not allowed/.test(e.message));
  }
  // STACK_GLOBAL (0x93), INST ('i'), OBJ ('o'), EXT1 and friends are refused by opcode.
  for (const [code, opName] of [[0x93, 'STACK_GLOBAL'], [0x69, 'INST'], [0x6f, 'OBJ'], [0x82, 'EXT1'], [0x30, 'POP'], [0x8c, 'SHORT_BINUNICODE'], [0xff, '0xff']] as const) {
    const evil = buildPickle((p) => p.str('os').str('system').op(code));
    assert.throws(() => run(evil), new RegExp(`opcode ${opName} .* is not allowed`));
  }
  // A storage class is a dtype tag only: calling it is refused.
  const tagCall = buildPickle((p) => p.global('torch', 'FloatStorage').op(0x29).op(0x52));
  assert.throws(() => unpickle(tagCall, { globals: new Map([['torch.FloatStorage', {}]]) }), /type tag only/);
  assert.equal(calls, 0);
  assert.ok(run(buildPickle((p) => p.global('collections', 'OrderedDict').op(0x29).op(0x52))) instanceof Map);
  assert.equal(calls, 1);
});

test('enforces pickle limits: nesting, memo, lengths past the end, and stack misuse', () => {
  const globals = new Map();
  const deep = buildPickle((p) => { for (let i = 0; i < 300; i++) p.mark(); });
  assert.throws(() => unpickle(deep, { globals }), LimitError);
  const claims = Uint8Array.from([0x80, 2, 0x58, 0xff, 0xff, 0xff, 0x7f, 0x61, 0x2e]);
  assert.throws(() => unpickle(claims, { globals }), /needs 2147483647 bytes but 2 remain/);
  const memoLimit = Uint8Array.from([0x80, 2, ...Array.from({ length: 12 }, (_, i) => [0x4b, i, 0x71, i]).flat(), 0x2e]);
  assert.throws(() => unpickle(memoLimit, { globals, limits: { maxMemo: 10 } }), /more than 10 memo entries/);
  assert.throws(() => unpickle(Uint8Array.from([0x80, 2, 0x68, 5, 0x2e]), { globals }), /memo index 5 was never stored/);
  assert.throws(() => unpickle(Uint8Array.from([0x80, 2, 0x52, 0x2e]), { globals }), /stack underflow/);
  assert.throws(() => unpickle(Uint8Array.from([0x80, 2, 0x4b]), { globals }), /truncated/);
  // A list that contains itself unpickles (Python allows it) and stringifies without looping.
  const cyclic = Uint8Array.from([0x80, 2, 0x5d, 0x71, 0, 0x68, 0, 0x61, 0x2e]);
  const list = unpickle(cyclic, { globals }) as unknown[];
  assert.equal(list[0], list);
  assert.ok(new PickleGlobal('a', 'b', {}).qualifiedName === 'a.b');
});

test('a self-containing metadata value and a cyclic dict read without hanging', () => {
  // {'x': tensor, 'meta': L} where L = [L]; and a dict holding itself under 'self'.
  const pickle = buildPickle((p) => {
    p.op(0x7d).op(0x71).op(9).str('meta').op(0x5d).op(0x71).op(0).op(0x68).op(0).op(0x61).op(0x73)
      .str('self').op(0x68).op(9).op(0x73);
  });
  const bytes = rezip('bare_tensor.pt', { 'bare_tensor/data.pkl': pickle });
  assert.throws(() => readTorchFile(bytes), /contain themselves|cycle/);
  const listOnly = buildPickle((p) => p.op(0x7d).str('meta').op(0x5d).op(0x71).op(0).op(0x68).op(0).op(0x61).op(0x73));
  assert.deepEqual(readTorchFile(rezip('bare_tensor.pt', { 'bare_tensor/data.pkl': listOnly })).metadata, { meta: '["<cycle>"]' });
});

test('readActivationFile picks the format by content and names a .npy tensor after its file', () => {
  const t: RawTensor = { dtype: 'F32', shape: [2], data: new Uint8Array(new Float32Array([1, 2]).buffer) };
  assert.equal(readActivationFile(fixture('bare_tensor.pt'), 'whatever.bin').format, 'pt');
  const npy = readActivationFile(serializeNpy(t), '/data/blocks.3.npy');
  assert.equal(npy.format, 'npy');
  assert.deepEqual(Object.keys(npy.tensors), ['blocks.3']);
  const st = readActivationFile(new Uint8Array(Buffer.concat(serializeSafetensors({ x: t }, { k: 'v' }))), 'a.safetensors');
  assert.equal(st.format, 'safetensors');
  assert.deepEqual(st.metadata, { k: 'v' });
  assert.throws(() => readActivationFile(fixture('legacy.pt'), 'legacy.pt'), /legacy/);
});

test('memo references cannot multiply a small pickle into huge metadata or repeated dicts', () => {
  // One 1000-character string in a list, referenced from 500 keys: ~4 KB of pickle, ~500 KB of JSON.
  const amplified = buildPickle((p) => {
    p.op(0x7d).str('first').op(0x5d).op(0x71).op(1).str('x'.repeat(1000)).op(0x61).op(0x73);
    for (let i = 0; i < 500; i++) p.str(`k${i}`).op(0x68).op(1).op(0x73);
  });
  assert.throws(() => readTorchFile(rezip('bare_tensor.pt', { 'bare_tensor/data.pkl': amplified })), /metadata values would take far more characters/);
  // One dict of tensors-dicts referenced twice is refused rather than walked twice.
  const repeated = buildPickle((p) => {
    p.op(0x7d).str('a').op(0x7d).op(0x71).op(0).str('inner').op(0x7d).op(0x73).op(0x73).str('b').op(0x68).op(0).op(0x73);
  });
  assert.throws(() => readTorchFile(rezip('bare_tensor.pt', { 'bare_tensor/data.pkl': repeated })), /repeat/);
});
