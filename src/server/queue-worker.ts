/**
 * The BullMQ worker `mechint worker` runs: takes analysis jobs from Redis and runs each through
 * `runTask` (the one executor) in this process, one process for every job (no thread per job).
 * Progress goes to Redis (job.updateProgress); the result is the job's return value (the
 * ExecuteOutcome, JSON-safe); an analysis error fails the job at once, anything else (a crash, a
 * lost lock) is retried up to the job's attempts. A worker killed mid-job loses its lock and
 * BullMQ's stalled-job check gives the job to another worker.
 *
 * Cancel and timeout: the worker polls the job's cancel key; a cancelled or timed-out job fails
 * at once (MECHINT_ERR_JOB_CANCELLED, MECHINT_ERR_JOB_TIMEOUT) and its analysis stops at its next
 * progress event (an analysis between progress events runs on to that point, its result discarded).
 */
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { ConfigError, JobCancelledError, JobTimeoutError, MechIntError } from '../errors.js';
import { jsonSafe } from '../report/results.js';
import { checkKeys } from '../options.js';
import { DEFAULT_QUEUE_NAME, cancelKey, decodeTask, encodeError, jobProgress, redisOptions, type QueuedJobData } from './queue-codec.js';
import { runTask } from './task.js';

export interface QueueWorkerOptions {
  /** Redis: `redis://HOST:PORT[/DB]`. */
  readonly url: string;
  /** The BullMQ queue's name (the server's). @default 'mechint-analyses' */
  readonly queueName?: string;
  /** Jobs this process runs at once (they share its event loop and CPU). @default 1 */
  readonly concurrency?: number;
  /** How long a job's lock lasts without renewal, in ms: a worker dead this long gives its job back. @default 30_000 */
  readonly lockDurationMs?: number;
  /** How often workers look for jobs whose worker died, in ms. @default 30_000 */
  readonly stalledIntervalMs?: number;
  /** How often a job may be given back by a dead worker before it fails. @default 2 */
  readonly maxStalledCount?: number;
  /** How often a running job's cancel key is read, in ms. @default 250 */
  readonly cancelPollMs?: number;
  /** Called when a job starts and when it ends (logging). */
  readonly onJob?: (e: { id: string; analysis: string; state: 'active' | 'succeeded' | 'failed'; ms: number; error?: string }) => void;
}

const KEYS = Object.keys({ url: 1, queueName: 1, concurrency: 1, lockDurationMs: 1, stalledIntervalMs: 1, maxStalledCount: 1, cancelPollMs: 1, onJob: 1 } satisfies Record<keyof QueueWorkerOptions, 1>);

export interface QueueWorkerHandle {
  /** Resolves once the worker takes jobs. */
  ready(): Promise<void>;
  /** Stops taking jobs; lets running ones finish unless `force`. */
  close(force?: boolean): Promise<void>;
}

/** Starts a worker on the queue; it runs until closed. */
export function startQueueWorker(options: QueueWorkerOptions): QueueWorkerHandle {
  checkKeys('queue worker option', options, KEYS);
  const { label: _label, ...conn } = redisOptions(options.url);
  const name = options.queueName ?? DEFAULT_QUEUE_NAME;
  const concurrency = positive('concurrency', options.concurrency ?? 1);
  const pollMs = positive('cancelPollMs', options.cancelPollMs ?? 250);
  let closed = false;
  const retryStrategy = (times: number) => (closed ? null : Math.min(100 * times, 1000));
  const flags = new Redis({ ...conn, maxRetriesPerRequest: 1, retryStrategy });
  flags.on('error', () => undefined);

  const processor = async (job: Job): Promise<unknown> => {
    const data = job.data as QueuedJobData;
    const id = job.id!;
    let stop: MechIntError | null = null;
    let reject!: (e: unknown) => void;
    const stopped = new Promise<never>((_, r) => (reject = r));
    const halt = (e: MechIntError) => {
      stop ??= e;
      reject(stop);
    };
    const check = async () => {
      if ((await flags.exists(cancelKey(name, id)).catch(() => 0)) === 1) halt(new JobCancelledError(`Job ${id} was cancelled`));
    };
    await check();
    if (stop) throw new UnrecoverableError(encodeError(stop));
    const poll = setInterval(() => void check(), pollMs);
    const timer = data.timeoutMs > 0
      ? setTimeout(() => halt(new JobTimeoutError(`Job ${id} (${job.name}) ran longer than the server's limit of ${data.timeoutMs / 1000} s and was stopped; raise \`timeoutMs\` (\`mechint serve --job-timeout\`) or make the job smaller`)), data.timeoutMs)
      : null;
    try {
      const task = decodeTask(data.task);
      const run = runTask(task, {
        onProgress: (p) => {
          if (stop) throw stop;
          void job.updateProgress(jobProgress(task.layers, p) as unknown as object).catch(() => undefined);
        },
      });
      run.catch(() => undefined); // its rejection after a stop is expected
      const outcome = await Promise.race([run, stopped]);
      return jsonSafe(outcome);
    } catch (err) {
      // An analysis error is the answer (no retry); anything else may be this machine's, so it is retried.
      if (err instanceof MechIntError && err.code !== 'MECHINT_ERR_INTERNAL') throw new UnrecoverableError(encodeError(err));
      throw new Error(encodeError(err));
    } finally {
      clearInterval(poll);
      if (timer) clearTimeout(timer);
    }
  };

  const worker = new Worker(name, processor, {
    connection: { ...conn, retryStrategy },
    concurrency,
    lockDuration: positive('lockDurationMs', options.lockDurationMs ?? 30_000),
    stalledInterval: positive('stalledIntervalMs', options.stalledIntervalMs ?? 30_000),
    maxStalledCount: options.maxStalledCount ?? 2,
    autorun: true,
  });
  worker.on('error', () => undefined);
  const started = new Map<string, number>();
  worker.on('active', (job) => {
    started.set(job.id!, Date.now());
    options.onJob?.({ id: job.id!, analysis: job.name, state: 'active', ms: 0 });
  });
  worker.on('completed', (job) => {
    options.onJob?.({ id: job.id!, analysis: job.name, state: 'succeeded', ms: Date.now() - (started.get(job.id!) ?? Date.now()) });
    started.delete(job.id!);
  });
  worker.on('failed', (job, err) => {
    if (!job) return;
    options.onJob?.({ id: job.id!, analysis: job.name, state: 'failed', ms: Date.now() - (started.get(job.id!) ?? Date.now()), error: err.message });
    started.delete(job.id!);
  });
  return {
    ready: () => worker.waitUntilReady().then(() => undefined),
    close: async (force = false) => {
      closed = true;
      await worker.close(force);
      flags.disconnect();
    },
  };
}

function positive(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new ConfigError(`Expected \`${name}\` to be an integer >= 1; got \`${String(v)}\``);
  return v;
}
