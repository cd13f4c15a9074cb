/**
 * A small object-store interface (put, get as a stream or a byte range, list, head, delete) with
 * LocalStore (a directory) and S3Store (s3-store.ts). Keys are relative to the store's root: a
 * directory for LocalStore, `bucket/prefix/` for S3Store. The URL scheme picks the store.
 */
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readdir, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { MechIntError, NoShardsError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';
import { S3Store, type S3StoreOptions } from './s3-store.js';

export { S3Store, type S3StoreOptions } from './s3-store.js';

/** What a store knows of one object. */
export interface ObjectInfo {
  /** Key relative to the store's root. */
  key: string;
  size: number;
  /** The server's entity tag without quotes (S3: MD5 of a single-part upload); null for LocalStore. */
  etag: string | null;
  /** User metadata (S3 `x-amz-meta-*`); empty for LocalStore. */
  metadata: Record<string, string>;
}

/** Bytes `[start, end)` of an object. */
export interface ByteRange {
  start: number;
  end: number;
}

/** A body to put: bytes in memory, or a file streamed from disk (large shards never sit in memory whole). */
export type PutBody = Uint8Array | { path: string };

export interface PutOptions {
  metadata?: Record<string, string>;
  /** Aborts the request (the upload queue uses it to stop at train end). */
  signal?: AbortSignal;
}

export interface Store {
  /** The root as a URL: `file:///abs/dir/` or `s3://bucket/prefix/`. */
  readonly url: string;
  /** The URL of one key. */
  uri(key: string): string;
  put(key: string, body: PutBody, options?: PutOptions): Promise<void>;
  /** A stream of the object, or of `range` of it. */
  get(key: string, range?: ByteRange, options?: { signal?: AbortSignal }): Promise<Readable>;
  /** The object (or `range` of it) in memory: for headers and manifests, not whole shards. */
  getBytes(key: string, range?: ByteRange): Promise<Buffer>;
  /** Every object whose key starts with `prefix` (all pages), sorted by key. */
  list(prefix?: string): Promise<ObjectInfo[]>;
  /** The object's size and metadata; null when there is no such key. */
  head(key: string, options?: { signal?: AbortSignal }): Promise<ObjectInfo | null>;
  /** Removes the object; removing a missing key is not an error. */
  delete(key: string): Promise<void>;
}

/** Reads a whole stream into one buffer. */
export async function streamToBuffer(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

/** A directory as a store. Writes are atomic (temporary name, fsync, rename). */
export class LocalStore implements Store {
  readonly root: string;
  readonly url: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.url = pathToFileURL(this.root + sep).href;
  }

  private path(key: string): string {
    const p = resolve(this.root, key);
    if (p !== this.root && !p.startsWith(this.root + sep)) throw new MechIntError('MECHINT_ERR_CONFIG', `Key \`${key}\` leaves the store's directory ${this.root}`, { statusCode: 400 });
    return p;
  }

  uri(key: string): string {
    return pathToFileURL(this.path(key)).href;
  }

  async put(key: string, body: PutBody, _options: PutOptions = {}): Promise<void> {
    const dest = this.path(key);
    await mkdir(dirname(dest), { recursive: true });
    if (body instanceof Uint8Array) {
      await writeFileAtomic(dest, [body]);
      return;
    }
    const tmp = `${dest}.put-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    try {
      await copyFile(body.path, tmp);
      await rename(tmp, dest);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const p = this.path(key);
    await this.mustExist(key, p);
    if (range && range.end <= range.start) return createReadStream(p, { start: 0, end: -1 });
    return createReadStream(p, range ? { start: range.start, end: range.end - 1 } : {});
  }

  async getBytes(key: string, range?: ByteRange): Promise<Buffer> {
    return streamToBuffer(await this.get(key, range));
  }

  async list(prefix = ''): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const p = join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) {
          const key = relative(this.root, p).split(sep).join('/');
          if (key.startsWith(prefix)) out.push({ key, size: (await stat(p)).size, etag: null, metadata: {} });
        }
      }
    };
    await walk(this.root);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const st = await stat(this.path(key)).catch(() => null);
    return st?.isFile() ? { key, size: st.size, etag: null, metadata: {} } : null;
  }

  async delete(key: string): Promise<void> {
    await unlink(this.path(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  private async mustExist(key: string, p: string): Promise<void> {
    const st = await stat(p).catch(() => null);
    if (!st?.isFile()) throw new NoShardsError(`${this.uri(key)} does not exist`);
  }
}

/** `s3://bucket/some/prefix` → bucket and prefix (no slashes at either end); null for other strings. */
export function parseS3Url(url: string): { bucket: string; prefix: string } | null {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
  if (!m) return null;
  return { bucket: m[1]!, prefix: m[2]!.replace(/^\/+|\/+$/g, '') };
}

export function isS3Url(path: string): boolean {
  return path.startsWith('s3://');
}

/** The store a path or URL names: `s3://bucket/prefix` → S3Store, anything else → LocalStore. */
export function storeFromUrl(pathOrUrl: string, s3: Omit<S3StoreOptions, 'bucket' | 'prefix'> = {}): Store {
  const parsed = parseS3Url(pathOrUrl);
  if (parsed) return new S3Store({ ...s3, ...parsed });
  return new LocalStore(pathOrUrl.startsWith('file://') ? new URL(pathOrUrl).pathname : pathOrUrl);
}
