/**
 * Writes activation shards (safetensors, one tensor per layer) and keeps the manifest current.
 * A new writer in a directory that already holds shards continues their numbering, adopts shards
 * a crash left out of the manifest, and removes temporary files of crashed writers.
 */
import { mkdir, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseShardFileName, shardFileName } from '../constants.js';
import { fromFloat32 } from '../formats/dtypes.js';
import { readSafetensorsHeader, serializeSafetensors } from '../formats/safetensors.js';
import { silentLogger, type Logger } from '../logger.js';
import { removeStaleTempFiles, sha256File, writeFileAtomic } from './atomic.js';
import { emptyManifest, manifestFileName, readManifest, writeManifest, type Manifest, type ShardRecord } from './manifest.js';
import { ShardUploader, type UploadQueueSettings, type UploadWaitResult } from './shard-uploader.js';
import type { Store } from './store.js';

/** Where shards go besides the local directory ('s3' and 'both' storage backends). */
export interface ShardRemoteOptions {
  store: Store;
  /** true ('both'): local copies stay; false ('s3'): each is removed once its upload is confirmed. */
  keepLocal: boolean;
  queue?: UploadQueueSettings;
}

/** One layer's samples: `data` is row-major with the full shape `[n, ...sampleShape]`. */
export interface LayerBlock {
  shape: number[];
  data: Float32Array;
}

export interface ShardInput {
  layers: Record<string, LayerBlock>;
  globalStep: number;
  epoch?: number | null;
  batchIdx?: number | null;
  metadata?: Record<string, unknown>;
}

export interface ShardWriterOptions {
  dir: string;
  rank?: number;
  /** Shard and manifest names carry the rank, so ranks never write the same file. */
  perRankShards?: boolean;
  /** The config to record in the manifest (snake_case). */
  config?: Record<string, unknown>;
  logger?: Logger;
  /** Upload every shard and the manifest to a store in the background. */
  remote?: ShardRemoteOptions;
}

export class ShardWriter {
  readonly dir: string;
  readonly rank: number;
  readonly perRankShards: boolean;
  private readonly config: Record<string, unknown>;
  private readonly logger: Logger;
  private manifest: Manifest | null = null;
  private nextId = 0;
  private opening: Promise<void> | null = null;
  /** Writes run one after another, in call order. */
  private chain: Promise<unknown> = Promise.resolve();
  private uploader: ShardUploader | null = null;
  private remote: ShardRemoteOptions | null = null;
  private uploadsClosed = false;

  constructor(options: ShardWriterOptions) {
    this.dir = resolve(options.dir);
    this.rank = options.rank ?? 0;
    this.perRankShards = options.perRankShards ?? false;
    this.config = options.config ?? {};
    this.logger = options.logger ?? silentLogger;
    if (options.remote) this.useRemote(options.remote);
  }

  /**
   * Uploads shards and the manifest to `remote.store` in the background (before the first
   * write). Shards an earlier run left pending are queued when the writer opens.
   */
  useRemote(remote: ShardRemoteOptions): void {
    if (this.opening) throw new Error('ShardWriter.useRemote must be called before the first write');
    this.uploader?.close();
    this.remote = remote;
    this.uploader = this.makeUploader(remote);
  }

  private makeUploader(remote: ShardRemoteOptions): ShardUploader {
    return new ShardUploader({
      dir: this.dir,
      manifestFile: this.manifestFile,
      store: remote.store,
      keepLocal: remote.keepLocal,
      logger: this.logger,
      queue: remote.queue,
      manifest: () => this.manifest ?? emptyManifest(this.config, this.rank),
      update: (change) => this.serialized(async () => {
        change(this.manifest!);
        await writeManifest(this.dir, this.manifest!, this.manifestFile);
      }),
    });
  }

  /** The background uploader ('s3' and 'both'); null for local storage. */
  get uploads(): ShardUploader | null {
    return this.uploader;
  }

  /** True while uploads are queued or running. */
  get uploading(): boolean {
    return this.uploader?.queue.busy ?? false;
  }

  /**
   * Waits up to `timeoutMs` for the uploads (shards, then the manifest); done is true when every
   * shard is confirmed in the store. Without a remote store: done at once.
   */
  async waitForUploads(timeoutMs = Infinity): Promise<UploadWaitResult> {
    if (!this.uploader) return { done: true, pending: 0 };
    await this.chain;
    return this.uploader.wait(timeoutMs);
  }

  /** Stops background uploads; what is not uploaded stays `pending` in the manifest. */
  closeUploads(): void {
    this.uploader?.close();
    this.uploadsClosed = this.uploader !== null;
  }

  /** Written to again after closeUploads (the same callback in a second fit): a fresh queue picks up what is pending. */
  private async reopenUploads(): Promise<void> {
    if (!this.uploadsClosed || !this.remote) return;
    this.uploadsClosed = false;
    this.uploader = this.makeUploader(this.remote);
    await this.uploader.resume(this.manifest!);
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn);
    this.chain = next.catch(() => {});
    return next;
  }

  get manifestFile(): string {
    return manifestFileName(this.rank, this.perRankShards);
  }

  /** The shards written so far, in this and earlier runs. */
  get records(): readonly ShardRecord[] {
    return this.manifest?.shards ?? [];
  }

  /** Reads the directory's manifest (or starts one) and recovers after a crash. Called by write(). */
  open(): Promise<void> {
    this.opening ??= this.doOpen();
    return this.opening;
  }

  private async doOpen(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const stale = await removeStaleTempFiles(this.dir);
    if (stale.length > 0) this.logger.warn(`Removed ${stale.length} temporary file(s) left by an interrupted writer`);
    const manifest = (await readManifest(this.dir, this.manifestFile)) ?? emptyManifest(this.config, this.rank);
    manifest.config = this.config;
    manifest.status = 'running';
    const known = new Set(manifest.shards.map((s) => s.file));
    let maxId = Math.max(-1, ...manifest.shards.map((s) => s.shard_id));
    for (const file of (await readdir(this.dir)).sort()) {
      const parsed = parseShardFileName(file);
      if (!parsed || !this.owns(parsed.rank)) continue;
      maxId = Math.max(maxId, parsed.shardId);
      if (known.has(file) || parsed.ext !== 'safetensors') continue;
      try {
        manifest.shards.push(await this.describeExisting(file, parsed.shardId, parsed.globalStep));
        this.logger.warn(`Adopted ${file}, which an interrupted run wrote but did not list in the manifest`);
      } catch (err) {
        this.logger.warn(`Left ${file} out of the manifest: ${(err as Error).message}`);
      }
    }
    manifest.shards.sort((a, b) => a.shard_id - b.shard_id);
    this.nextId = maxId + 1;
    manifest.runs.push({ started: new Date().toISOString(), ended: null, first_shard_id: this.nextId });
    this.manifest = manifest;
    if (this.uploader) {
      const lost = await this.uploader.resume(manifest);
      if (lost.length > 0) this.logger.warn(`${lost.length} shard(s) the manifest lists are neither uploaded nor on local disk: ${lost.join(', ')}`);
    }
    await writeManifest(this.dir, manifest, this.manifestFile);
  }

  private owns(rank: number | undefined): boolean {
    return this.perRankShards ? rank === this.rank : rank === undefined;
  }

  private async describeExisting(file: string, shardId: number, globalStep: number): Promise<ShardRecord> {
    const path = join(this.dir, file);
    const header = await readSafetensorsHeader(path);
    const rows: Record<string, number> = {};
    const shapes: Record<string, number[]> = {};
    for (const [name, e] of Object.entries(header.tensors)) {
      shapes[name] = e.shape;
      rows[name] = e.shape[0] ?? 0;
    }
    const meta = header.metadata;
    return {
      file,
      uri: pathToFileURL(path).href,
      shard_id: shardId,
      global_step: globalStep,
      epoch: meta.epoch ? Number(meta.epoch) : null,
      batch_idx: meta.batch_idx ? Number(meta.batch_idx) : null,
      rank: this.rank,
      rows,
      shapes,
      dtype: 'F32',
      bytes: header.fileSize,
      sha256: await sha256File(path),
      created: meta.created ?? new Date().toISOString(),
      upload: 'local',
    };
  }

  /** Writes one shard (atomically), then the manifest that lists it. Returns the shard's record. */
  write(input: ShardInput): Promise<ShardRecord> {
    return this.serialized(() => this.doWrite(input));
  }

  private async doWrite(input: ShardInput): Promise<ShardRecord> {
    await this.open();
    const manifest = this.manifest!;
    await this.reopenUploads();
    const shardId = this.nextId++;
    const created = new Date().toISOString();
    const file = shardFileName(shardId, input.globalStep, this.perRankShards ? this.rank : undefined);
    const shapes: Record<string, number[]> = {};
    const rows: Record<string, number> = {};
    const tensors: Record<string, ReturnType<typeof fromFloat32>> = {};
    for (const [layer, block] of Object.entries(input.layers)) {
      tensors[layer] = fromFloat32(block.data, block.shape);
      shapes[layer] = block.shape;
      rows[layer] = block.shape[0] ?? 0;
      manifest.layers[layer] = { sample_shape: block.shape.slice(1), dtype: 'F32' };
    }
    const metadata: Record<string, string> = {
      format: 'mechint',
      global_step: String(input.globalStep),
      shard_id: String(shardId),
      epoch: input.epoch == null ? '' : String(input.epoch),
      batch_idx: input.batchIdx == null ? '' : String(input.batchIdx),
      rank: String(this.rank),
      created,
      shapes: JSON.stringify(shapes),
    };
    for (const [k, v] of Object.entries(input.metadata ?? {})) {
      if (!Object.hasOwn(metadata, k)) metadata[k] = typeof v === 'string' ? v : JSON.stringify(v);
    }
    const path = join(this.dir, file);
    const { bytes, sha256 } = await writeFileAtomic(path, serializeSafetensors(tensors, metadata), { syncDir: false }); // the manifest write next syncs the directory
    const record: ShardRecord = {
      file,
      uri: pathToFileURL(path).href,
      shard_id: shardId,
      global_step: input.globalStep,
      epoch: input.epoch ?? null,
      batch_idx: input.batchIdx ?? null,
      rank: this.rank,
      rows,
      shapes,
      dtype: 'F32',
      bytes,
      sha256,
      created,
      upload: this.uploader ? 'pending' : 'local',
      ...(this.uploader ? { remote_uri: this.uploader.store.uri(file) } : {}),
    };
    manifest.shards.push(record);
    await writeManifest(this.dir, manifest, this.manifestFile);
    this.uploader?.enqueue(record);
    return { ...record };
  }

  /** Waits for queued writes, marks the run complete and rewrites the manifest. */
  async finish(): Promise<void> {
    await this.chain;
    await this.open();
    await this.serialized(async () => {
      const manifest = this.manifest!;
      await this.reopenUploads();
      manifest.status = 'complete';
      const run = manifest.runs.at(-1);
      if (run) run.ended = new Date().toISOString();
      await writeManifest(this.dir, manifest, this.manifestFile);
    });
    this.uploader?.enqueueManifest();
  }

  /** Waits until every queued write has finished (or failed). */
  async drain(): Promise<void> {
    await this.chain;
  }
}
