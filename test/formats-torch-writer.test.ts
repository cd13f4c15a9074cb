import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../src/errors.js';
import { fromFloat32, toFloat32, type DType, type RawTensor } from '../src/formats/dtypes.js';
import { openTorchFile, readTorchFile } from '../src/formats/torch.js';
import { encodeTorchFile, torchShardValue, writeTorchFile } from '../src/formats/torch-writer.js';
import { tempDir } from './helpers.js';

const PYTHON = '/usr/bin/python3';
const probe = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
const TORCH = probe.status === 0 ? probe.stdout.trim() : null;
const noTorch = TORCH === null && `PyTorch is not importable by ${PYTHON} (apt-get install python3-torch): ${(probe.stderr || String(probe.error ?? '')).trim().split('\n').pop()}`;

/** torch.load in a real Python; the script prints JSON (non-finite floats as 'nan', 'inf', '-inf'). */
function python(script: string, ...args: string[]): unknown {
  const prelude = `
import json, math, sys, torch
def f(v):
    if isinstance(v, float) and not math.isfinite(v): return str(v)
    if isinstance(v, (list, tuple)): return [f(x) for x in v]
    if isinstance(v, dict): return {str(k): f(x) for k, x in v.items()}
    return v
def describe(t): return {'dtype': str(t.dtype), 'shape': list(t.shape), 'values': f(t.float().flatten().tolist() if t.dtype in (torch.float16, torch.bfloat16) else t.flatten().tolist())}
`;
  const run = spawnSync(PYTHON, ['-c', prelude + script, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout);
}

const back = (v: unknown): unknown => (v === 'nan' ? NaN : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : Array.isArray(v) ? v.map(back) : v);

const acts = Float32Array.from([0.5, -1.25, NaN, Infinity, -Infinity, -0, 3e38, 1e-40, 7, 8, 9, 10]);
const seq = Float32Array.from({ length: 24 }, (_, i) => i / 8 - 1);
const shard = () => torchShardValue({
  global_step: 600,
  shard_id: 3,
  activations: { 'encoder.layer0': fromFloat32(acts, [4, 3]), 'mamba_backbone.blocks.3': fromFloat32(seq, [2, 3, 4]) },
  metadata: { global_step: 600, epoch: 2, batch_idx: 17, 'encoder.layer0_shape': [4, 3], model: 'neurofmx', best: true, note: null, big: 2 ** 40, neg: -5, nested: { a: [1, 2] } },
});

test('torch.load(path, weights_only=True) returns the shard: global_step, shard_id, activations as float32 tensors, metadata', { skip: noTorch }, async () => {
  const dir = await tempDir();
  const path = join(dir, 'activations_shard_000003_step_600.pt');
  const result = await writeTorchFile(path, shard());
  assert.equal(result.bytes, (await readFile(path)).byteLength);
  assert.match(result.sha256 ?? '', /^[0-9a-f]{64}$/);
  const got = python(`
d = torch.load(sys.argv[1], weights_only=True)
print(json.dumps({'keys': list(d.keys()), 'types': [type(d['global_step']).__name__, type(d['shard_id']).__name__],
  'global_step': d['global_step'], 'shard_id': d['shard_id'], 'metadata': f(d['metadata']),
  'activations': {k: describe(v) for k, v in d['activations'].items()},
  'contiguous': all(v.is_contiguous() for v in d['activations'].values())}))
`, path) as Record<string, unknown>;
  assert.deepEqual(got.keys, ['global_step', 'shard_id', 'activations', 'metadata']);
  assert.deepEqual(got.types, ['int', 'int']);
  assert.equal(got.global_step, 600);
  assert.equal(got.shard_id, 3);
  assert.deepEqual(got.metadata, { global_step: 600, epoch: 2, batch_idx: 17, 'encoder.layer0_shape': [4, 3], model: 'neurofmx', best: true, note: null, big: 2 ** 40, neg: -5, nested: { a: [1, 2] } });
  const a = got.activations as Record<string, { dtype: string; shape: number[]; values: unknown[] }>;
  assert.deepEqual(Object.keys(a), ['encoder.layer0', 'mamba_backbone.blocks.3']);
  assert.equal(a['encoder.layer0']!.dtype, 'torch.float32');
  assert.deepEqual(a['encoder.layer0']!.shape, [4, 3]);
  assert.deepEqual(back(a['encoder.layer0']!.values), Array.from(acts));
  assert.deepEqual(a['mamba_backbone.blocks.3']!.shape, [2, 3, 4]);
  assert.deepEqual(a['mamba_backbone.blocks.3']!.values, Array.from(seq));
  assert.equal(got.contiguous, true);
});

test('the guide\'s habit works too: data = torch.load(path); data.keys(), with float metadata (NaN included)', { skip: noTorch }, async () => {
  const dir = await tempDir();
  const path = join(dir, 'activations_shard_000000_step_0.pt');
  await writeTorchFile(path, { global_step: 0, shard_id: 0, activations: { x: fromFloat32(Float32Array.from([1, 2]), [1, 2]) }, metadata: { lr: 0.001, loss: NaN, best: -Infinity, history: [0.5, NaN] } });
  const got = python(`
data = torch.load(sys.argv[1])
print(json.dumps({'keys': list(data.keys()), 'metadata': f(data['metadata']), 'lr_type': type(data['metadata']['lr']).__name__}))
`, path) as { keys: string[]; metadata: Record<string, unknown>; lr_type: string };
  assert.deepEqual(got.keys, ['global_step', 'shard_id', 'activations', 'metadata']);
  assert.deepEqual(got.metadata, { lr: 0.001, loss: 'nan', best: '-inf', history: [0.5, 'nan'] });
  assert.equal(got.lr_type, 'float');
  // weights_only=True takes floats (BINFLOAT) from torch 2.0 on; torch 1.13 refuses them in its own files too.
  const parity = python(`
torch.save({'lr': 0.5}, sys.argv[2])
def load(p):
    try:
        return f(torch.load(p, weights_only=True)['metadata' if p == sys.argv[1] else 'lr'])
    except Exception as e:
        return 'refused'
print(json.dumps([load(sys.argv[1]), load(sys.argv[2])]))
`, path, join(dir, 'torch-made.pt')) as unknown[];
  if (parity[1] === 'refused') assert.equal(parity[0], 'refused', `torch ${TORCH} refuses floats under weights_only in its own files, and so in ours`);
  else assert.deepEqual(parity[0], { lr: 0.001, loss: 'nan', best: '-inf', history: [0.5, 'nan'] });
});

test('every torch dtype round-trips through torch.load, and our readers read the file back', { skip: noTorch }, async () => {
  const dir = await tempDir();
  const path = join(dir, 'dtypes.pt');
  const bytes = (dtype: DType, shape: number[], typed: ArrayBufferView): RawTensor => ({ dtype, shape, data: new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength) });
  const tensors: Record<string, RawTensor> = {
    f64: bytes('F64', [3], Float64Array.from([Math.PI, -1e300, NaN])),
    f16: bytes('F16', [2], Uint16Array.from([0x3c00, 0xfc00])), // 1, -inf
    bf16: bytes('BF16', [2], Uint16Array.from([0x3f80, 0x7fc0])), // 1, nan
    i64: bytes('I64', [2], BigInt64Array.from([-(2n ** 40n), 7n])),
    i32: bytes('I32', [2, 1], Int32Array.from([-5, 2 ** 30])),
    i16: bytes('I16', [1], Int16Array.from([-300])),
    i8: bytes('I8', [1], Int8Array.from([-128])),
    u8: bytes('U8', [2], Uint8Array.from([0, 255])),
    mask: bytes('BOOL', [3], Uint8Array.from([1, 0, 1])),
    scalar: fromFloat32(Float32Array.from([2.5]), []),
    empty: fromFloat32(new Float32Array(0), [0, 4]),
  };
  await writeTorchFile(path, tensors);
  const got = python('print(json.dumps({k: describe(v) for k, v in torch.load(sys.argv[1], weights_only=True).items()}))', path) as Record<string, { dtype: string; shape: number[]; values: unknown[] }>;
  const want: Record<string, [string, unknown[]]> = {
    f64: ['torch.float64', [Math.PI, -1e300, NaN]], f16: ['torch.float16', [1, -Infinity]], bf16: ['torch.bfloat16', [1, NaN]],
    i64: ['torch.int64', [-(2 ** 40), 7]], i32: ['torch.int32', [-5, 2 ** 30]], i16: ['torch.int16', [-300]], i8: ['torch.int8', [-128]],
    u8: ['torch.uint8', [0, 255]], mask: ['torch.bool', [true, false, true]], scalar: ['torch.float32', [2.5]], empty: ['torch.float32', []],
  };
  for (const [k, [dtype, values]] of Object.entries(want)) {
    assert.equal(got[k]!.dtype, dtype, k);
    assert.deepEqual(got[k]!.shape, tensors[k]!.shape, k);
    assert.deepEqual(back(got[k]!.values), values, k);
  }
  const ours = readTorchFile(await readFile(path));
  const streamed = await openTorchFile(path);
  try {
    for (const [k, t] of Object.entries(tensors)) {
      assert.equal(ours.tensors[k]!.dtype, t.dtype);
      assert.deepEqual(ours.tensors[k]!.shape, t.shape);
      assert.deepEqual(new Uint8Array(ours.tensors[k]!.data), new Uint8Array(t.data), k);
      assert.deepEqual(new Uint8Array((await streamed.readTensor(k)).data), new Uint8Array(t.data), k);
    }
  } finally {
    await streamed.close();
  }
});

test('ZIP64 on every entry, tensors generated as chunks (data descriptors), and encodeTorchFile: torch and zipfile read them all', { skip: noTorch }, async () => {
  const dir = await tempDir();
  const rows = Float32Array.from({ length: 3000 }, (_, i) => Math.sin(i));
  const chunked = {
    dtype: 'F32' as const,
    shape: [1000, 3],
    *chunks() {
      for (let r = 0; r < 1000; r += 64) yield new Uint8Array(rows.buffer, r * 12, Math.min(64, 1000 - r) * 12);
    },
  };
  const files = {
    zip64: join(dir, 'zip64.pt'),
    chunks: join(dir, 'chunks.pt'),
    encoded: join(dir, 'encoded.pt'),
    written: join(dir, 'written.pt'),
  };
  await writeTorchFile(files.zip64, shard(), { zip64: 'always' });
  await writeTorchFile(files.chunks, { global_step: 1, shard_id: 0, activations: { layer: chunked }, metadata: {} });
  const encoded = Buffer.concat(encodeTorchFile(shard()));
  await writeFile(files.encoded, encoded);
  await writeTorchFile(files.written, shard());
  assert.ok(encoded.equals(await readFile(files.written)), 'encodeTorchFile and writeTorchFile write the same bytes');

  const got = python(`
import zipfile
out = {}
for p in sys.argv[1:]:
    z = zipfile.ZipFile(p)
    bad = z.testzip()
    names = z.namelist()
    offsets = [i.header_offset + len(i.FileHeader()) for i in z.infolist()]
    d = torch.load(p, weights_only=True)
    out[p] = {'crc_ok': bad is None, 'names': names, 'keys': list(d['activations'].keys()),
              'sum': float(sum(v.double().nan_to_num(0, 0, 0).sum() for v in d['activations'].values())),
              'first': f(next(iter(d['activations'].values())).flatten()[:3].tolist())}
print(json.dumps(out))
`, ...Object.values(files)) as Record<string, { crc_ok: boolean; names: string[]; keys: string[]; sum: number; first: unknown[] }>;
  for (const p of Object.values(files)) assert.equal(got[p]!.crc_ok, true, p);
  assert.deepEqual(got[files.zip64]!.names, ['archive/data.pkl', 'archive/byteorder', 'archive/data/0', 'archive/data/1', 'archive/version']);
  assert.deepEqual(got[files.zip64]!.keys, ['encoder.layer0', 'mamba_backbone.blocks.3']);
  assert.deepEqual(back(got[files.zip64]!.first), [0.5, -1.25, NaN]);
  const expectedSum = rows.reduce((a, v) => a + v, 0);
  assert.ok(Math.abs(got[files.chunks]!.sum - expectedSum) < 1e-3);
  // Our readers, both ways, on the ZIP64 and chunked files.
  for (const p of [files.zip64, files.chunks]) {
    const mem = readTorchFile(await readFile(p));
    const file = await openTorchFile(p);
    try {
      for (const name of file.tensorNames()) assert.deepEqual(toFloat32(await file.readTensor(name)), toFloat32(mem.tensors[name]!));
    } finally {
      await file.close();
    }
  }
  assert.deepEqual(toFloat32(readTorchFile(await readFile(files.chunks)).tensors.layer!), rows);
});

test('data is 64-byte aligned in the zip, as torch aligns it', async () => {
  const chunks = encodeTorchFile(shard());
  const bytes = Buffer.concat(chunks);
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  // Walk the local headers: every entry's data starts at a multiple of 64.
  let at = 0;
  let entries = 0;
  while (view.getUint32(at, true) === 0x04034b50) {
    const start = at + 30 + view.getUint16(at + 26, true) + view.getUint16(at + 28, true);
    assert.equal(start % 64, 0);
    at = start + view.getUint32(at + 18, true);
    entries++;
  }
  assert.equal(entries, 5);
});

test('bad tensors are refused before a file is left behind', async () => {
  const dir = await tempDir();
  const path = join(dir, 'bad.pt');
  await assert.rejects(writeTorchFile(path, { x: { dtype: 'U16', shape: [1], data: new Uint8Array(2) } }), /dtype U16 has no torch storage type/);
  await assert.rejects(writeTorchFile(path, { x: { dtype: 'F32', shape: [2], data: new Uint8Array(4) } }), /needs 8 bytes but has 4/);
  const short = { dtype: 'F32' as const, shape: [4], *chunks() { yield new Uint8Array(8); } };
  await assert.rejects(writeTorchFile(path, { x: short }), (e: unknown) => e instanceof FormatError && /needs 16 bytes but its chunks gave 8/.test(e.message));
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  await assert.rejects(writeTorchFile(path, cyclic as never), /contains itself/);
  assert.equal(existsSync(path), false);
  assert.deepEqual(await readdir(dir), []);
});

test('NaN and ±Inf read faithfully from a PyTorch-made file: in tensors, and metadata floats as numbers', async () => {
  const path = new URL('./fixtures/torch/nonfinite.pt', import.meta.url).pathname;
  const mem = readTorchFile(await readFile(path));
  const values = Array.from(toFloat32(mem.tensors.layer!));
  assert.deepEqual(values, [NaN, Infinity, -Infinity, -0, 1.5, NaN]);
  assert.ok(Object.is(values[3], -0));
  assert.deepEqual(mem.metadata, { global_step: '7', shard_id: '2', loss: 'NaN', best: 'Infinity', worst: '-Infinity', lr: '0.25', history: '[1,NaN]', epoch: '3' });
  const v = mem.metadataValues;
  assert.ok(typeof v.loss === 'number' && Number.isNaN(v.loss), 'loss is the number NaN');
  assert.equal(v.best, Infinity);
  assert.equal(v.worst, -Infinity);
  assert.equal(v.lr, 0.25);
  assert.deepEqual(v.history, [1, NaN]);
  assert.equal(v.epoch, 3);
  const file = await openTorchFile(path);
  try {
    assert.deepEqual(file.metadataValues, v);
    assert.deepEqual(Array.from(toFloat32(await file.readRows('layer', 1, 3))), [-Infinity, -0, 1.5, NaN]);
  } finally {
    await file.close();
  }
});

const big = process.env.MECHINT_TEST_BIG_TORCH === '1';

test('real PyTorch and 2.2 GB files, both ways (MECHINT_TEST_BIG_TORCH=1)', { skip: noTorch || (!big && 'set MECHINT_TEST_BIG_TORCH=1 (writes 2.2 GB with torch.save, loads 2.2 GB in torch)'), timeout: 600_000 }, async () => {
  const dir = await tempDir('mechint-bigtorch-');
  const N = 540_160; // a whole number of 1 MiB chunks
  const D = 1024; // 2.21 GB of float32
  const torchMade = join(dir, 'torch_made.pt');
  python(`
t = torch.zeros(${N}, ${D})
t[-2:] = torch.arange(2 * ${D}, dtype=torch.float32).reshape(2, ${D})
t[0, 0] = float('nan')
torch.save({'global_step': 5, 'shard_id': 1, 'activations': {'layer': t}, 'metadata': {'epoch': 1}}, sys.argv[1])
print(json.dumps(True))
`, torchMade);
  const before = process.memoryUsage().rss;
  const file = await openTorchFile(torchMade);
  try {
    assert.deepEqual(file.tensorInfo('layer').shape, [N, D]);
    const tail = toFloat32(await file.readTensor('layer', { start: N - 2, end: N }));
    assert.deepEqual(Array.from(tail.subarray(0, 3)), [0, 1, 2]);
    assert.equal(tail[2 * D - 1], 2 * D - 1);
    assert.ok(Number.isNaN(toFloat32(await file.readRows('layer', 0, 1))[0]));
  } finally {
    await file.close();
  }
  const grew = process.memoryUsage().rss - before;
  assert.ok(grew < 64 << 20, `rss grew ${(grew / 2 ** 20).toFixed(1)} MiB reading a 2.2 GB torch-made file`);
  console.log(`# torch-made 2.2 GB .pt: open + tail reads grew rss by ${(grew / 2 ** 20).toFixed(1)} MiB`);

  const ours = join(dir, 'ours.pt');
  const zeros = new Uint8Array(1 << 20);
  const rowsPerChunk = (1 << 20) / (4 * D);
  const tailRows = Float32Array.from({ length: rowsPerChunk * D }, (_, i) => i);
  await writeTorchFile(ours, {
    global_step: 9, shard_id: 2, metadata: { epoch: 3 },
    activations: { layer: { dtype: 'F32', shape: [N, D], *chunks() { for (let r = 0; r < N; r += rowsPerChunk) yield r + rowsPerChunk >= N ? new Uint8Array(tailRows.buffer) : zeros; } } },
  }, { sparse: true, sha256: false });
  const got = python(`
d = torch.load(sys.argv[1], weights_only=True)
t = d['activations']['layer']
print(json.dumps({'shape': list(t.shape), 'last': t[-1, -1].item(), 'zero': t[0].abs().sum().item(), 'step': d['global_step']}))
`, ours) as { shape: number[]; last: number; zero: number; step: number };
  assert.deepEqual(got, { shape: [N, D], last: rowsPerChunk * D - 1, zero: 0, step: 9 });
});
