/**
 * Writes activation shards (safetensors, or `.pt` with shardFormat 'pt'; one tensor per layer)
 * and keeps the manifest current: one journal line per shard (manifest-log.ts), so the cost per
 * shard stays flat however long the run.
 *
 * Opening a directory takes its writer lock (writer-lock.ts: a second run on the same path fails
 * clearly), keeps an original system's manifest.json as manifest.original.json, continues the
 * numbering after every shard already there, adopts shards a crash left out of the manifest and
 * removes temporary files of crashed writers. A file-system failure (disk full, read-only) stops
 * the writer with a StorageError and the manifest records it (status 'failed').
 */
import { mkdir, readdir, rename, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { MANIFEST_FILE, parseShardFileName, shardFileName } from '../constants.js';
import type { MechIntError } from '../errors.js';
import { fromFloat32, type RawTensor } from '../formats/dtypes.js';
import { readSafetensorsHeader, serializeSafetensors } from '../formats/safetensors.js';
import { encodeTorchFile, torchShardValue, type TorchValue } from '../formats/torch-writer.js';
import { silentLogger, type Logger } from '../logger.js';
import { removeStaleTempFiles, sha256File, syncDir, writeFileAtomic } from './atomic.js';
import { ManifestLog } from './manifest-log.js';
import { emptyManifest, manifestFileName, ORIGINAL_MANIFEST_PATTERN, readManifest, readManifestFile, type Manifest, type ShardPatch, type ShardRecord } from './manifest.js';
import { encodeUserMetadata, JSON_KEYS } from './metadata.js';
import { AUX_METADATA_KEY, auxTensorName, encodeAuxMap, isAuxTensorName, type AuxRef } from './provenance.js';
import { ShardUploader, type UploadQueueSettings, type UploadWaitResult } from './shard-uploader.js';
import { toStorageError } from './storage-errors.js';
import type { Store } from './store.js';
import { WriterLock } from './writer-lock.js';

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

/** A tensor stored beside the layers (provenance.ts): row provenance, captured inputs, targets, ids. */
export interface AuxBlock {
  ref: AuxRef;
  tensor: RawTensor;
}

export interface ShardInput {
  layers: Record<string, LayerBlock>;
  /** Provenance tensors of the layers' rows; absent or empty writes a shard as before. */
  aux?: AuxBlock[];
  globalStep: number;
  epoch?: number | null;
  batchIdx?: number | null;
  /** Extra metadata: strings as they are, other JSON values encoded as metadata.ts documents; tensors are refused. */
  metadata?: Record<string, unknown>;
}

export type ShardFileFormat = 'safetensors' | 'pt';

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
  /** The shard file format: safetensors, or a torch.save-compatible `.pt` zip. @default 'safetensors' */
  format?: ShardFileFormat;
}

export class ShardWriter {
  readonly dir: string;
  readonly rank: number;
  readonly perRankShards: boolean;
  readonly format: ShardFileFormat;
  private readonly config: Record<string, unknown>;
  private readonly logger: Logger;
  /** The manifest of the open run (or of the last one, after close). */
  private manifest: Manifest | null = null;
  private log: ManifestLog | null = null;
  private lock: WriterLock | null = null;
  private nextId = 0;
  private opening: Promise<void> | null = null;
  /** Writes run one after another, in call order. */
  private chain: Promise<unknown> = Promise.resolve();
  private uploader: ShardUploader | null = null;
  private remote: ShardRemoteOptions | null = null;
  private uploaderFresh = false;
  private uploadsClosed = false;
  private failure: MechIntError | null = null;
  private writesInFlight = 0;

  constructor(options: ShardWriterOptions) {
    this.dir = resolve(options.dir);
    this.rank = options.rank ?? 0;
    this.perRankShards = options.perRankShards ?? false;
    this.format = options.format ?? 'safetensors';
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
    this.uploaderFresh = true;
    return new ShardUploader({
      dir: this.dir,
      manifestFile: this.manifestFile,
      store: remote.store,
      keepLocal: remote.keepLocal,
      logger: this.logger,
      queue: remote.queue,
      manifest: () => this.manifest ?? emptyManifest(this.config, this.rank),
      update: (file, patch) => this.serialized(() => this.patch(file, patch)),
    });
  }

  private async patch(file: string, patch: ShardPatch): Promise<boolean> {
    const record = this.manifest?.shards.find((s) => s.file === file);
    if (!record) return false;
    if (this.log && !this.failure) {
      try {
        await this.log.append({ op: 'update', file, patch });
        return true;
      } catch (err) {
        this.logger.warn(`Could not record the upload of ${file} in the manifest: ${(err as Error).message}`);
      }
    }
    Object.assign(record, patch);
    return true;
  }

  /** The background uploader ('s3' and 'both'); null for local storage. */
  get uploads(): ShardUploader | null {
    return this.uploader;
  }

  /** True while uploads are queued or running. */
  get uploading(): boolean {
    return this.uploader?.queue.busy ?? false;
  }

  /** Shard writes started and not yet finished (for backpressure). */
  get pendingWrites(): number {
    return this.writesInFlight;
  }

  /** The error that stopped this writer (disk full, read-only, ...), or null. */
  get failed(): MechIntError | null {
    return this.failure;
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
  private reopenUploads(): void {
    if (!this.uploadsClosed || !this.remote) return;
    this.uploadsClosed = false;
    this.uploader = this.makeUploader(this.remote);
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

  /**
   * Takes the directory's writer lock, reads its manifest (or starts one), recovers after a crash
   * and writes the manifest. Called by write(); call it early (at train begin) to fail before
   * training on a locked, read-only or corrupted storage path.
   */
  open(): Promise<void> {
    this.opening ??= this.doOpen().catch((err: unknown) => {
      this.opening = null;
      throw err;
    });
    return this.opening;
  }

  private async doOpen(): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true });
    } catch (err) {
      throw toStorageError(err, this.dir, 'create the storage directory');
    }
    const lock = await WriterLock.acquire(this.dir, this.manifestFile);
    try {
      const stale = await removeStaleTempFiles(this.dir);
      if (stale.length > 0) this.logger.warn(`Removed ${stale.length} temporary file(s) left by an interrupted writer`);
      const originalIds = await this.keepOriginalManifest();
      const manifest = (await readManifest(this.dir, this.manifestFile)) ?? emptyManifest(this.config, this.rank);
      manifest.config = this.config;
      manifest.status = 'running';
      manifest.error = null;
      const known = new Set(manifest.shards.map((s) => s.file));
      const firstOwn = manifest.runs[0]?.first_shard_id ?? Infinity;
      let maxId = Math.max(-1, ...manifest.shards.map((s) => s.shard_id), ...originalIds);
      for (const file of (await readdir(this.dir)).sort()) {
        const parsed = parseShardFileName(file);
        if (!parsed || !this.owns(parsed.rank)) continue;
        maxId = Math.max(maxId, parsed.shardId);
        if (known.has(file)) continue;
        // .pt files numbered below mechint's first run are the original system's, not orphans of ours.
        if (parsed.ext !== 'safetensors' && !(parsed.ext === 'pt' && parsed.shardId >= firstOwn)) continue;
        try {
          manifest.shards.push(await this.describeExisting(file, parsed.shardId, parsed.globalStep, parsed.ext));
          this.logger.warn(`Adopted ${file}, which an interrupted run wrote but did not list in the manifest`);
        } catch (err) {
          this.logger.warn(`Left ${file} out of the manifest: ${(err as Error).message}`);
        }
      }
      manifest.shards.sort((a, b) => a.shard_id - b.shard_id);
      this.nextId = maxId + 1;
      manifest.runs.push({ started: new Date().toISOString(), ended: null, first_shard_id: this.nextId });
      this.manifest = manifest;
      this.failure = null;
      if (this.remote && (this.uploadsClosed || !this.uploader)) this.reopenUploads();
      if (this.uploader && this.uploaderFresh) {
        this.uploaderFresh = false;
        const lost = await this.uploader.resume(manifest);
        if (lost.length > 0) this.logger.warn(`${lost.length} shard(s) the manifest lists are neither uploaded nor on local disk: ${lost.join(', ')}`);
      }
      const log = new ManifestLog(this.dir, this.manifestFile, manifest);
      await log.compact(); // the snapshot, with the last run's journal merged in
      this.log = log;
      this.lock = lock;
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  /**
   * An original (Python) system's manifest.json in the directory is renamed to
   * manifest.original.json (never overwritten). Returns the shard ids every original manifest lists.
   */
  private async keepOriginalManifest(): Promise<number[]> {
    const ids: number[] = [];
    if (this.manifestFile === MANIFEST_FILE) {
      const found = await readManifestFile(this.dir, MANIFEST_FILE);
      if (found?.kind === 'original') {
        const names = new Set(await readdir(this.dir));
        let target = 'manifest.original.json';
        for (let i = 1; names.has(target); i++) target = `manifest.original.${i}.json`;
        await rename(join(this.dir, MANIFEST_FILE), join(this.dir, target));
        await syncDir(this.dir);
        this.logger.warn(`${MANIFEST_FILE} in ${this.dir} was the original system's (${found.manifest.files.length} shard(s)); kept it as ${target} and started a mechint manifest; numbering continues after its shards`);
      }
    }
    for (const name of (await readdir(this.dir)).filter((f) => ORIGINAL_MANIFEST_PATTERN.test(f))) {
      const any = await readManifestFile(this.dir, name).catch(() => null);
      if (any?.kind !== 'original') continue;
      for (const f of any.manifest.files) {
        const p = parseShardFileName(f);
        if (p && this.owns(p.rank)) ids.push(p.shardId);
      }
    }
    return ids;
  }

  private owns(rank: number | undefined): boolean {
    return this.perRankShards ? rank === this.rank : rank === undefined;
  }

  private async describeExisting(file: string, shardId: number, globalStep: number, ext: string): Promise<ShardRecord> {
    const path = join(this.dir, file);
    const rows: Record<string, number> = {};
    const shapes: Record<string, number[]> = {};
    let meta: Record<string, string>;
    let bytes: number;
    if (ext === 'safetensors') {
      const header = await readSafetensorsHeader(path);
      for (const [name, e] of Object.entries(header.tensors)) if (!isAuxTensorName(name)) shapes[name] = e.shape;
      meta = header.metadata;
      bytes = header.fileSize;
    } else {
      const { readFile } = await import('node:fs/promises');
      const { readActivationFile } = await import('../formats/read-any.js');
      const data = await readFile(path);
      const parsed = readActivationFile(data, path);
      for (const [name, t] of Object.entries(parsed.tensors)) if (!isAuxTensorName(name)) shapes[name] = t.shape;
      meta = parsed.metadata;
      bytes = data.byteLength;
    }
    for (const [name, shape] of Object.entries(shapes)) rows[name] = shape[0] ?? 0;
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
      bytes,
      sha256: await sha256File(path),
      created: meta.created ?? new Date().toISOString(),
      upload: 'local',
      ...(ext === 'pt' ? { format: 'pt' as const } : {}),
    };
  }

  /** Writes one shard (atomically), then the journal line that lists it. Returns the shard's record. */
  write(input: ShardInput): Promise<ShardRecord> {
    this.writesInFlight++;
    return this.serialized(() => this.doWrite(input)).finally(() => {
      this.writesInFlight--;
    });
  }

  private async doWrite(input: ShardInput): Promise<ShardRecord> {
    if (this.failure) throw this.failure;
    await this.open();
    const manifest = this.manifest!;
    if (this.uploadsClosed) {
      this.reopenUploads();
      this.uploaderFresh = false;
      await this.uploader!.resume(manifest);
    }
    const shardId = this.nextId;
    const created = new Date().toISOString();
    const shapes: Record<string, number[]> = {};
    const rows: Record<string, number> = {};
    const tensors: Record<string, RawTensor> = {};
    const layers: Manifest['layers'] = {};
    for (const [layer, block] of Object.entries(input.layers)) {
      tensors[layer] = fromFloat32(block.data, block.shape);
      shapes[layer] = block.shape;
      rows[layer] = block.shape[0] ?? 0;
      layers[layer] = { sample_shape: block.shape.slice(1), dtype: 'F32' };
    }
    const own: Record<string, string> = {
      format: 'mechint',
      global_step: String(input.globalStep),
      shard_id: String(shardId),
      epoch: input.epoch == null ? '' : String(input.epoch),
      batch_idx: input.batchIdx == null ? '' : String(input.batchIdx),
      rank: String(this.rank),
      created,
      shapes: JSON.stringify(shapes),
    };
    const aux = input.aux ?? [];
    if (aux.length > 0) own[AUX_METADATA_KEY] = encodeAuxMap(aux.map((a) => a.ref));
    // Refuses tensors and reserved keys before anything is written.
    const metadata = { ...own, ...encodeUserMetadata(input.metadata ?? {}, own) };
    this.nextId++;
    const file = shardFileName(shardId, input.globalStep, this.perRankShards ? this.rank : undefined).replace(/\.safetensors$/, `.${this.format}`);
    const path = join(this.dir, file);
    const chunks = this.format === 'pt' ? torchShardChunks(shardId, input, tensors, shapes, own, metadata) : serializeSafetensors(withAux(tensors, aux), metadata);
    let written: { bytes: number; sha256: string };
    try {
      // The directory is synced so the rename is durable before the journal line that lists it.
      written = await writeFileAtomic(path, chunks);
    } catch (err) {
      throw await this.fail(toStorageError(err, path, 'write the shard'), input.globalStep);
    }
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
      bytes: written.bytes,
      sha256: written.sha256,
      created,
      upload: this.uploader ? 'pending' : 'local',
      ...(this.uploader ? { remote_uri: this.uploader.store.uri(file) } : {}),
      ...(this.format === 'pt' ? { format: 'pt' as const } : {}),
    };
    try {
      await this.log!.append({ op: 'shard', shard: record, layers });
    } catch (err) {
      throw await this.fail(toStorageError(err, this.log!.journalPath, 'append to'), input.globalStep);
    }
    this.uploader?.enqueue(record);
    return { ...record };
  }

  /**
   * Stops the writer on a storage failure: later writes throw the same error, and the manifest
   * records it (status 'failed') when the disk still takes that much. Returns the error.
   */
  private async fail(err: MechIntError, globalStep: number): Promise<MechIntError> {
    this.failure = err;
    const error = { code: err.code, message: `${err.message} (at global step ${globalStep})`, at: new Date().toISOString() };
    try {
      await this.log!.append({ op: 'status', status: 'failed', error });
    } catch {
      try {
        this.log!.applyLocal((m) => {
          m.status = 'failed';
          m.error = error;
          const run = m.runs.at(-1);
          if (run) Object.assign(run, { status: 'failed', error });
        });
        await this.log!.compact();
      } catch {
        this.logger.warn(`The manifest in ${this.dir} could not record the failure either: it still says status '${this.manifest?.status}'`);
      }
    }
    return err;
  }

  /**
   * Records that the run stopped on `error` (e.g. model.fit threw): status 'failed' with the
   * error, then closes the writer (uploads stop; the lock is released).
   */
  abort(error: { code?: string; message: string }): Promise<void> {
    const done = (async () => {
      await this.chain;
      await this.serialized(async () => {
        if (!this.log || this.failure) return;
        const failure = { code: error.code ?? 'MECHINT_RUN_ABORTED', message: error.message, at: new Date().toISOString() };
        await this.log.append({ op: 'status', status: 'failed', error: failure, run_ended: new Date().toISOString() }).catch(() => {});
      });
      await this.close();
    })();
    // A writer of this process opening the same directory now (a retried fit) waits for this instead of failing.
    this.lock?.closing(done.catch(() => {}));
    return done;
  }

  /**
   * Waits for queued writes, marks the run complete (a manifest is written even with no shards)
   * and compacts the manifest. Without a remote store the writer is then closed; with one,
   * uploads go on until closeUploads()/close(). After a failure the manifest keeps status 'failed'.
   */
  async finish(): Promise<void> {
    await this.chain;
    if (this.failure) return this.close();
    // Closed after a finished run, nothing written since: nothing to do.
    if (!this.opening && this.manifest && this.manifest.status !== 'running') return;
    await this.open();
    await this.serialized(async () => {
      if (this.failure || !this.log) return;
      const ended = new Date().toISOString();
      await this.log.append({ op: 'status', status: 'complete', error: null, run_ended: ended });
      await this.log.compact();
    });
    if (this.uploader && !this.uploadsClosed) this.uploader.enqueueManifest();
    else await this.close();
  }

  /**
   * Stops uploads, compacts the manifest into manifest.json, and releases the lock. A later
   * write opens the directory again (a new run in the manifest).
   */
  async close(): Promise<void> {
    this.closeUploads();
    const done = this.serialized(async () => {
      const log = this.log;
      const lock = this.lock;
      this.log = null;
      this.lock = null;
      this.opening = null;
      try {
        if (log) await (this.failure ? log.compact().catch(() => log.abandon()) : log.close());
      } finally {
        await lock?.release();
      }
    });
    this.lock?.closing(done.catch(() => {}));
    await done;
  }

  /** Waits until every queued write has finished (or failed). */
  async drain(): Promise<void> {
    await this.chain;
  }

  /** True while the writer holds its directory open (lock taken, manifest written). */
  get isOpen(): boolean {
    return this.log !== null;
  }

  /** The lock file's path while this writer holds it. */
  get lockPath(): string | null {
    return this.lock?.path ?? null;
  }

  /** Whether manifest.json (this writer's manifest file) exists on disk now. */
  async manifestExists(): Promise<boolean> {
    return stat(join(this.dir, this.manifestFile)).then((s) => s.isFile(), () => false);
  }
}

/**
 * A `.pt` shard as the original system's hooks save it, `{global_step, shard_id, activations,
 * metadata}`, readable by `torch.load(path, weights_only=True)`. Its metadata dict holds
 * global_step, shard_id, epoch, batch_idx (int or None), rank, created, format and the original's
 * `<layer>_shape` lists as Python values; the user's values follow the same rule as in
 * safetensors shards (metadata.ts): strings as they are, other values as JSON text listed in
 * `json_keys` (`json.loads(m[k])` in Python gives NaN back as a float). Pickled floats are avoided
 * on purpose: torch 1.x's weights_only loader refuses them (BINFLOAT).
 */
function torchShardChunks(shardId: number, input: ShardInput, tensors: Record<string, RawTensor>, shapes: Record<string, number[]>, own: Record<string, string>, encoded: Record<string, string>): Uint8Array[] {
  const metadata: Record<string, TorchValue> = {
    format: 'mechint',
    global_step: input.globalStep,
    shard_id: shardId,
    epoch: input.epoch ?? null,
    batch_idx: input.batchIdx ?? null,
    rank: Number(own.rank),
    created: own.created!,
  };
  for (const [layer, shape] of Object.entries(shapes)) metadata[`${layer}_shape`] = shape;
  if (own[AUX_METADATA_KEY]) metadata[AUX_METADATA_KEY] = own[AUX_METADATA_KEY];
  for (const [k, v] of Object.entries(encoded)) if (!Object.hasOwn(own, k) && k !== JSON_KEYS) metadata[k] = v;
  if (encoded[JSON_KEYS]) metadata[JSON_KEYS] = JSON.parse(encoded[JSON_KEYS]) as string[];
  const value = torchShardValue({ global_step: input.globalStep, shard_id: shardId, activations: tensors, metadata }) as Record<string, TorchValue>;
  // Aux tensors go in their own top-level dicts (`@provenance`: {layer: tensor}, `@inputs`:
  // {"layer.input": tensor}, ...): `activations` keeps only layers for the original system's readers.
  for (const a of input.aux ?? []) {
    const group = (value[`@${a.ref.kind}`] ??= {}) as Record<string, TorchValue>;
    group[a.ref.name === undefined ? a.ref.layer : `${a.ref.layer}.${a.ref.name}`] = a.tensor;
  }
  return encodeTorchFile(value);
}

/** The layer tensors followed by the aux tensors, by their reserved names. */
function withAux(tensors: Record<string, RawTensor>, aux: AuxBlock[]): Record<string, RawTensor> {
  if (aux.length === 0) return tensors;
  const out = { ...tensors };
  for (const a of aux) out[auxTensorName(a.ref)] = a.tensor;
  return out;
}
