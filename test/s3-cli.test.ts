import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { addS3Options, s3ConfigFromFlags, shardSourceFromFlags } from '../src/cli/s3-flags.js';
import { registerSyncCommand } from '../src/cli/sync.js';
import { MechIntConfig } from '../src/config.js';
import { ConfigError, NoShardsError } from '../src/errors.js';
import { tempDir } from './helpers.js';

test('the S3 upload options have snake_case aliases, defaults, and messages that name them', () => {
  const c = new MechIntConfig({ s3_upload_concurrency: 2, s3_request_timeout_ms: 1500, s3_retry_base_ms: 100, s3_retry_max_ms: 1000, s3_upload_timeout_ms: 0 });
  assert.deepEqual([c.s3UploadConcurrency, c.s3RequestTimeoutMs, c.s3RetryBaseMs, c.s3RetryMaxMs, c.s3UploadTimeoutMs], [2, 1500, 100, 1000, 0]);
  const d = new MechIntConfig();
  assert.deepEqual([d.s3UploadConcurrency, d.s3RequestTimeoutMs, d.s3RetryBaseMs, d.s3RetryMaxMs, d.s3UploadTimeoutMs], [4, 30_000, 500, 30_000, 120_000]);
  assert.deepEqual(new MechIntConfig(JSON.parse(JSON.stringify(c.toJSON()))).toJSON(), c.toJSON());
  assert.throws(() => new MechIntConfig({ s3_request_timeout_ms: 0 }), /`s3_request_timeout_ms`.*integer >= 1.*`0`/);
  assert.throws(() => new MechIntConfig({ s3_retry_base_ms: 500, s3_retry_max_ms: 100 }), /`s3_retry_max_ms`.*>= s3_retry_base_ms/);
});

test('--storage-backend, --s3-bucket, --s3-prefix, --s3-endpoint become config options and shard sources', async () => {
  const cmd = addS3Options(new Command().exitOverride()).action(() => {});
  await cmd.parseAsync(['node', 'x', '--storage-backend', 's3', '--s3-bucket', 'b', '--s3-prefix', '/runs/1/', '--s3-endpoint', 'http://127.0.0.1:9000']);
  const flags = cmd.opts();
  assert.deepEqual(s3ConfigFromFlags(flags), { storageBackend: 's3', s3Bucket: 'b', s3Prefix: '/runs/1/', s3Endpoint: 'http://127.0.0.1:9000', s3ForcePathStyle: true });
  assert.deepEqual(shardSourceFromFlags('./ignored', flags), { path: 's3://b/runs/1', options: { s3: { endpoint: 'http://127.0.0.1:9000', forcePathStyle: true } } });
  assert.deepEqual(shardSourceFromFlags('s3://other/p', {}), { path: 's3://other/p', options: { s3: { endpoint: null, forcePathStyle: false } } });
  assert.deepEqual(shardSourceFromFlags('./local', {}), { path: './local', options: {} });
  assert.throws(() => s3ConfigFromFlags({ storageBackend: 'ftp' }), (e: Error) => e instanceof ConfigError && /`storage_backend`.*one of local, s3, both/.test(e.message));
  assert.throws(() => s3ConfigFromFlags({ s3Endpoint: 'localhost:9000' }), /`s3_endpoint`.*http/);
  assert.throws(() => shardSourceFromFlags('./x', { storageBackend: 's3' }), /--s3-bucket/);
});

test('`mechint sync` on a directory without a manifest says there is nothing to sync', async () => {
  const program = new Command().exitOverride();
  registerSyncCommand(program);
  const dir = await tempDir();
  await assert.rejects(program.parseAsync(['node', 'mechint', 'sync', dir, '--s3-bucket', 'b']), (e: Error) => e instanceof NoShardsError && /No manifest in .*nothing to sync/.test(e.message));
});
