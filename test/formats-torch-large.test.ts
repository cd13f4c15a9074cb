import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { unzipSync, zipSync } from 'fflate';
import { FormatError } from '../src/errors.js';
import { fromFloat32, toFloat32, type RawTensor } from '../src/formats/dtypes.js';
import { openActivationFile } from '../src/formats/open-any.js';
import { openTorchFile, readTorchFile } from '../src/formats/torch.js';
import { writeTorchFile } from '../src/formats/torch-writer.js';
import { ShardReader } from '../src/storage/shard-reader.js';
import { tempDir } from './helpers.js';

const FIXTURES = new URL('./fixtures/torch/', import.meta.url);
const fixturePath = (name: string): string => new URL(name, FIXTURES).pathname;
const expected = JSON.parse(readFileSync(new URL('expected.json', FIXTURES), 'utf8')) as {
  pt: Record<string, { tensors: Record<string, { dtype: string; shape: number[]; values: number[] }>; metadata: Record<string, string> }>;
};

const MiB = 1 << 20;
const GiB = 1 << 30;

/** Full-precision values of F32/F64/I* tensors, as the fixtures list them. */
function valuesOf(t: RawTensor): number[] {
  if (t.dtype === 'F64') return Array.from(new Float64Array(t.data.slice().buffer));
  if (t.dtype === 'I64') return Array.from(new BigInt64Array(t.data.slice().buffer), Number);
  return Array.from(toFloat32(t));
}

test('openTorchFile reads every PyTorch-made fixture as readTorchFile does, whole and by row ranges', async () => {
  for (const [name, want] of Object.entries(expected.pt)) {
    const file = await openTorchFile(fixturePath(name));
    try {
      assert.deepEqual(file.tensorNames().sort(), Object.keys(want.tensors).sort(), name);
      assert.deepEqual(file.metadata, want.metadata, name);
      for (const [key, w] of Object.entries(want.tensors)) {
        assert.deepEqual(file.tensorInfo(key).shape, w.shape, `${name} ${key}`);
        const whole = await file.readTensor(key);
        assert.equal(whole.dtype, w.dtype);
        if (['F32', 'F64', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'].includes(w.dtype)) assert.deepEqual(valuesOf(whole), w.values, `${name} ${key}`);
        else assert.deepEqual(new Uint8Array(whole.data), new Uint8Array(readTorchFile(readFileSync(fixturePath(name))).tensors[key]!.data));
        if (w.shape.length >= 1 && w.shape[0]! >= 2) {
          // Rows 1..end of dim 0, and the last row seen as rows of the last dimension.
          const inner = w.shape.slice(1).reduce((a, d) => a * d, 1);
          const tail = await file.readTensor(key, { start: 1, end: w.shape[0]! });
          assert.deepEqual(tail.shape, [w.shape[0]! - 1, ...w.shape.slice(1)]);
          if (w.dtype === 'F32') assert.deepEqual(valuesOf(tail), w.values.slice(inner));
          const dim = w.shape.length === 1 ? 1 : w.shape.at(-1)!;
          const rows = w.values.length / dim;
          const last = await file.readRows(key, rows - 1, rows);
          assert.deepEqual(last.shape, [1, dim]);
          if (w.dtype === 'F32') assert.deepEqual(valuesOf(last), w.values.slice(-dim));
        }
      }
    } finally {
      await file.close();
    }
  }
});

test('a storage whose bytes were changed fails its CRC-32 check once it has been read through', async () => {
  const dir = await tempDir();
  const bytes = new Uint8Array(readFileSync(fixturePath('activations_shard_000000_step_0.pt')));
  const entries = unzipSync(bytes);
  const key = Object.keys(entries).find((k) => k.endsWith('/data/1'))!;
  const stored = zipSync(Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, [v, { level: 0 }]])));
  // Flip one byte inside data/1 (found by its contents), keeping the directory's CRC.
  const at = Buffer.from(stored).indexOf(Buffer.from(entries[key]!.subarray(0, 16)));
  stored[at + 5]! ^= 0xff;
  const path = join(dir, 'corrupt.pt');
  await writeFile(path, stored);
  const file = await openTorchFile(path);
  try {
    const layer = 'mamba_backbone.blocks.1';
    await file.readTensor(layer, { start: 0, end: 1 }); // a partial read cannot be checked yet
    await assert.rejects(file.readTensor(layer, { start: 1, end: 2 }), /fails its CRC-32 check/);
  } finally {
    await file.close();
  }
  await assert.rejects(openTorchFile(path, { verifyCrc: true }).then(async (f) => { try { await f.readTensor('mamba_backbone.blocks.1'); } finally { await f.close(); } }), FormatError);
});

test('deflated entries read by range from disk, and openActivationFile picks each format by content', async () => {
  const dir = await tempDir();
  const entries = unzipSync(new Uint8Array(readFileSync(fixturePath('ints.pt'))));
  const path = join(dir, 'deflated.bin');
  await writeFile(path, zipSync(Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, [v, { level: 6 }]]))));
  const file = await openActivationFile(path);
  try {
    assert.equal(file.format, 'pt');
    const i64 = expected.pt['ints.pt']!.tensors.i64!;
    assert.deepEqual(valuesOf(await file.readTensor('i64')), i64.values);
    assert.deepEqual(valuesOf(await file.readTensor('i64', { start: 2, end: 3 })), i64.values.slice(8));
  } finally {
    await file.close();
  }
  const npy = await openActivationFile(fixturePath('fortran_f8.npy'));
  try {
    assert.equal(npy.format, 'npy');
    assert.deepEqual(npy.tensorNames(), ['fortran_f8']);
    const want = (JSON.parse(readFileSync(new URL('expected.json', FIXTURES), 'utf8')) as { npy: Record<string, { values: number[] }> }).npy['fortran_f8.npy']!.values;
    assert.deepEqual(valuesOf(await npy.readTensor('fortran_f8', { start: 1, end: 3 })), want.slice(4));
  } finally {
    await npy.close();
  }
});

/**
 * A .pt past 4 GiB (so past both the 2 GiB whole-file read limit and zip's 32-bit fields): one
 * 4.3 GB float32 layer whose first and last MiB hold a pattern and whose middle is a hole of a
 * sparse file, then a small layer whose entry starts past 4 GiB (a ZIP64 offset).
 */
const D = 1024;
const N = 1_050_112; // × 4 KiB rows = 4.30 GB, a whole number of MiB
const ROWS_PER_MIB = MiB / (4 * D);
const pattern = (row: number, col: number): number => row * 0.5 + col / 1024;

function* bigLayerChunks(): Generator<Uint8Array> {
  const zeros = new Uint8Array(MiB);
  const total = (N * D * 4) / MiB;
  for (let c = 0; c < total; c++) {
    if (c === 0 || c === total - 1) {
      const block = new Float32Array(MiB / 4);
      for (let r = 0; r < ROWS_PER_MIB; r++) for (let k = 0; k < D; k++) block[r * D + k] = pattern(c * ROWS_PER_MIB + r, k);
      yield new Uint8Array(block.buffer);
    } else {
      yield zeros;
    }
  }
}

function memory(): { rss: number; arrayBuffers: number } {
  const m = process.memoryUsage();
  return { rss: m.rss, arrayBuffers: m.arrayBuffers };
}

// Made at the top level, so it is removed after the file's tests, not after the first that uses it.
const bigDir = await tempDir('mechint-bigpt-');
let big: Promise<{ dir: string; path: string; writeMs: number }> | undefined;

/** The 4.3 GB file, written once (sparse, about 4 s) for the tests that need it. */
function bigFile(): Promise<{ dir: string; path: string; writeMs: number }> {
  big ??= (async () => {
    assert.equal((N * D * 4) % MiB, 0);
    const dir = bigDir;
    const path = join(dir, 'activations_shard_000000_step_0.pt');
    const writeStart = Date.now();
    const small = fromFloat32(Float32Array.from({ length: 6 }, (_, i) => i - 2.5), [2, 3]);
    await writeTorchFile(path, {
      global_step: 0, shard_id: 0,
      activations: { big: { dtype: 'F32', shape: [N, D], chunks: bigLayerChunks }, after: small },
      metadata: { note: 'sparse' },
    }, { sparse: true, sha256: false });
    return { dir, path, writeMs: Date.now() - writeStart };
  })();
  return big;
}

test('a 4.3 GB .pt (ZIP64) opens and reads by rows with memory bounded by the rows read, not the file', { timeout: 240_000 }, async () => {
  const { path, writeMs } = await bigFile();
  const { size, blocks } = await stat(path);
  assert.ok(size > 4 * GiB, `the file is ${size} bytes`);
  assert.ok(blocks * 512 < 64 * MiB, `the file is sparse on disk (${blocks * 512} bytes allocated)`);
  // Today's whole-file path cannot even read it.
  await assert.rejects(readFile(path), /ERR_FS_FILE_TOO_LARGE|larger than 2 GiB|File size/);

  global.gc?.();
  const before = memory();
  const file = await openTorchFile(path);
  try {
    assert.deepEqual(file.tensorNames(), ['big', 'after']);
    assert.deepEqual(file.tensorInfo('big'), { dtype: 'F32', shape: [N, D], byteLength: N * D * 4 });
    assert.equal(file.metadata.note, 'sparse');
    const last = toFloat32(await file.readTensor('big', { start: N - 3, end: N }));
    for (let r = 0; r < 3; r++) for (const k of [0, 1, D - 1]) assert.equal(last[r * D + k], Math.fround(pattern(N - 3 + r, k)));
    const first = toFloat32(await file.readRows('big', 1, 2));
    assert.equal(first[5], Math.fround(pattern(1, 5)));
    const middle = toFloat32(await file.readRows('big', N / 2, N / 2 + 1));
    assert.ok(middle.every((v) => v === 0));
    // The entry after the 4.3 GB one starts past 4 GiB: its offset comes from a ZIP64 field.
    assert.deepEqual(Array.from(toFloat32(await file.readTensor('after'))), [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]);
    const after = memory();
    assert.ok(after.rss - before.rss < 64 * MiB, `rss grew by ${((after.rss - before.rss) / MiB).toFixed(1)} MiB`);
    assert.ok(after.arrayBuffers - before.arrayBuffers < 16 * MiB, `arrayBuffers grew by ${((after.arrayBuffers - before.arrayBuffers) / MiB).toFixed(1)} MiB`);

    console.log(`# 4.3 GB .pt: written (sparse) in ${writeMs} ms; open + reads of 3 rows, 2 rows and the small layer: rss +${((after.rss - before.rss) / MiB).toFixed(1)} MiB, arrayBuffers +${((after.arrayBuffers - before.arrayBuffers) / MiB).toFixed(2)} MiB`);
    if (process.env.MECHINT_TEST_BIG_SCAN === '1') await fullScan(file, before);
  } finally {
    await file.close();
  }
});

/**
 * One pass over all 4.3 GB in 32 MiB blocks (MECHINT_TEST_BIG_SCAN=1; about 20 s here): memory
 * stays at a few blocks, and the CRC-32 accumulated along the way must match the directory's
 * once the last block is read (a mismatch throws).
 */
async function fullScan(file: Awaited<ReturnType<typeof openTorchFile>>, before: { rss: number; arrayBuffers: number }): Promise<void> {
  const BLOCK_ROWS = 8192;
  let peakRss = 0;
  let peakBuffers = 0;
  let lastValue = NaN;
  const scanStart = Date.now();
  for (let row = 0; row < N; row += BLOCK_ROWS) {
    const block = await file.readRows('big', row, Math.min(N, row + BLOCK_ROWS));
    lastValue = toFloat32(block).at(-1)!;
    const m = memory();
    peakRss = Math.max(peakRss, m.rss - before.rss);
    peakBuffers = Math.max(peakBuffers, m.arrayBuffers - before.arrayBuffers);
  }
  assert.equal(lastValue, Math.fround(pattern(N - 1, D - 1)));
  const scanMs = Date.now() - scanStart;
  assert.ok(peakRss < 256 * MiB, `rss peaked ${(peakRss / MiB).toFixed(1)} MiB above the start while scanning 4.3 GB`);
  assert.ok(peakBuffers < 160 * MiB, `arrayBuffers peaked ${(peakBuffers / MiB).toFixed(1)} MiB above the start`);
  console.log(`# 4.3 GB .pt: full scan peak rss +${(peakRss / MiB).toFixed(1)} MiB, arrayBuffers +${(peakBuffers / MiB).toFixed(1)} MiB; scan ${scanMs} ms`);
}


test('ShardReader lists and streams a 4.3 GB .pt shard in blocks, without reading the file whole', { timeout: 240_000 }, async () => {
  const { dir } = await bigFile();
  const before = memory();
  const reader = await ShardReader.open(dir);
  const layer = reader.layer('big');
  assert.equal(layer.rows, N);
  assert.equal(layer.dim, D);
  assert.equal(reader.shards[0]!.format, 'pt');
  let blocks = 0;
  for await (const batch of reader.rows('big', { blockRows: 4096 })()) {
    assert.equal(batch.dim, D);
    if (blocks === 0) assert.equal(batch.rows[D + 5], Math.fround(pattern(1, 5)));
    if (++blocks === 3) break;
  }
  assert.equal(blocks, 3);
  const grew = memory().rss - before.rss;
  assert.ok(grew < 128 * MiB, `rss grew by ${(grew / MiB).toFixed(1)} MiB`);
});
