/**
 * From a MechIntConfig to the store and upload settings of the 's3' and 'both' storage backends.
 */
import type { MechIntConfig } from '../config.js';
import { S3Store, type S3StoreOptions } from './s3-store.js';
import type { ShardRemoteOptions } from './shard-writer.js';

/** S3Store options from a config's s3_* settings (bucket and prefix included). */
export function s3StoreOptions(config: MechIntConfig, extra: Partial<S3StoreOptions> = {}): S3StoreOptions {
  return {
    bucket: config.s3Bucket ?? '',
    prefix: config.s3Prefix,
    endpoint: config.s3Endpoint,
    forcePathStyle: config.s3ForcePathStyle,
    requestTimeoutMs: config.s3RequestTimeoutMs,
    ...extra,
  };
}

/** Upload settings for the writer, or null with storage_backend 'local'. */
export function remoteFromConfig(config: MechIntConfig): ShardRemoteOptions | null {
  if (config.storageBackend === 'local' || config.s3Bucket === null) return null;
  return {
    // The queue retries with its own backoff and outage detection; SDK retries would only delay it.
    store: new S3Store(s3StoreOptions(config, { maxAttempts: 1 })),
    keepLocal: config.storageBackend === 'both',
    queue: { concurrency: config.s3UploadConcurrency, retryBaseMs: config.s3RetryBaseMs, retryMaxMs: config.s3RetryMaxMs },
  };
}
