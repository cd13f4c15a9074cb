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

  constructor(options: ShardWriterOptions) {
    this.dir = resolve(options.dir);
    this.rank = options.rank ?? 0;
    this.perRankShards = options.perRankShards ?? false;
    this.config = options.config ?? {};
    this.logger = options.logger ?? silentLogger;
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
    const next = this.chain.then(() => this.doWrite(input));
    this.chain = next.catch(() => {});
    return next;
  }

  private async doWrite(input: ShardInput): Promise<ShardRecord> {
    await this.open();
    const manifest = this.manifest!;
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
    const { bytes, sha256 } = await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
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
      upload: 'local',
    };
    manifest.shards.push(record);
    await writeManifest(this.dir, manifest, this.manifestFile);
    return record;
  }

  /** Waits for queued writes, marks the run complete and rewrites the manifest. */
  async finish(): Promise<void> {
    await this.chain;
    await this.open();
    const manifest = this.manifest!;
    manifest.status = 'complete';
    const run = manifest.runs.at(-1);
    if (run) run.ended = new Date().toISOString();
    await writeManifest(this.dir, manifest, this.manifestFile);
  }

  /** Waits until every queued write has finished (or failed). */
  async drain(): Promise<void> {
    await this.chain;
  }
}
