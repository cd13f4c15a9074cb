import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tf } from '../src/backend.js';
import { MechIntCallback } from '../src/capture/callback.js';
import { ShardChecksumError } from '../src/errors.js';
import { sha256File } from '../src/storage/atomic.js';
import { loadLayerMatrix, ShardReader } from '../src/storage/shard-reader.js';
import { seededMatrix, smallNestedModel, tempDir } from './helpers.js';
import { BUCKET, inspectStore, objectHashes, startS3rver } from './s3-server.js';

const server = await startS3rver();
const LAYERS = ['backbone.blocks.1', 'head'];

async function train(backend: 's3' | 'both', prefix: string): Promise<{ dir: string; cb: MechIntCallback }> {
  const dir = await tempDir();
  const model = await smallNestedModel();
  const cb = new MechIntCallback({
    sample_layers: LAYERS,
    save_hidden_every_n_steps: 2,
    storage_backend: backend,
    storage_path: dir,
    s3_bucket: BUCKET,
    s3_prefix: prefix,
    s3_endpoint: server.endpoint,
    s3_force_path_style: true,
    s3_upload_timeout_ms: 30_000,
    verbose: false,
  });
  const xs = tf.tensor2d(seededMatrix(64, 4, 5), [64, 4]);
  const ys = tf.tensor2d(seededMatrix(64, 2, 6), [64, 2]);
  model.compile({ optimizer: tf.train.sgd(0.05), loss: 'meanSquaredError' });
  await model.fit(xs, ys, { epochs: 3, batchSize: 8, callbacks: [cb], verbose: 0 }); // 24 steps: shards at 0, 2, …, 22 and one at train end (step 23)
  tf.dispose([xs, ys]);
  return { dir, cb };
}

test("'both': every shard and the manifest are in the bucket, byte-identical, and local copies stay", async () => {
  const { dir } = await train('both', 'runs/both');
  const local = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(local.shards.length, 13);
  const store = inspectStore(server.endpoint, 'runs/both');
  const hashes = await objectHashes(store);
  assert.deepEqual([...hashes.keys()].sort(), [...local.shards.map((s: { file: string }) => s.file), 'manifest.json'].sort());
  for (const s of local.shards) {
    assert.equal(s.upload, 'uploaded');
    assert.equal(s.remote_uri, `s3://${BUCKET}/runs/both/${s.file}`);
    assert.equal(hashes.get(s.file), s.sha256, `${s.file} in the bucket matches the manifest's sha256`);
    assert.equal(await sha256File(join(dir, s.file)), s.sha256, `${s.file} stays on local disk`);
  }
  const remote = JSON.parse((await store.getBytes('manifest.json')).toString('utf8'));
  assert.equal(remote.status, 'complete');
  assert.deepEqual(remote.shards.map((s: { file: string }) => s.file), local.shards.map((s: { file: string }) => s.file));
  assert.ok(remote.shards.every((s: { uri: string }) => s.uri.startsWith(`s3://${BUCKET}/runs/both/`)));
});

test('rows streamed from s3://bucket/prefix equal the rows from the local copy, sha256-verified', async () => {
  const { dir } = await train('both', 'runs/compare');
  const fromS3 = await ShardReader.open(`s3://${BUCKET}/runs/compare`, { s3: { endpoint: server.endpoint, forcePathStyle: true } });
  const fromDisk = await ShardReader.open(dir);
  assert.deepEqual(fromS3.layers(), fromDisk.layers());
  assert.deepEqual(fromS3.missing, []);
  assert.ok(fromS3.shards.every((s) => s.path.startsWith(`s3://${BUCKET}/runs/compare/`) && s.record !== null));
  for (const layer of LAYERS) {
    for (const blockRows of [5, 8192]) {
      const a = await loadLayerMatrix(fromS3.rows(layer, { blockRows }));
      const b = await loadLayerMatrix(fromDisk.rows(layer, { blockRows }));
      assert.equal(a.nRows, b.nRows);
      assert.ok(a.nRows > 0);
      assert.deepEqual(a.rows, b.rows, `${layer}: same rows from S3 and from disk (blocks of ${blockRows})`);
    }
    const meta: string[] = [];
    for await (const batch of fromS3.rows(layer, { blockRows: 16 })()) meta.push(`${batch.shard}:${batch.rowOffset}`);
    const metaLocal: string[] = [];
    for await (const batch of fromDisk.rows(layer, { blockRows: 16 })()) metaLocal.push(`${batch.shard}:${batch.rowOffset}`);
    assert.deepEqual(meta, metaLocal, 'the same provenance (shard, row offset) for top-activating examples');
  }
  // An object changed in the bucket (same size, other bytes) is refused before its rows are used.
  const store = inspectStore(server.endpoint, 'runs/compare');
  const victim = fromS3.shards[3]!;
  const bytes = await store.getBytes(victim.file);
  bytes[bytes.length - 1] ^= 0xff;
  await store.put(victim.file, bytes);
  const again = await ShardReader.open(`s3://${BUCKET}/runs/compare`, { s3: { endpoint: server.endpoint, forcePathStyle: true } });
  await assert.rejects(loadLayerMatrix(again.rows('head')), (e: Error) => e instanceof ShardChecksumError && e.message.includes(victim.file));
});

test("'s3': every shard and the manifest are in the bucket and no local shard is left once confirmed", async () => {
  const { dir, cb } = await train('s3', 'runs/s3only');
  const local = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(local.shards.length, 13);
  assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith('.safetensors')), [], 'local cache emptied');
  const store = inspectStore(server.endpoint, 'runs/s3only');
  const hashes = await objectHashes(store);
  assert.equal(hashes.size, 14);
  for (const s of local.shards) {
    assert.equal(s.upload, 'uploaded');
    assert.equal(s.uri, `s3://${BUCKET}/runs/s3only/${s.file}`);
    assert.equal(hashes.get(s.file), s.sha256);
  }
  const remote = JSON.parse((await store.getBytes('manifest.json')).toString('utf8'));
  assert.equal(remote.status, 'complete');
  assert.equal(remote.total_shards, 13);
  const stats = cb.hooks.sampler!.writer.uploads!.queue.stats;
  assert.equal(stats.uploaded, 13);
  assert.equal(stats.failures, 0);
  const reader = await ShardReader.open(`s3://${BUCKET}/runs/s3only`, { s3: { endpoint: server.endpoint, forcePathStyle: true } });
  assert.equal(reader.layer('head').samples, local.shards.reduce((a: number, s: { rows: Record<string, number> }) => a + s.rows.head, 0));
});

test('the same callback in a second model.fit keeps uploading', async () => {
  const dir = await tempDir();
  const model = await smallNestedModel();
  const cb = new MechIntCallback({ sample_layers: ['head'], save_hidden_every_n_steps: 4, storage_backend: 'both', storage_path: dir, s3_bucket: BUCKET, s3_prefix: 'runs/twice', s3_endpoint: server.endpoint, s3_force_path_style: true, verbose: false });
  const xs = tf.tensor2d(seededMatrix(32, 4, 5), [32, 4]);
  const ys = tf.tensor2d(seededMatrix(32, 2, 6), [32, 2]);
  model.compile({ optimizer: tf.train.sgd(0.05), loss: 'meanSquaredError' });
  await model.fit(xs, ys, { epochs: 1, batchSize: 8, callbacks: [cb], verbose: 0 });
  await model.fit(xs, ys, { epochs: 1, batchSize: 8, callbacks: [cb], verbose: 0 });
  tf.dispose([xs, ys]);
  const local = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.ok(local.shards.length >= 3);
  const hashes = await objectHashes(inspectStore(server.endpoint, 'runs/twice'));
  assert.deepEqual([...hashes.keys()].sort(), [...local.shards.map((s: { file: string }) => s.file), 'manifest.json'].sort());
  assert.ok(local.shards.every((s: { upload: string; sha256: string; file: string }) => s.upload === 'uploaded' && hashes.get(s.file) === s.sha256));
});
