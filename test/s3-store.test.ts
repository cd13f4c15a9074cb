import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NoShardsError, S3AccessDeniedError, S3BucketMissingError, S3EndpointError } from '../src/errors.js';
import { ShardReader } from '../src/storage/shard-reader.js';
import { S3Store } from '../src/storage/s3-store.js';
import { LocalStore, streamToBuffer, type Store } from '../src/storage/store.js';
import { UploadQueue } from '../src/storage/upload-queue.js';
import { tempDir } from './helpers.js';
import { BUCKET, startS3rver } from './s3-server.js';

const server = await startS3rver([BUCKET, 'other-bucket']);
const s3 = (prefix: string, extra: Partial<ConstructorParameters<typeof S3Store>[0]> = {}) =>
  new S3Store({ bucket: BUCKET, prefix, endpoint: server.endpoint, forcePathStyle: true, requestTimeoutMs: 5000, ...extra });

async function contract(store: Store): Promise<void> {
  const bytes = Buffer.from('0123456789abcdef');
  await store.put('a/one.bin', bytes, { metadata: { sha256: 'x' } });
  const dir = await tempDir();
  await writeFile(join(dir, 'two.bin'), bytes.subarray(4));
  await store.put('two.bin', { path: join(dir, 'two.bin') });
  assert.deepEqual(await store.getBytes('a/one.bin'), bytes);
  assert.equal((await store.getBytes('a/one.bin', { start: 3, end: 7 })).toString(), '3456');
  assert.equal((await streamToBuffer(await store.get('two.bin', { start: 10, end: 12 }))).toString(), 'ef');
  assert.deepEqual((await store.list()).map((o) => [o.key, o.size]), [['a/one.bin', 16], ['two.bin', 12]]);
  assert.deepEqual((await store.list('a/')).map((o) => o.key), ['a/one.bin']);
  assert.equal((await store.head('two.bin'))?.size, 12);
  assert.equal(await store.head('nope.bin'), null);
  await store.delete('a/one.bin');
  await store.delete('a/one.bin');
  assert.deepEqual((await store.list()).map((o) => o.key), ['two.bin']);
  await assert.rejects(store.getBytes('gone.bin'), NoShardsError);
}

test('LocalStore and S3Store keep the same contract: put, get (stream and range), list, head, delete', async () => {
  await contract(new LocalStore(await tempDir()));
  const store = s3('contract/run1');
  await contract(store);
  const h = await store.head('two.bin');
  assert.equal(h?.etag, createHash('md5').update(Buffer.from('456789abcdef')).digest('hex'), 'the ETag is the MD5 of a single-part upload');
  assert.equal(store.uri('two.bin'), `s3://${BUCKET}/contract/run1/two.bin`);
  store.destroy();
});

test('a shard larger than the part size goes up in parts, is confirmed by HEAD, and is not sent twice', async () => {
  const dir = await tempDir();
  const data = randomBytes(11 * 1024 * 1024 + 123);
  await writeFile(join(dir, 'big.safetensors'), data);
  const store = s3('multipart', { partSize: 5 * 1024 * 1024 });
  const sha256 = createHash('sha256').update(data).digest('hex');
  const confirmed: string[] = [];
  const queue = new UploadQueue({ store, onUploaded: (job) => void confirmed.push(job.key) });
  queue.enqueue({ key: 'big.safetensors', source: { path: join(dir, 'big.safetensors'), bytes: data.length, sha256 } });
  assert.equal(await queue.drain(60_000), true);
  assert.equal(queue.stats.uploaded, 1);
  assert.equal(createHash('sha256').update(await store.getBytes('big.safetensors')).digest('hex'), sha256);
  assert.equal((await store.head('big.safetensors'))?.metadata.sha256, sha256);
  queue.enqueue({ key: 'big.safetensors', source: { path: join(dir, 'big.safetensors'), bytes: data.length, sha256 } });
  assert.equal(await queue.drain(60_000), true);
  assert.deepEqual([queue.stats.uploaded, queue.stats.alreadyThere], [1, 1], 'an identical object already there is confirmed, not uploaded again');
  assert.deepEqual(confirmed, ['big.safetensors', 'big.safetensors']);
  queue.close();
  store.destroy();
});

test('clear errors: missing bucket, access denied, unreachable endpoint, no shards under a prefix', async () => {
  const missing = new S3Store({ bucket: 'no-such-bucket', endpoint: server.endpoint, forcePathStyle: true });
  await assert.rejects(missing.put('x', Buffer.from('x')), (e: Error) => e instanceof S3BucketMissingError && /no-such-bucket.*does not exist.*s3_bucket/.test(e.message));
  await assert.rejects(ShardReader.open('s3://no-such-bucket/run', { s3: { endpoint: server.endpoint, forcePathStyle: true } }), S3BucketMissingError);

  const denied = s3('x', { credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: 'nope' } });
  await assert.rejects(denied.put('x', Buffer.from('x')), (e: Error) => e instanceof S3AccessDeniedError && (e as S3AccessDeniedError).code === 'MECHINT_ERR_S3_ACCESS_DENIED' && /AWS_ACCESS_KEY_ID/.test(e.message));

  // Port 1 on 127.0.0.1: nothing listens there.
  const down = new S3Store({ bucket: BUCKET, endpoint: 'http://127.0.0.1:1', forcePathStyle: true, maxAttempts: 1 });
  await assert.rejects(down.list(), (e: Error) => e instanceof S3EndpointError && /ECONNREFUSED/.test(e.message) && /s3_endpoint/.test(e.message));

  await assert.rejects(ShardReader.open(`s3://${BUCKET}/empty/prefix`, { s3: { endpoint: server.endpoint, forcePathStyle: true } }), (e: Error) => e instanceof NoShardsError && /No shards under s3:\/\/mechint-test\/empty\/prefix\//.test(e.message));
  for (const st of [missing, denied, down]) st.destroy();
});

test('the upload queue stops with one warning when the bucket is missing (retrying cannot fix it)', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'a.bin'), 'abc');
  const warnings: string[] = [];
  const store = new S3Store({ bucket: 'no-such-bucket', endpoint: server.endpoint, forcePathStyle: true, maxAttempts: 1 });
  const queue = new UploadQueue({ store, retryBaseMs: 10, logger: { info: () => {}, warn: (m) => void warnings.push(m) } });
  for (const key of ['a.bin', 'b.bin']) queue.enqueue({ key, source: { path: join(dir, 'a.bin'), bytes: 3, sha256: createHash('sha256').update('abc').digest('hex') } });
  assert.equal(await queue.drain(10_000), false);
  assert.ok(queue.haltedBy instanceof S3BucketMissingError);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /Uploads stopped.*no-such-bucket.*mechint sync/);
  assert.deepEqual(queue.remainingKeys.sort(), ['a.bin', 'b.bin']);
  queue.close();
  store.destroy();
});
