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
