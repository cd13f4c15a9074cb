/** The guide's "FastAPI Integration" examples, run with real curl against a listening server. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { serializeSafetensors } from '../src/formats/safetensors.js';
import { fromFloat32 } from '../src/formats/dtypes.js';
import { CacheIndex } from '../src/server/cache-index.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';
import { curl, getJson, hasCurl, plantCache, startServer } from './server-helpers.js';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'torch');
const expected = JSON.parse(await readFile(join(FIXTURES, 'expected.json'), 'utf8')) as { pt: Record<string, { tensors: Record<string, { shape: number[]; values: number[] }> }> };
const canCurl = await hasCurl();

const dir = await tempDir('mechint-server-guide-');
const cache = join(dir, 'mechint_cache');
const planted = await plantCache(cache);
const index = new CacheIndex(cache, { checkIntervalMs: 0 });
const { url } = await startServer({ cache: index });

test('curl /interpret/layers lists the cached layers with shape, rows, dtype, shards and steps', { skip: !canCurl && 'curl is not installed' }, async () => {
  const res = await curl([`${url}/interpret/layers`]);
  assert.equal(res.status, 200);
  const layers = res.json().layers as Record<string, unknown>[];
  assert.deepEqual(layers.map((l) => l.name).sort(), ['blocks.seq', 'layer1']);
  const l1 = layers.find((l) => l.name === 'layer1')!;
  assert.deepEqual(l1, { name: 'layer1', shape: [6], dim: 6, dtype: 'F32', rows: 100, samples: 50 * 2, shards: 2, steps: [0, 200] });
  const seq = layers.find((l) => l.name === 'blocks.seq')!;
  assert.deepEqual([seq.shape, seq.dim, seq.rows, seq.samples], [[3, 4], 4, 300, 100]);
});

test('curl POST /interpret runs the neuron analysis with the guide\'s body and answers the guide\'s response', { skip: !canCurl && 'curl is not installed' }, async () => {
  // The guide's example, body byte for byte, with our planted layer name.
  const body = `{
    "analysis_type": "neuron",
    "layer_name": "layer1",
    "config": {}
  }`;
  const res = await curl(['-X', 'POST', `${url}/interpret`, '-H', 'Content-Type: application/json', '-d', body]);
  assert.equal(res.status, 200, res.body);
  const out = res.json();
  // The guide's keys, and where the result came from.
  assert.deepEqual(Object.keys(out).sort(), ['analysis_type', 'layer_name', 'origin', 'results', 'timestamp']);
  assert.equal(out.origin, 'computed');
  assert.equal(out.analysis_type, 'neuron');
  assert.equal(out.layer_name, 'layer1');
  assert.ok(!Number.isNaN(Date.parse(out.timestamp as string)));
  const r = out.results as { mean_activation: number[]; dead_units: number[]; n_rows: number; n_units: number };
  assert.equal(r.n_rows, 100);
  assert.equal(r.n_units, 6);
  assert.deepEqual(r.dead_units, [4, 5]);
  let sum = 0;
  for (let i = 0; i < 100; i++) sum += planted.layer1[i * 6]!;
  assert.ok(Math.abs(r.mean_activation[0]! - sum / 100) < 1e-6);
});

test('curl -F file=@activations.pt -F analysis_type=feature analyses a .pt written by PyTorch', { skip: !canCurl && 'curl is not installed' }, async () => {
  const work = await tempDir('mechint-upload-');
  // The guide uploads `activations.pt`: the original system's shard layout, saved by torch.save.
  await copyFile(join(FIXTURES, 'activations_shard_000000_step_0.pt'), join(work, 'activations.pt'));
  const res = await curl(['-X', 'POST', `${url}/interpret/upload`, '-F', 'file=@activations.pt', '-F', 'analysis_type=feature'], work);
  assert.equal(res.status, 200, res.body);
  const out = res.json();
  assert.equal(out.analysis_type, 'feature');
  assert.equal(out.layer_name, null);
  const file = out.file as { format: string; tensors: { name: string; shape: number[] }[] };
  assert.equal(file.format, 'pt');
  const want = expected.pt['activations_shard_000000_step_0.pt']!.tensors;
  assert.deepEqual(Object.fromEntries(file.tensors.map((t) => [t.name, t.shape])), Object.fromEntries(Object.entries(want).map(([k, v]) => [k, v.shape])));
  const results = out.results as Record<string, { n_rows: number; n_units: number; explained_variance: number[] }>;
  assert.deepEqual(Object.keys(results).sort(), ['encoder.layer0', 'mamba_backbone.blocks.1']);
  assert.equal(results['encoder.layer0']!.n_rows, 4);
  assert.equal(results['mamba_backbone.blocks.1']!.n_rows, 6); // [2,3,4] → 6 rows of 4
  for (const r of Object.values(results)) assert.ok(Math.abs(r.explained_variance.reduce((a, b) => a + b, 0) - 1) < 1e-6);
});

test('an upload with layer_name analyses that tensor only, checked against PyTorch\'s values', async () => {
  const bytes = await readFile(join(FIXTURES, 'activations_shard_000000_step_0.pt'));
  const form = new FormData();
  form.append('file', new Blob([bytes]), 'activations.pt');
  form.append('analysis_type', 'neuron');
  form.append('layer_name', 'encoder.layer0');
  const res = await getJson(`${url}/interpret/upload`, { method: 'POST', body: form });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  const values = expected.pt['activations_shard_000000_step_0.pt']!.tensors['encoder.layer0']!.values;
  const r = res.json.results as { max_activation: number[]; n_rows: number };
  assert.equal(r.n_rows, 4);
  for (let u = 0; u < 3; u++) assert.ok(Math.abs(r.max_activation[u]! - Math.max(...[0, 1, 2, 3].map((i) => values[i * 3 + u]!))) < 1e-6);
});

test('safetensors and .npy uploads are read by content', async () => {
  const st = serializeSafetensors({ 'blocks.0': fromFloat32(seededMatrix(20, 5, 3), [20, 5]) }, {});
  const form = new FormData();
  form.append('file', new Blob(st as Uint8Array<ArrayBuffer>[]), 'whatever.bin');
  form.append('analysis_type', 'neuron');
  const a = await getJson(`${url}/interpret/upload`, { method: 'POST', body: form });
  assert.equal(a.status, 200, JSON.stringify(a.json));
  assert.equal((a.json.file as { format: string }).format, 'safetensors');
  assert.equal(((a.json.results as Record<string, { n_rows: number }>)['blocks.0'])!.n_rows, 20);

  const npy = await readFile(join(FIXTURES, 'c_f4.npy'));
  const form2 = new FormData();
  form2.append('file', new Blob([npy]), 'acts.npy');
  form2.append('analysis_type', 'neuron');
  form2.append('config', '{"dead_threshold": 0.5}');
  const b = await getJson(`${url}/interpret/upload`, { method: 'POST', body: form2 });
  assert.equal(b.status, 200, JSON.stringify(b.json));
  assert.equal((b.json.file as { format: string }).format, 'npy');
  assert.equal(((b.json.results as Record<string, { dead_threshold: number }>).acts)!.dead_threshold, 0.5);
});

test('the layer index is built once and rebuilt when the manifest changes', async () => {
  const first = await getJson(`${url}/interpret/layers`);
  const again = await getJson(`${url}/interpret/layers`);
  assert.equal(first.json.indexed_at, again.json.indexed_at, 'no change, no rebuild');
  await new Promise((r) => setTimeout(r, 5)); // distinct mtimes
  const writer = new ShardWriter({ dir: cache });
  await writer.write({ layers: { layer1: { shape: [10, 6], data: seededMatrix(10, 6, 99) } }, globalStep: 400 });
  await writer.finish();
  const after = await getJson(`${url}/interpret/layers`);
  assert.notEqual(after.json.indexed_at, first.json.indexed_at);
  const l1 = (after.json.layers as { name: string; rows: number; steps: number[] }[]).find((l) => l.name === 'layer1')!;
  assert.equal(l1.rows, 110);
  assert.deepEqual(l1.steps, [0, 200, 400]);
  assert.equal(after.json.total_shards, 3);
});

test('OpenAPI is served at /docs/json from the route schemas, with a UI at /docs', async () => {
  const doc = await getJson(`${url}/docs/json`);
  assert.equal(doc.status, 200);
  const paths = doc.json.paths as Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties: Record<string, { enum?: string[] }> } }> } }>>;
  for (const p of ['/interpret', '/interpret/upload', '/interpret/layers', '/interpret/jobs/{id}', '/health']) assert.ok(paths[p], `${p} documented`);
  const body = paths['/interpret']!.post!.requestBody!.content['application/json']!.schema;
  assert.ok(body.properties.analysis_type!.enum!.includes('neuron'));
  assert.ok(paths['/interpret/upload']!.post!.requestBody!.content['multipart/form-data']);
  const ui = await fetch(`${url}/docs`);
  assert.equal(ui.status, 200);
  assert.match(await ui.text(), /swagger-ui/i);
  const asset = await fetch(`${url}/docs/static/swagger-ui-bundle.js`);
  assert.equal(asset.status, 200);
  assert.ok((await asset.arrayBuffer()).byteLength > 100_000);
});
