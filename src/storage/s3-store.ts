/**
 * S3Store: the Store interface over the AWS SDK v3. Credentials and region come from the standard
 * AWS chain (env vars, shared config/credentials files, profiles). With an endpoint (MinIO, R2,
 * Ceph, s3rver) checksums are computed only when an operation requires them, since such servers
 * reject or silently store the SDK's default chunked checksum framing. Every request has a timeout
 * that throws, so a hung endpoint cannot hang the caller.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { NoShardsError } from '../errors.js';
import { toS3Error } from './s3-errors.js';
import type { ByteRange, ObjectInfo, PutBody, PutOptions, Store } from './store.js';

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix; keys become `${prefix}/${key}`. @default '' */
  prefix?: string;
  /** Endpoint of an S3-compatible store; null for AWS. @default null */
  endpoint?: string | null;
  /** Path-style URLs (`endpoint/bucket/key`). @default false */
  forcePathStyle?: boolean;
  /** Region; without one the standard chain's (AWS_REGION, ~/.aws/config), or us-east-1 when an endpoint is given. */
  region?: string;
  /** Longest wait for a request's response, and for a silent socket while streaming. @default 30000 */
  requestTimeoutMs?: number;
  /** Longest wait to connect. @default min(requestTimeoutMs, 5000) */
  connectionTimeoutMs?: number;
  /** Attempts per request made by the SDK itself (the upload queue retries on its own and uses 1). @default 3 */
  maxAttempts?: number;
  /** Objects larger than this are uploaded in parts of this size (S3's minimum is 5 MiB). @default 8 MiB */
  partSize?: number;
  /** Parts uploaded at once per object. @default 2 */
  partConcurrency?: number;
  /** Explicit credentials; by default the standard AWS chain. */
  credentials?: S3ClientConfig['credentials'];
}

export const DEFAULT_PART_SIZE = 8 * 1024 * 1024;

export class S3Store implements Store {
  readonly bucket: string;
  readonly prefix: string;
  readonly endpoint: string | null;
  readonly partSize: number;
  readonly url: string;
  readonly client: S3Client;
  private readonly partConcurrency: number;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.endpoint = options.endpoint ?? null;
    this.partSize = Math.max(5 * 1024 * 1024, options.partSize ?? DEFAULT_PART_SIZE);
    this.partConcurrency = Math.max(1, options.partConcurrency ?? 2);
    this.url = `s3://${this.bucket}/${this.prefix ? `${this.prefix}/` : ''}`;
    const requestTimeout = options.requestTimeoutMs ?? 30_000;
    const config: S3ClientConfig = {
      forcePathStyle: options.forcePathStyle ?? false,
      maxAttempts: options.maxAttempts ?? 3,
      requestHandler: {
        requestTimeout,
        throwOnRequestTimeout: true,
        connectionTimeout: options.connectionTimeoutMs ?? Math.min(requestTimeout, 5000),
        // A GET body that stops flowing is cut after the same time.
        socketTimeout: requestTimeout,
      },
    };
    const region = options.region ?? (this.endpoint ? (process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1') : undefined);
    if (region) config.region = region;
    if (this.endpoint) {
      config.endpoint = this.endpoint;
      config.requestChecksumCalculation = 'WHEN_REQUIRED';
      config.responseChecksumValidation = 'WHEN_REQUIRED';
    }
    if (options.credentials) config.credentials = options.credentials;
    this.client = new S3Client(config);
  }

  /** The full S3 key of a store key. */
  key(key: string): string {
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  uri(key: string): string {
    return `s3://${this.bucket}/${this.key(key)}`;
  }

  private where(): string {
    return this.endpoint ? ` at ${this.endpoint}` : '';
  }

  private fail(err: unknown, op: string, key?: string): never {
    throw toS3Error(err, { op, bucket: this.bucket, uri: key === undefined ? this.url : this.uri(key), where: this.where() });
  }

  async put(key: string, body: PutBody, options: PutOptions = {}): Promise<void> {
    const size = body instanceof Uint8Array ? body.byteLength : (await stat(body.path)).size;
    const Key = this.key(key);
    try {
      if (size <= this.partSize) {
        // One request: the body is a Buffer so the SDK knows its length and can resend it on retry.
        const bytes = body instanceof Uint8Array ? body : await readFileBuffer(body.path);
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: bytes, ContentLength: size, Metadata: options.metadata }), { abortSignal: options.signal });
        return;
      }
      const stream = body instanceof Uint8Array ? Readable.from([Buffer.from(body.buffer, body.byteOffset, body.byteLength)]) : createReadStream(body.path, { highWaterMark: 1 << 20 });
      const abortController = new AbortController();
      const onAbort = () => abortController.abort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      // leavePartsOnError: some S3-compatible servers answer the SDK's automatic abort with 405,
      // which would hide the real error; the parts left behind are cleaned by the bucket's lifecycle rules.
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.bucket, Key, Body: stream, Metadata: options.metadata },
        partSize: this.partSize,
        queueSize: this.partConcurrency,
        leavePartsOnError: true,
        abortController,
      });
      try {
        await upload.done();
      } finally {
        options.signal?.removeEventListener('abort', onAbort);
        stream.destroy();
      }
    } catch (err) {
      this.fail(err, 'upload', key);
    }
  }

  async get(key: string, range?: ByteRange, options: { signal?: AbortSignal } = {}): Promise<Readable> {
    if (range && range.end <= range.start) return Readable.from([]);
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key), Range: range ? `bytes=${range.start}-${range.end - 1}` : undefined }),
        { abortSignal: options.signal },
      );
      const body = out.Body;
      if (!(body instanceof Readable)) throw new TypeError('GetObject returned no Node stream');
      return body;
    } catch (err) {
      if (isNoSuchKey(err)) throw new NoShardsError(`${this.uri(key)} does not exist`);
      this.fail(err, 'read', key);
    }
  }

  async getBytes(key: string, range?: ByteRange): Promise<Buffer> {
    const stream = await this.get(key, range);
    const chunks: Buffer[] = [];
    try {
      for await (const c of stream) chunks.push(c as Buffer);
    } catch (err) {
      this.fail(err, 'read', key);
    }
    return Buffer.concat(chunks);
  }

  async list(prefix = ''): Promise<ObjectInfo[]> {
    const base = this.prefix ? `${this.prefix}/` : '';
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: base + prefix, ContinuationToken: token }));
        for (const o of page.Contents ?? []) {
          if (!o.Key?.startsWith(base)) continue;
          out.push({ key: o.Key.slice(base.length), size: o.Size ?? 0, etag: unquote(o.ETag), metadata: {} });
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      this.fail(err, 'list', '');
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async head(key: string, options: { signal?: AbortSignal } = {}): Promise<ObjectInfo | null> {
    try {
      const h = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(key) }), { abortSignal: options.signal });
      return { key, size: h.ContentLength ?? 0, etag: unquote(h.ETag), metadata: h.Metadata ?? {} };
    } catch (err) {
      // HEAD has no body, so a missing bucket also reads as 404: a put names it precisely.
      if (httpStatus(err) === 404) return null;
      this.fail(err, 'check', key);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
    } catch (err) {
      if (isNoSuchKey(err)) return;
      this.fail(err, 'delete', key);
    }
  }

  /** Closes the client's sockets. */
  destroy(): void {
    this.client.destroy();
  }
}

async function readFileBuffer(path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function unquote(etag: string | undefined): string | null {
  return etag ? etag.replace(/^"|"$/g, '') : null;
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function isNoSuchKey(err: unknown): boolean {
  const name = (err as Error)?.name;
  return name === 'NoSuchKey' || (name === 'NotFound' && httpStatus(err) === 404);
}
