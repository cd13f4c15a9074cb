import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNpy, serializeNpy } from '../src/formats/npy.js';
import { toFloat32, type RawTensor } from '../src/formats/dtypes.js';
import { FormatError, LimitError } from '../src/errors.js';

/** Values at full precision: F64 and I64 read directly, the rest are exact in float32. */
function valuesOf(t: RawTensor): number[] {
  const v = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  if (t.dtype === 'F64') return Array.from({ length: t.data.byteLength / 8 }, (_, i) => v.getFloat64(i * 8, true));
  if (t.dtype === 'I64') return Array.from({ length: t.data.byteLength / 8 }, (_, i) => Number(v.getBigInt64(i * 8, true)));
  return Array.from(toFloat32(t));
}

const DIR = new URL('./fixtures/torch/', import.meta.url);
const fixture = (name: string): Uint8Array => new Uint8Array(readFileSync(new URL(name, DIR)));
const expected = JSON.parse(readFileSync(new URL('expected.json', DIR), 'utf8')) as {
  npy: Record<string, { dtype: string; shape: number[]; values: number[]; order: string; version: number[] }>;
};

for (const [name, want] of Object.entries(expected.npy)) {
  test(`reads ${name} (v${want.version.join('.')}, ${want.order} order, ${want.dtype}) as NumPy wrote it`, () => {
    const t = parseNpy(fixture(name), name);
    assert.equal(t.dtype, want.dtype);
    assert.deepEqual(t.shape, want.shape);
    assert.deepEqual(valuesOf(t), want.values);
  });
}

/** A .npy file with a hand-written header (v1). */
function npy(header: string, data = new Uint8Array(0), version = 1): Uint8Array {
  const text = Buffer.from(header, version === 3 ? 'utf8' : 'latin1');
  const pre = version === 1 ? 10 : 12;
  const out = new Uint8Array(pre + text.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, text.length, true);
  else view.setUint32(8, text.length, true);
  out.set(text, pre);
  out.set(data, pre + text.length);
  return out;
}

test('refuses big-endian, object, structured and unknown dtypes with the descr in the message', () => {
  const cases: [string, RegExp][] = [
    ["{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", /'>f4' is big-endian/],
    ["{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", /'\|O' is not supported/],
    ["{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", /'<c8' is not supported/],
    ["{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", /not a string, bool or tuple/],
  ];
  for (const [header, message] of cases) assert.throws(() => parseNpy(npy(header, new Uint8Array(4)), 'x.npy'), message);
});

test('refuses headers and shapes that claim more than the file holds, before allocating', () => {
  const ok = serializeNpy({ dtype: 'F32', shape: [2, 2], data: new Uint8Array(16) });
  const view = new DataView(ok.buffer);
  view.setUint16(8, 0xffff, true);
  assert.throws(() => parseNpy(ok, 'x.npy'), /header claims 65535 bytes but the file holds/);
  assert.throws(() => parseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"), 'x.npy'), /needs 73786976294838\d+ bytes but the file holds 0/);
  assert.throws(() => parseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", new Uint8Array(8)), 'x.npy'), /needs 12 bytes but the file holds 8/);
  const big = npy('{}', new Uint8Array(0), 2);
  new DataView(big.buffer).setUint32(8, 1 << 30, true);
  assert.throws(() => parseNpy(big, 'x.npy'), LimitError);
  assert.throws(() => parseNpy(npy(`{'descr': '<f4', 'fortran_order': False, 'shape': (${Array(40).fill(1).join(',')}), }`, new Uint8Array(4)), 'x.npy'), LimitError);
  assert.throws(() => parseNpy(new Uint8Array([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1]), 'x.npy'), /too short/);
  assert.throws(() => parseNpy(npy("{'descr': '<f4', 'shape': (1,), }", new Uint8Array(4)), 'x.npy'), /must hold exactly/);
  assert.throws(() => parseNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } import os", new Uint8Array(4)), 'x.npy'), FormatError);
});

test('writes .npy files that read back, padded so the data is 64-byte aligned', () => {
  const t: RawTensor = { dtype: 'I16', shape: [3], data: new Uint8Array(new Int16Array([-1, 2, 300]).buffer) };
  const bytes = serializeNpy(t);
  assert.equal((bytes.length - 6) % 64, 0);
  assert.deepEqual(valuesOf(parseNpy(bytes)), [-1, 2, 300]);
  assert.throws(() => serializeNpy({ dtype: 'BF16', shape: [1], data: new Uint8Array(2) }), /BF16 cannot be written as \.npy/);
});

test('NumPy reads the .npy files mechint writes', { skip: !existsSync('/usr/bin/python3') }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mechint-npy-'));
  try {
    const file = join(dir, 'a.npy');
    writeFileSync(file, serializeNpy({ dtype: 'F32', shape: [2, 3], data: new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6.5]).buffer) }));
    const run = spawnSync('/usr/bin/python3', ['-c', `import numpy as np; a = np.load(${JSON.stringify(file)}); print(a.dtype, a.shape, a.tolist())`], { encoding: 'utf8' });
    if (run.status !== 0 && /No module named/.test(run.stderr)) return t.skip('numpy is not installed');
    assert.equal(run.stdout.trim(), 'float32 (2, 3) [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
