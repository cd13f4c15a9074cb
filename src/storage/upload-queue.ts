/**
 * UploadQueue: uploads files to a Store in the background so a training step never waits for the
 * network. Bounded concurrency; each upload is confirmed by a HEAD (size and checksum) before it
 * counts. Failures retry with exponential backoff and jitter. When the store stops answering
 * (refused connections, timeouts, 5xx) the queue enters an outage: it warns once, keeps one probe
 * going with growing delays, and resumes at full concurrency as soon as the store answers again.
 * A missing bucket or refused credentials halt the queue: retrying cannot fix those.
 */
import { silentLogger, type Logger } from '../logger.js';
import { S3UploadError } from '../errors.js';
import { bytesDigests, fileDigests, mismatch, type ExpectedObject } from './digest.js';
import { isTransient } from './s3-errors.js';
import { DEFAULT_PART_SIZE, S3Store } from './s3-store.js';
import type { ObjectInfo, Store } from './store.js';

/** A local file with the sha256 the manifest records for it. */
export interface FileSource {
  path: string;
  bytes: number;
  sha256: string;
}

/** Bytes made when the upload runs (e.g. a manifest snapshot); null skips the upload. */
export interface MadeSource {
  make: () => Promise<Uint8Array | null> | Uint8Array | null;
}

export interface UploadJob {
  /** Store key. Jobs are deduplicated by key. */
  key: string;
  source: FileSource | MadeSource;
}

export interface UploadQueueOptions {
  store: Store;
  /** Uploads at once (one while the store is unreachable). @default 4 */
  concurrency?: number;
  /** First retry delay; it doubles per failure, with ±50% jitter. @default 500 */
  retryBaseMs?: number;
  /** Longest retry delay. @default 30000 */
  retryMaxMs?: number;
  /** Attempts per job for errors that are not an outage (e.g. a checksum mismatch) before giving up. @default 5 */
  maxAttempts?: number;
  logger?: Logger;
  /** Called once an upload is confirmed; the job counts as running until it resolves. */
  onUploaded?: (job: UploadJob, info: ObjectInfo) => Promise<void> | void;
  /** Random numbers in [0, 1) for the jitter. @default Math.random */
  random?: () => number;
}

export interface UploadQueueStats {
  /** Confirmed uploads of files (shards), and their bytes. */
  uploaded: number;
  uploadedBytes: number;
  /** Confirmed uploads of made bytes (manifest snapshots). */
  madeUploads: number;
  /** Objects that were already in the store, confirmed, and not sent again. */
  alreadyThere: number;
  attempts: number;
  failures: number;
  /** Failures that were request timeouts (a hung endpoint). */
  timeouts: number;
  /** Outages seen (each warned once). */
  outages: number;
  /** Milliseconds spent in confirmed uploads (sum over jobs). */
  uploadMs: number;
  lastError: string | null;
}

interface Entry {
  job: UploadJob;
  attempts: number;
  notBefore: number;
  expected?: ExpectedObject;
  /** Enqueued again while running: run once more afterwards (manifest snapshots). */
  again?: boolean;
}

export class UploadQueue {
  readonly store: Store;
  readonly stats: UploadQueueStats = { uploaded: 0, uploadedBytes: 0, madeUploads: 0, alreadyThere: 0, attempts: 0, failures: 0, timeouts: 0, outages: 0, uploadMs: 0, lastError: null };
  /** Keys given up on (they stay pending in the manifest). */
  readonly failed: string[] = [];
  private readonly concurrency: number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly maxAttempts: number;
  private readonly logger: Logger;
  private readonly onUploaded: UploadQueueOptions['onUploaded'];
  private readonly random: () => number;
  private readonly queued: Entry[] = [];
  private readonly running = new Map<string, Entry>();
  private outage = false;
  private outageSince = 0;
  private outageFailures = 0;
  private resumeAt = 0;
  private lastProbe = 0;
  private timer: NodeJS.Timeout | null = null;
  private halted: Error | null = null;
  private closed = false;
  private readonly abort = new AbortController();
  private waiters = new Set<() => void>();

  constructor(options: UploadQueueOptions) {
    this.store = options.store;
    this.concurrency = Math.max(1, options.concurrency ?? 4);
    this.baseMs = Math.max(1, options.retryBaseMs ?? 500);
    this.maxMs = Math.max(this.baseMs, options.retryMaxMs ?? 30_000);
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 5);
    this.logger = options.logger ?? silentLogger;
    this.onUploaded = options.onUploaded;
    this.random = options.random ?? Math.random;
  }

  /** Jobs waiting or running. */
  get size(): number {
    return this.queued.length + this.running.size;
  }

  get busy(): boolean {
    return this.size > 0 && !this.closed && !this.halted;
  }

  /** True while the store does not answer. */
  get inOutage(): boolean {
    return this.outage;
  }

  /** The error that stopped the queue (missing bucket, access denied); null while it runs. */
  get haltedBy(): Error | null {
    return this.halted;
  }

  /** Keys waiting, running or given up on. */
  get remainingKeys(): string[] {
    return [...this.running.keys(), ...this.queued.map((e) => e.job.key), ...this.failed];
  }

  /** Adds a job; a key already waiting is not added twice, and one already running runs once more after. */
  enqueue(job: UploadJob): void {
    if (this.closed) return;
    const running = this.running.get(job.key);
    if (running) {
      if ('make' in job.source) {
        running.again = true;
        running.job = job;
      }
    } else if (!this.queued.some((e) => e.job.key === job.key)) {
      this.queued.push({ job, attempts: 0, notBefore: 0 });
    }
    // A new shard during an outage is the "next save": try the store again now, at most once per base delay.
    if (this.outage && this.running.size === 0 && Date.now() - this.lastProbe >= this.baseMs) this.resumeAt = 0;
    this.pump();
  }

  /** Resolves when every job has finished or been given up on (true), or after `timeoutMs` (false). */
  async drain(timeoutMs = Infinity): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (this.size > 0) {
      if (this.closed || this.halted) return false;
      const left = end - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = Number.isFinite(left) ? setTimeout(done, left) : null;
        function done(): void {
          if (t) clearTimeout(t);
          resolve();
        }
        this.waiters.add(done);
      });
    }
    return this.failed.length === 0;
  }

  /** Stops: aborts running requests and clears timers. Jobs not done stay pending in the manifest. */
  close(): void {
    this.closed = true;
    this.abort.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.notify();
  }

  private notify(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  private delay(failures: number): number {
    const exp = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
    return Math.round(exp * (0.5 + this.random()));
  }

  private schedule(at: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(0, at - Date.now()));
    // Timers alone must not keep a finished program alive.
    this.timer.unref();
  }

  private pump(): void {
    if (this.closed || this.halted) return;
    const now = Date.now();
    if (this.outage && now < this.resumeAt) {
      if (this.running.size === 0) this.schedule(this.resumeAt);
      return;
    }
    const limit = this.outage ? 1 : this.concurrency;
    let nextReady = Infinity;
    for (let i = 0; i < this.queued.length && this.running.size < limit; ) {
      const e = this.queued[i]!;
      if (e.notBefore > now || this.running.has(e.job.key)) {
        nextReady = Math.min(nextReady, e.notBefore);
        i++;
        continue;
      }
      this.queued.splice(i, 1);
      this.running.set(e.job.key, e);
      if (this.outage) this.lastProbe = now;
      void this.run(e);
    }
    if (nextReady !== Infinity && this.running.size < limit) this.schedule(nextReady);
  }

  private async run(e: Entry): Promise<void> {
    e.attempts++;
    this.stats.attempts++;
    const started = Date.now();
    try {
      const info = await this.attempt(e);
      this.stats.uploadMs += Date.now() - started;
      // Only a request sent after the outage began proves the store is back; one answered just before does not.
      if (this.outage && started >= this.outageSince) {
        this.outage = false;
        this.outageFailures = 0;
        this.logger.info(`S3 answers again at ${this.store.url}; uploading ${this.size - 1} pending object(s)`);
      }
      this.running.delete(e.job.key);
      if (e.again) this.queued.unshift({ job: e.job, attempts: 0, notBefore: 0 });
    } catch (err) {
      this.running.delete(e.job.key);
      if (this.closed) this.queued.unshift(e);
      else this.failedAttempt(e, err as Error);
    }
    this.pump();
    this.notify();
  }

  private failedAttempt(e: Entry, err: Error): void {
    this.stats.failures++;
    this.stats.lastError = `${err.name}: ${err.message}`;
    if (/TimeoutError|timed? ?out|ETIMEDOUT/i.test(`${err.name} ${err.message} ${String((err.cause as Error | undefined)?.name ?? '')}`)) this.stats.timeouts++;
    if (isTransient(err)) {
      if (!this.outage) {
        this.outage = true;
        this.outageSince = Date.now();
        this.stats.outages++;
        this.logger.warn(`S3 is not answering (${err.message}). Training goes on; shards stay on local disk as pending and upload when ${this.store.url} answers again (or run \`mechint sync\`).`);
      }
      this.outageFailures++;
      this.resumeAt = Date.now() + this.delay(this.outageFailures);
      // Back to the front: order is kept, and the next probe retries this very object.
      this.queued.unshift({ ...e, notBefore: 0 });
      return;
    }
    if (err.name === 'S3BucketMissingError' || err.name === 'S3AccessDeniedError') {
      this.halted = err;
      this.queued.unshift(e);
      this.logger.warn(`Uploads stopped: ${err.message}. Shards stay on local disk as pending; fix this, then run \`mechint sync\`.`);
      return;
    }
    if (e.attempts >= this.maxAttempts) {
      this.failed.push(e.job.key);
      this.logger.warn(`Gave up uploading ${e.job.key} after ${e.attempts} attempts: ${err.message}. It stays on local disk as pending; \`mechint sync\` retries it.`);
      return;
    }
    this.queued.push({ ...e, notBefore: Date.now() + this.delay(e.attempts) });
  }

  private async attempt(e: Entry): Promise<ObjectInfo> {
    const { key, source } = e.job;
    const signal = this.abort.signal;
    if ('make' in source) {
      const bytes = await source.make();
      if (bytes === null) return { key, size: 0, etag: null, metadata: {} };
      const d = bytesDigests(bytes);
      await this.store.put(key, bytes, { metadata: { sha256: d.sha256 }, signal });
      return this.confirm(e, { bytes: bytes.byteLength, sha256: d.sha256, md5: d.md5, multipartEtag: null }, true);
    }
    if (!e.expected) {
      const partSize = this.store instanceof S3Store ? this.store.partSize : DEFAULT_PART_SIZE;
      const d = await fileDigests(source.path, partSize);
      if (d.bytes !== source.bytes) throw new S3UploadError(`${source.path} holds ${d.bytes} bytes but the manifest records ${source.bytes}; it changed after it was written`);
      e.expected = { bytes: d.bytes, sha256: source.sha256, md5: d.md5, multipartEtag: d.multipartEtag };
    }
    // Already there and identical (an earlier attempt whose answer was lost, or a run that crashed before recording it): not sent twice.
    const before = await this.store.head(key, { signal });
    if (mismatch(before, e.expected) === null) {
      this.stats.alreadyThere++;
      return this.confirm(e, e.expected, false, before!);
    }
    await this.store.put(key, { path: source.path }, { metadata: { sha256: source.sha256 }, signal });
    return this.confirm(e, e.expected, true);
  }

  private async confirm(e: Entry, expected: ExpectedObject, sent: boolean, known?: ObjectInfo): Promise<ObjectInfo> {
    const info = known ?? (await this.store.head(e.job.key, { signal: this.abort.signal }));
    const why = mismatch(info, expected);
    if (why) throw new S3UploadError(`Uploaded ${this.store.uri(e.job.key)} but ${why}`);
    if (sent && 'make' in e.job.source) this.stats.madeUploads++;
    else if (sent) {
      this.stats.uploaded++;
      this.stats.uploadedBytes += expected.bytes;
    }
    await this.onUploaded?.(e.job, info!);
    return info!;
  }
}
