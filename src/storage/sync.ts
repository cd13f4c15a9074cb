/**
 * syncDirectory: uploads every shard of a shard directory that is not yet confirmed in the
 * store (pending after an outage, or written with storage_backend 'local'), then the manifest.
 * What `mechint sync DIR` runs. Do not run it while a training run writes to the same directory.
 */
import { readdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { MANIFEST_FILE } from '../constants.js';
import { NoShardsError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { ManifestLog } from './manifest-log.js';
import { readManifest, type ShardPatch } from './manifest.js';
import { ShardUploader, type UploadQueueSettings } from './shard-uploader.js';
import type { Store } from './store.js';
import { WriterLock } from './writer-lock.js';

export interface SyncOptions {
  store: Store;
  /** false ('s3'): local copies are removed once confirmed in the store. @default true */
  keepLocal?: boolean;
  /** Longest wait for the uploads of one manifest. @default Infinity */
  timeoutMs?: number;
  logger?: Logger;
  queue?: UploadQueueSettings;
}

export interface SyncReport {
  dir: string;
  url: string;
  manifests: string[];
  /** Shards the manifests list. */
  shards: number;
  /** Shards sent now, and their bytes. */
  uploaded: number;
  bytes: number;
  /** Shards found already in the store (confirmed, not sent again). */
  already_there: number;
  /** Shards still not in the store. */
  pending: number;
  /** Shards neither in the store nor on local disk. */
  lost: string[];
  seconds: number;
  done: boolean;
}

export async function syncDirectory(dir: string, options: SyncOptions): Promise<SyncReport> {
  const abs = resolve(dir);
  const names = (await readdir(abs).catch(() => [] as string[])).filter((f) => f === MANIFEST_FILE || /^manifest_rank_\d+\.json$/.test(f)).sort();
  if (names.length === 0) throw new NoShardsError(`No manifest in ${dir}: nothing to sync (expected ${MANIFEST_FILE} written by a mechint run)`);
  const started = Date.now();
  const report: SyncReport = { dir: abs, url: options.store.url, manifests: names, shards: 0, uploaded: 0, bytes: 0, already_there: 0, pending: 0, lost: [], seconds: 0, done: true };
  const logger = options.logger ?? silentLogger;
  for (const name of names) {
    // The writer lock: a training run still writing this directory makes sync fail clearly.
    const lock = await WriterLock.acquire(abs, name, 'sync');
    let log: ManifestLog | null = null;
    let uploader: ShardUploader | null = null;
    let chain: Promise<unknown> = Promise.resolve();
    try {
      const manifest = (await readManifest(abs, name))!;
      if (manifest.status === 'running') logger.warn(`${name} says a run did not finish (it crashed or was killed); syncing what it lists`);
      const journal = new ManifestLog(abs, name, manifest);
      log = journal;
      uploader = new ShardUploader({
        dir: abs,
        manifestFile: name,
        store: options.store,
        keepLocal: options.keepLocal ?? true,
        logger,
        queue: options.queue,
        manifest: () => manifest,
        update: (file: string, patch: ShardPatch) => {
          const next = chain.then(async () => {
            if (!manifest.shards.some((r) => r.file === file)) return false;
            await journal.append({ op: 'update', file, patch });
            return true;
          });
          chain = next.catch(() => {});
          return next;
        },
      });
      report.lost.push(...(await uploader.resume(manifest)));
      await journal.compact();
      // Also when nothing was pending: the remote manifest may lag behind the local one.
      uploader.enqueueManifest();
      const r = await uploader.wait(options.timeoutMs ?? Infinity);
      await chain;
      const s = uploader.queue.stats;
      report.shards += manifest.shards.length;
      report.uploaded += s.uploaded;
      report.bytes += s.uploadedBytes;
      report.already_there += s.alreadyThere;
      report.pending += r.pending;
      if (!r.done) report.done = false;
      const halted = uploader.queue.haltedBy;
      if (halted) throw halted;
    } finally {
      uploader?.close();
      await chain;
      await log?.close().catch(() => {});
      await lock.release();
    }
  }
  if (report.lost.length > 0) report.done = false;
  report.seconds = (Date.now() - started) / 1000;
  return report;
}
