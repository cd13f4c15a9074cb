/**
 * The server's view of the activation cache: one ShardReader and its layer list, built once and
 * rebuilt only when the directory or its manifest changes. Requests never read shard headers;
 * at most one `stat` pair per `checkIntervalMs` decides whether a rebuild is due.
 */
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { LayerNotFoundError, NoShardsError } from '../errors.js';
import { ShardReader } from '../storage/shard-reader.js';
import { isS3Url } from '../storage/store.js';

/** One layer as `GET /interpret/layers` reports it (the JSON contract keeps snake_case). */
export interface LayerView {
  name: string;
  /** Shape of one sample, without the first (batch) dimension. */
  shape: number[];
  /** Length of one analysis row (the last dimension). */
  dim: number;
  dtype: string;
  /** Rows of `dim` over all shards ([B,T,D] counts B·T). */
  rows: number;
  /** Samples (first dimension) over all shards. */
  samples: number;
  shards: number;
  steps: number[];
}

export interface CacheSnapshot {
  /** The reader over the shards, or null when the cache holds none yet. */
  reader: ShardReader | null;
  layers: LayerView[];
  /** Total shards across layers. */
  totalShards: number;
  /** Bumps on every rebuild (a cheap identity for caches built on top). */
  version: number;
  builtAt: string;
}

export interface CacheIndexOptions {
  /** Seconds-scale staleness is fine for a training run writing shards; per-request stats are not. @default 1000 */
  checkIntervalMs?: number;
  /** Verify shard sha256 against the manifest the first time each shard is read. @default true */
  verify?: boolean;
}

// The manifest, its journal (manifest.log), and an original system's manifest kept beside it.
const MANIFEST_FILE_RE = /^manifest(_rank_\d+)?(\.original)?\.(json|log)$/;

export class CacheIndex {
  readonly path: string;
  private readonly checkIntervalMs: number;
  private readonly verify: boolean;
  private snapshot: CacheSnapshot | null = null;
  private signature = '';
  private lastCheck = 0;
  private pending: Promise<CacheSnapshot> | null = null;
  private version = 0;

  constructor(path: string, options: CacheIndexOptions = {}) {
    this.path = isS3Url(path) ? path : resolve(path);
    this.checkIntervalMs = options.checkIntervalMs ?? 1000;
    this.verify = options.verify ?? true;
  }

  /** The current snapshot; rebuilt first when the cache changed since the last check. */
  async current(): Promise<CacheSnapshot> {
    if (this.snapshot && Date.now() - this.lastCheck < this.checkIntervalMs) return this.snapshot;
    // One check at a time: concurrent requests share it.
    this.pending ??= this.check().finally(() => {
      this.pending = null;
    });
    return this.pending;
  }

  /** Forces a rebuild on the next `current()`. */
  invalidate(): void {
    this.lastCheck = 0;
    this.signature = '';
  }

  /** The reader and the layer's summary, or a 404 naming the layers the cache holds. */
  async layer(name: string): Promise<{ reader: ShardReader; layer: LayerView; snapshot: CacheSnapshot }> {
    const snap = await this.current();
    const layer = snap.layers.find((l) => l.name === name);
    if (!snap.reader || !layer) {
      const known = snap.layers.map((l) => l.name);
      throw new LayerNotFoundError(
        `No layer \`${name}\` in the activation cache; ${known.length > 0 ? `it holds ${known.join(', ')}` : 'it holds no shards yet'}`,
      );
    }
    return { reader: snap.reader, layer, snapshot: snap };
  }

  private async check(): Promise<CacheSnapshot> {
    const sig = await this.readSignature();
    this.lastCheck = Date.now();
    if (this.snapshot && sig === this.signature) return this.snapshot;
    const snap = await this.build();
    this.signature = sig;
    this.snapshot = snap;
    return snap;
  }

  /** mtimes and sizes of the directory and its manifests: a shard or manifest rewrite changes it. */
  private async readSignature(): Promise<string> {
    // S3 has no cheap change signal; such a cache is built once (invalidate() rebuilds it).
    if (isS3Url(this.path)) return this.snapshot ? this.signature : 's3';
    const dir = await stat(this.path).catch(() => null);
    if (!dir) return 'missing';
    if (!dir.isDirectory()) return `file:${dir.mtimeMs}:${dir.size}`;
    const parts = [`dir:${dir.mtimeMs}`];
    const names = (await readdir(this.path)).filter((f) => MANIFEST_FILE_RE.test(f)).sort();
    for (const name of names) {
      const s = await stat(join(this.path, name)).catch(() => null);
      if (s) parts.push(`${name}:${s.mtimeMs}:${s.size}`);
    }
    return parts.join('|');
  }

  private async build(): Promise<CacheSnapshot> {
    let reader: ShardReader | null = null;
    try {
      reader = await ShardReader.open(this.path, { verify: this.verify });
    } catch (err) {
      // An empty or not-yet-created cache is a normal state for a server started before training.
      if (!(err instanceof NoShardsError)) throw err;
    }
    const layers: LayerView[] = (reader?.layers() ?? []).map((l) => ({
      name: l.name,
      shape: l.sampleShape,
      dim: l.dim,
      dtype: l.dtype,
      rows: l.rows,
      samples: l.samples,
      shards: l.shards,
      steps: [...l.steps].sort((a, b) => a - b),
    }));
    return { reader, layers, totalShards: reader?.shards.length ?? 0, version: ++this.version, builtAt: new Date().toISOString() };
  }
}
