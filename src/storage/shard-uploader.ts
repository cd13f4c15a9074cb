/**
 * ShardUploader: keeps a shard directory's manifest and a remote store in step. Shards not yet
 * confirmed in the store are `pending`; once a HEAD confirms one it becomes `uploaded` (and with
 * keepLocal false its local copy is removed, after the manifest says so). The manifest is
 * uploaded after the shards it lists: the remote copy lists only confirmed shards.
 */
import { stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger, type Logger } from '../logger.js';
import type { Manifest, ShardPatch, ShardRecord } from './manifest.js';
import type { Store } from './store.js';
import { UploadQueue, type UploadJob, type UploadQueueOptions } from './upload-queue.js';

export type UploadQueueSettings = Omit<UploadQueueOptions, 'store' | 'onUploaded' | 'logger'>;

export interface ShardUploaderOptions {
  dir: string;
  /** The manifest's file name, which is also its key in the store. */
  manifestFile: string;
  store: Store;
  /** true ('both'): local copies stay; false ('s3'): each is removed once its upload is confirmed. */
  keepLocal: boolean;
  logger?: Logger;
  queue?: UploadQueueSettings;
  /** The manifest as it is now. */
  manifest: () => Manifest;
  /** Records a change of one shard's record (its upload state), in order with the owner's other writes; false when no record has that file. */
  update: (file: string, patch: ShardPatch) => Promise<boolean>;
}

export interface UploadWaitResult {
  /** Every shard and the manifest are confirmed in the store. */
  done: boolean;
  /** Shards still pending in the manifest. */
  pending: number;
}

export class ShardUploader {
  readonly queue: UploadQueue;
  readonly store: Store;
  readonly keepLocal: boolean;
  private readonly o: ShardUploaderOptions;

  constructor(options: ShardUploaderOptions) {
    this.o = options;
    this.store = options.store;
    this.keepLocal = options.keepLocal;
    this.queue = new UploadQueue({
      ...options.queue,
      store: options.store,
      logger: options.logger ?? silentLogger,
      onUploaded: (job) => this.uploaded(job),
    });
  }

  /**
   * Marks every record not yet uploaded whose file is on disk as pending and queues it; with
   * keepLocal false removes local copies the manifest already records as uploaded. Mutates
   * `manifest` (the owner writes it next). Returns the files that are neither uploaded nor on disk.
   */
  async resume(manifest: Manifest): Promise<string[]> {
    const lost: string[] = [];
    for (const r of manifest.shards) {
      const path = join(this.o.dir, r.file);
      const onDisk = await stat(path).then((s) => s.isFile(), () => false);
      if (r.upload === 'uploaded') {
        if (!this.keepLocal && onDisk) await unlink(path).catch(() => {});
        continue;
      }
      if (!onDisk) {
        lost.push(r.file);
        continue;
      }
      r.upload = 'pending';
      r.remote_uri = this.store.uri(r.file);
      this.enqueue(r);
    }
    return lost;
  }

  /** Queues one shard's upload. */
  enqueue(record: ShardRecord): void {
    this.queue.enqueue({ key: record.file, source: { path: join(this.o.dir, record.file), bytes: record.bytes, sha256: record.sha256 } });
  }

  /** Queues an upload of the manifest as it is when the upload starts. */
  enqueueManifest(): void {
    this.queue.enqueue({ key: this.o.manifestFile, source: { make: () => this.remoteManifest() } });
  }

  /** Shards of the manifest not yet confirmed in the store. */
  get pending(): number {
    return this.o.manifest().shards.filter((s) => s.upload !== 'uploaded').length;
  }

  /** The manifest as stored remotely: only confirmed shards, with their s3:// URIs. */
  remoteManifest(): Uint8Array {
    const m = structuredClone(this.o.manifest());
    m.shards = m.shards.filter((s) => s.upload === 'uploaded').map((s) => ({ ...s, uri: s.remote_uri ?? this.store.uri(s.file) }));
    m.total_shards = m.shards.length;
    if (this.pending > 0) m.status = 'running';
    return Buffer.from(JSON.stringify(m, null, 2) + '\n', 'utf8');
  }

  /** Waits up to `timeoutMs` for every queued upload. */
  async wait(timeoutMs = Infinity): Promise<UploadWaitResult> {
    const drained = await this.queue.drain(timeoutMs);
    return { done: drained && this.pending === 0, pending: this.pending };
  }

  /** Stops the queue (aborting requests in flight); what is not uploaded stays pending. */
  close(): void {
    this.queue.close();
  }

  private async uploaded(job: UploadJob): Promise<void> {
    if (job.key === this.o.manifestFile) return;
    const uri = this.store.uri(job.key);
    const found = await this.o.update(job.key, { upload: 'uploaded', remote_uri: uri, ...(this.keepLocal ? {} : { uri }) });
    // The manifest says "uploaded" before the local copy goes: a crash in between loses nothing.
    if (found && !this.keepLocal) await unlink(join(this.o.dir, job.key)).catch(() => {});
    this.enqueueManifest();
  }
}
