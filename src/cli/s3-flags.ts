/**
 * The S3 flags shared by `demo`, `analyze`, `inspect` and `sync`: --storage-backend, --s3-bucket,
 * --s3-prefix, --s3-endpoint, --s3-force-path-style. Credentials and region come from the
 * standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/*), never flags.
 */
import type { Command } from 'commander';
import { MechIntConfig, STORAGE_BACKENDS, type MechIntOptions } from '../config.js';
import { ConfigError } from '../errors.js';
import type { OpenShardsOptions } from '../storage/shard-reader.js';
import { isS3Url } from '../storage/store.js';

/** What commander parses from addS3Options' flags. */
export interface S3Flags {
  storageBackend?: string;
  s3Bucket?: string;
  s3Prefix?: string;
  s3Endpoint?: string;
  s3ForcePathStyle?: boolean;
}

/** Adds the S3 flags to a command. */
export function addS3Options(cmd: Command): Command {
  return cmd
    .option('--storage-backend <backend>', `where shards go or come from: ${STORAGE_BACKENDS.join(', ')}`)
    .option('--s3-bucket <bucket>', 'S3 bucket (credentials and region from the standard AWS chain)')
    .option('--s3-prefix <prefix>', 'S3 key prefix of the shards')
    .option('--s3-endpoint <url>', 'endpoint of an S3-compatible store (MinIO, R2, Ceph); implies path-style URLs unless --no-s3-force-path-style')
    .option('--s3-force-path-style', 'path-style S3 URLs (endpoint/bucket/key)')
    .option('--no-s3-force-path-style', 'virtual-host S3 URLs (bucket.endpoint/key)');
}

/** The MechIntConfig options the flags set (only those given), to merge into a config. */
export function s3ConfigFromFlags(flags: S3Flags): Partial<MechIntOptions> {
  const out: Partial<MechIntOptions> = {};
  if (flags.storageBackend !== undefined) out.storageBackend = flags.storageBackend as MechIntOptions['storageBackend'];
  if (flags.s3Bucket !== undefined) out.s3Bucket = flags.s3Bucket;
  if (flags.s3Prefix !== undefined) out.s3Prefix = flags.s3Prefix;
  if (flags.s3Endpoint !== undefined) out.s3Endpoint = flags.s3Endpoint;
  if (flags.s3ForcePathStyle !== undefined) out.s3ForcePathStyle = flags.s3ForcePathStyle;
  else if (flags.s3Endpoint !== undefined) out.s3ForcePathStyle = true;
  // Validates each value with the config's own messages; a stand-in bucket lets a lone --storage-backend s3 pass here.
  if (Object.keys(out).length > 0) new MechIntConfig({ ...out, s3Bucket: out.s3Bucket ?? 'unset' });
  return out;
}

/**
 * Where `analyze`/`inspect` read shards: PATH when it is an s3:// URL; `s3://BUCKET/PREFIX` from
 * the flags with --storage-backend s3; otherwise the local PATH. Endpoint and path style go into
 * the reader's options.
 */
export function shardSourceFromFlags(path: string, flags: S3Flags): { path: string; options: OpenShardsOptions } {
  const c = s3ConfigFromFlags(flags);
  const s3 = { endpoint: c.s3Endpoint ?? null, forcePathStyle: c.s3ForcePathStyle ?? false };
  if (isS3Url(path)) return { path, options: { s3 } };
  if (c.storageBackend === 's3') {
    if (!c.s3Bucket) throw new ConfigError('Expected `--s3-bucket` with `--storage-backend s3`; or pass an s3://bucket/prefix path');
    const prefix = (c.s3Prefix ?? '').replace(/^\/+|\/+$/g, '');
    return { path: `s3://${c.s3Bucket}/${prefix}`, options: { s3 } };
  }
  return { path, options: {} };
}
