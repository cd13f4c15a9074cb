import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSafetensors, serializeSafetensors } from '../src/formats/safetensors.js';
import { fromFloat32, toFloat32 } from '../src/formats/dtypes.js';
import { FormatError, LimitError } from '../src/errors.js';

function concat(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks));
}

test('a safetensors file round-trips tensors and metadata, with the header padded to 8 bytes', () => {
  const a = Float32Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
  const b = Float32Array.from({ length: 6 }, (_, i) => -i);
  const bytes = concat(serializeSafetensors({ 'blocks.3': fromFloat32(a, [2, 3, 4]), popt: fromFloat32(b, [6, 1]) }, { global_step: '200' }));
  const n = Number(Buffer.from(bytes).readBigUInt64LE(0));
  assert.equal(n % 8, 0);
  const { header, tensors } = parseSafetensors(bytes);
  assert.deepEqual(header.metadata, { global_step: '200' });
  assert.deepEqual(tensors['blocks.3']!.shape, [2, 3, 4]);
  assert.deepEqual(Array.from(toFloat32(tensors['blocks.3']!)), Array.from(a));
  assert.deepEqual(Array.from(toFloat32(tensors.popt!)), Array.from(b));
  assert.deepEqual(header.tensors.popt, { dtype: 'F32', shape: [6, 1], begin: 96, end: 120 });
});

test('rejects a header that claims more bytes than the file holds, before allocating', () => {
  const bytes = concat(serializeSafetensors({ x: fromFloat32(new Float32Array(4), [4]) }));
  Buffer.from(bytes.buffer).writeBigUInt64LE(1_000_000n, 0);
  assert.throws(() => parseSafetensors(bytes), FormatError);
  Buffer.from(bytes.buffer).writeBigUInt64LE(10n ** 12n, 0);
  assert.throws(() => parseSafetensors(bytes), LimitError);
});

test('rejects tensors that leave a hole or overlap in the data buffer', () => {
  const header = JSON.stringify({ x: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }).padEnd(48, ' ');
  const bytes = new Uint8Array(8 + header.length + 8);
  Buffer.from(bytes.buffer).writeBigUInt64LE(BigInt(header.length), 0);
  Buffer.from(bytes.buffer).write(header, 8);
  assert.throws(() => parseSafetensors(bytes), /hole/);
});

/** A safetensors file with a hand-written header. */
function withHeader(header: string, dataBytes = 0): Uint8Array {
  const json = Buffer.from(header, 'utf8');
  const bytes = new Uint8Array(8 + json.length + dataBytes);
  Buffer.from(bytes.buffer).writeBigUInt64LE(BigInt(json.length), 0);
  bytes.set(json, 8);
  return bytes;
}

test('rejects headers nested deeper than a safetensors header, before parsing them', () => {
  assert.throws(() => parseSafetensors(withHeader('{"x":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}'), 'deep.safetensors'), /deep\.safetensors: header nests deeper/);
  // Brackets inside strings do not count.
  const ok = withHeader(JSON.stringify({ __metadata__: { note: '[[[[{{{{' }, x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }), 4);
  assert.deepEqual(parseSafetensors(ok).header.metadata, { note: '[[[[{{{{' });
});

test('rejects absurd shapes, offsets past the buffer and overlapping tensors', () => {
  const cases: [object, RegExp][] = [
    [{ x: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 4] } }, /needs .* bytes but data_offsets span 4/],
    [{ x: { dtype: 'F32', shape: [1], data_offsets: [0, 2 ** 60] } }, /invalid data_offsets/],
    [{ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, /cover 8 bytes but the data buffer holds 4/],
    [{ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, y: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, /overlap/],
    [{ x: { dtype: 'F8_E4M3', shape: [4], data_offsets: [0, 4] } }, /unknown dtype "F8_E4M3"/],
    [{ x: [1, 2] }, /is not an object/],
    [{ __metadata__: { n: 1 } }, /__metadata__\.n is not a string/],
  ];
  for (const [header, message] of cases) assert.throws(() => parseSafetensors(withHeader(JSON.stringify(header), 4)), message);
});

test('a tensor named __proto__ is stored as a tensor, not as the prototype', () => {
  const bytes = withHeader('{"__proto__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4);
  const { tensors } = parseSafetensors(bytes);
  assert.ok(Object.hasOwn(tensors, '__proto__'));
  assert.equal(Object.getPrototypeOf(tensors), Object.prototype);
  assert.deepEqual(Object.keys(tensors), ['__proto__']);
});

test('large files written atomically hash off the main thread and stay byte-exact, Buffer chunks included', async () => {
  const { writeFileAtomic } = await import('../src/storage/atomic.js');
  const { createHash } = await import('node:crypto');
  const { mkdtemp, readFile, rm } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(join(tmpdir(), 'mechint-atomic-'));
  try {
    const big = Float32Array.from({ length: 600_000 }, (_, i) => Math.sin(i));
    const chunks = serializeSafetensors({ x: fromFloat32(big, [600_000]) }, { note: 'pooled Buffer header' });
    const before = Buffer.concat(chunks);
    const { sha256, bytes } = await writeFileAtomic(join(dir, 'big.safetensors'), chunks);
    const onDisk = await readFile(join(dir, 'big.safetensors'));
    assert.equal(bytes, before.length);
    assert.ok(onDisk.equals(before), 'file equals what was given');
    assert.equal(sha256, createHash('sha256').update(before).digest('hex'));
    assert.ok(Buffer.concat(chunks).equals(before), 'the caller\'s chunks are untouched');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
