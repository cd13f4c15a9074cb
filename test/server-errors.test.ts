/** Every bad input gets its status and stable code, in the `{ statusCode, code, error, message }` body. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { analysisNames } from '../src/analysis/registry.js';
import { tempDir } from './helpers.js';
import { curl, getJson, hasCurl, plantCache, postJson, startServer } from './server-helpers.js';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'torch');
const root = await tempDir('mechint-server-errors-');
const cache = join(root, 'cache');
await plantCache(cache, 20);
const uploadDir = join(root, 'a', 'b', 'uploads');
const { url } = await startServer({ cache, uploadDir, uploadLimit: 64 * 1024, bodyLimit: 16 * 1024 });
const canCurl = await hasCurl();

function assertError(res: { status: number; json: Record<string, unknown> }, status: number, code: string): string {
  assert.equal(res.status, status, JSON.stringify(res.json));
  assert.deepEqual(Object.keys(res.json).sort(), ['code', 'error', 'message', 'statusCode']);
  assert.equal(res.json.statusCode, status);
  assert.equal(res.json.code, code);
  assert.equal(typeof res.json.error, 'string');
  return res.json.message as string;
}

async function upload(parts: Record<string, string | { bytes: Uint8Array; name: string }>): Promise<{ status: number; json: Record<string, unknown> }> {
  const form = new FormData();
  for (const [k, v] of Object.entries(parts)) {
    if (typeof v === 'string') form.append(k, v);
    else form.append(k, new Blob([v.bytes as Uint8Array<ArrayBuffer>]), v.name);
  }
  return getJson(`${url}/interpret/upload`, { method: 'POST', body: form });
}

const ptBytes = await readFile(join(FIXTURES, 'activations_shard_000000_step_0.pt'));

test('an unknown analysis_type is 400 and the message lists the valid ones', async () => {
  const msg = assertError(await postJson(`${url}/interpret`, { analysis_type: 'telepathy', layer_name: 'layer1', config: {} }), 400, 'MECHINT_ERR_BAD_REQUEST');
  assert.match(msg, /analysis_type/);
  assert.match(msg, /telepathy/);
  for (const name of analysisNames()) assert.ok(msg.includes(name), `${name} listed in: ${msg}`);
  const up = assertError(await upload({ file: { bytes: ptBytes, name: 'a.pt' }, analysis_type: 'telepathy' }), 400, 'MECHINT_ERR_BAD_REQUEST');
  assert.match(up, /neuron/);
});

test('malformed bodies are 400: bad JSON, a missing field, an unknown field, a config that is not an object', async () => {
  const bad = await fetch(`${url}/interpret`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"analysis_type": "neuron",' });
  assertError({ status: bad.status, json: (await bad.json()) as Record<string, unknown> }, 400, 'MECHINT_ERR_BAD_REQUEST');
  assert.match(assertError(await postJson(`${url}/interpret`, { analysis_type: 'neuron' }), 400, 'MECHINT_ERR_BAD_REQUEST'), /layer_name/);
  assert.match(assertError(await postJson(`${url}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', confg: {} }), 400, 'MECHINT_ERR_BAD_REQUEST'), /confg/);
  assert.match(assertError(await postJson(`${url}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', config: 5 }), 400, 'MECHINT_ERR_BAD_REQUEST'), /config/);
  assert.match(assertError(await postJson(`${url}/interpret`, [1, 2]), 400, 'MECHINT_ERR_BAD_REQUEST'), /object/);
});

test('a bad analysis option is 400 with the option named', async () => {
  const msg = assertError(await postJson(`${url}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', config: { dead_threshold: 5 } }), 400, 'MECHINT_ERR_CONFIG');
  assert.match(msg, /dead_threshold/);
});

test('an unknown layer is 404 naming the known ones', async () => {
  const msg = assertError(await postJson(`${url}/interpret`, { analysis_type: 'neuron', layer_name: 'layer9', config: {} }), 404, 'MECHINT_ERR_LAYER_NOT_FOUND');
  assert.match(msg, /layer9/);
  assert.match(msg, /layer1/);
  assert.match(msg, /blocks\.seq/);
  const up = assertError(await upload({ file: { bytes: ptBytes, name: 'a.pt' }, analysis_type: 'neuron', layer_name: 'nope' }), 404, 'MECHINT_ERR_LAYER_NOT_FOUND');
  assert.match(up, /encoder\.layer0/);
});

test('an analysis that needs a model is 422 when the server has none', async () => {
  assertError(await postJson(`${url}/interpret`, { analysis_type: 'causal', layer_name: 'layer1' }), 422, 'MECHINT_ERR_MODEL_REQUIRED');
});

test('a wrong content type is 415', async () => {
  const res = await fetch(`${url}/interpret`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'neuron layer1' });
  assertError({ status: res.status, json: (await res.json()) as Record<string, unknown> }, 415, 'MECHINT_ERR_UNSUPPORTED_MEDIA');
  assertError(await postJson(`${url}/interpret/upload`, { analysis_type: 'neuron' }), 415, 'MECHINT_ERR_UNSUPPORTED_MEDIA');
});

test('a JSON body over the body limit is 413', async () => {
  assertError(await postJson(`${url}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', config: { pad: 'x'.repeat(20_000) } }), 413, 'MECHINT_ERR_UPLOAD_TOO_LARGE');
});

test('an upload over the size limit is 413 and leaves no file behind', async () => {
  const big = new Uint8Array(200 * 1024);
  big.set(ptBytes);
  assertError(await upload({ analysis_type: 'neuron', file: { bytes: big, name: 'big.pt' } }), 413, 'MECHINT_ERR_UPLOAD_TOO_LARGE');
  assert.deepEqual(await readdir(uploadDir), []);
});

test('an upload that is not an activation file (by its bytes, whatever its name) is 415', async () => {
  const msg = assertError(await upload({ file: { bytes: new TextEncoder().encode('{"not": "tensors"}'.padEnd(64)), name: 'activations.pt' }, analysis_type: 'neuron' }), 415, 'MECHINT_ERR_UNSUPPORTED_MEDIA');
  assert.match(msg, /safetensors/);
});

test('an upload that looks right but does not parse is 400', async () => {
  // safetensors magic (8-byte length, then '{') with a header that is not JSON.
  const bytes = new Uint8Array(64);
  new DataView(bytes.buffer).setBigUint64(0, 16n, true);
  bytes.set(new TextEncoder().encode('{oops not json }'), 8);
  assertError(await upload({ file: { bytes, name: 'x.safetensors' }, analysis_type: 'neuron' }), 400, 'MECHINT_ERR_FORMAT');
  // A zip that is not a torch.save archive.
  const zip = new Uint8Array(64);
  zip.set([0x50, 0x4b, 0x03, 0x04]);
  assertError(await upload({ file: { bytes: zip, name: 'x.pt' }, analysis_type: 'neuron' }), 400, 'MECHINT_ERR_FORMAT');
});

test('a .pt whose pickle would run code is refused (400) without running it', async () => {
  const expected = JSON.parse(await readFile(join(FIXTURES, 'expected.json'), 'utf8')) as { marker: string };
  await rm(expected.marker, { force: true });
  const hostile = await readFile(join(FIXTURES, 'hostile.pt'));
  assertError(await upload({ file: { bytes: hostile, name: 'hostile.pt' }, analysis_type: 'neuron' }), 400, 'MECHINT_ERR_UNSAFE_PICKLE');
  assert.equal(existsSync(expected.marker), false);
});

test('an upload without a file, or with a config that is not JSON, is 400', async () => {
  assert.match(assertError(await upload({ analysis_type: 'neuron' }), 400, 'MECHINT_ERR_BAD_REQUEST'), /file/);
  assert.match(assertError(await upload({ file: { bytes: ptBytes, name: 'a.pt' }, analysis_type: 'neuron', config: '{k: 4' }), 400, 'MECHINT_ERR_BAD_REQUEST'), /config/);
});

test('a path-traversal file name (../../etc/x.pt) writes nothing outside the upload area', { skip: !canCurl && 'curl is not installed' }, async () => {
  const before = await readdir(root, { recursive: true });
  const res = await curl(['-X', 'POST', `${url}/interpret/upload`, '-F', 'file=@activations_shard_000000_step_0.pt;filename=../../etc/x.pt', '-F', 'analysis_type=neuron', '-F', 'layer_name=encoder.layer0'], FIXTURES);
  assert.equal(res.status, 200, res.body);
  assert.equal(existsSync(join(uploadDir, '..', '..', 'etc', 'x.pt')), false);
  assert.equal(existsSync(join(uploadDir, '..', '..', 'etc')), false);
  assert.deepEqual(await readdir(root, { recursive: true }), before, 'no file appeared anywhere under the test root');
  assert.deepEqual(await readdir(uploadDir), [], 'the upload itself was removed after the analysis');
  // The name is never a path, not even in messages: only its last segment, cleaned, is echoed.
  const bad = await curl(['-X', 'POST', `${url}/interpret/upload`, '-F', 'file=@expected.json;filename=../../etc/x.pt', '-F', 'analysis_type=neuron'], FIXTURES);
  assert.equal(bad.status, 415);
  assert.doesNotMatch(bad.json().message as string, /\.\.\//);
});

test('an unknown job is 404 for GET and DELETE', async () => {
  assertError(await getJson(`${url}/interpret/jobs/00000000-0000-0000-0000-000000000000`), 404, 'MECHINT_ERR_JOB_NOT_FOUND');
  assertError(await getJson(`${url}/interpret/jobs/nope`, { method: 'DELETE' }), 404, 'MECHINT_ERR_JOB_NOT_FOUND');
});

test('an unknown route is 404 in the same error shape', async () => {
  assertError(await getJson(`${url}/interpret/nothing-here`), 404, 'MECHINT_ERR_ROUTE_NOT_FOUND');
});
