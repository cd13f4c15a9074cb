/**
 * `RedisJobQueue`: analysis jobs in Redis through BullMQ, run by `mechint worker` processes anywhere
 * that reaches Redis and the cache. State, progress, results and errors live in Redis, so a new
 * server process on the same Redis reports the jobs an old one queued.
 *
 * A job that this process queued is shaped and its computed results recorded (the routes' `shape`)
 * once, when this process first sees it finished (the completed event, a wait or a view). Cancel
 * sets a key the worker polls; a cancelled job is reported cancelled at once. Every Redis call is
 * bounded by `commandTimeoutMs`: an outage is a 503 (MECHINT_ERR_QUEUE_UNAVAILABLE), never a hang,
 * and the connection comes back by itself.
 */
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import { Queue, QueueEvents, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { ConfigError, InternalServerError, JobCancelledError, JobNotFoundError, MechIntError, QueueFullError, QueueUnavailableError, ServerBusyError } from '../errors.js';
import type { ExecuteOutcome } from '../analysis/executor.js';
import { checkKeys } from '../options.js';
import type { JobCloseOptions, JobProgress, JobState, JobSubmitMeta, JobView, ResultShaper } from './jobs.js';
import type { HealthReporting, JobQueue, QueueHealth } from './job-queue.js';
import { DEFAULT_QUEUE_NAME, cancelKey, decodeError, encodeTask, redisOptions, type QueuedJobData } from './queue-codec.js';
import type { AnalysisTask } from './task.js';

export interface RedisJobQueueOptions {
  /** Redis: `redis://HOST:PORT[/DB]`. */
  readonly url: string;
  /** The BullMQ queue's name (workers must use the same). @default 'mechint-analyses' */
  readonly queueName?: string;
  /** Jobs waiting at most; more are refused with 429 (MECHINT_ERR_QUEUE_FULL). @default 1000 */
  readonly maxQueued?: number;
  /** Longest a job may run on its worker, in ms; past it the job fails with MECHINT_ERR_JOB_TIMEOUT. @default 0 (no limit) */
  readonly timeoutMs?: number;
  /** Runs of a job at most (a worker that dies mid-job or an internal error retries it; an analysis error does not). @default 3 */
  readonly attempts?: number;
  /** Wait before a retry, in ms (exponential). @default 500 */
  readonly backoffMs?: number;
  /** How long finished jobs stay in Redis, in ms. @default 3_600_000 (1 h) */
  readonly retainMs?: number;
  /** Finished jobs kept at most. @default 1000 */
  readonly maxRetained?: number;
  /** Longest any Redis command may take before the request is answered 503, in ms. @default 1500 */
  readonly commandTimeoutMs?: number;
}

const KEYS = Object.keys({ url: 1, queueName: 1, maxQueued: 1, timeoutMs: 1, attempts: 1, backoffMs: 1, retainMs: 1, maxRetained: 1, commandTimeoutMs: 1 } satisfies Record<keyof RedisJobQueueOptions, 1>);

const STATES: Record<string, JobState> = { waiting: 'queued', delayed: 'queued', prioritized: 'queued', 'waiting-children': 'queued', active: 'running', completed: 'succeeded', failed: 'failed' };

type Waker = () => void;

export class RedisJobQueue implements JobQueue, HealthReporting {
  readonly label: string;
  private readonly client: Redis;
  /** QueueEvents' blocking connection (its own, so that close can always end it). */
  private readonly eventsClient: Redis;
  private readonly queue: Queue;
  private readonly events: QueueEvents;
  private readonly name: string;
  private readonly maxQueued: number;
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly retainMs: number;
  private readonly maxRetained: number;
  private readonly commandTimeoutMs: number;
  /** Shapers of jobs this process queued, until the job is seen finished. */
  private readonly shapers = new Map<string, ResultShaper>();
  /** Shaped results of finished jobs this process has seen (bounded). */
  private readonly shaped = new Map<string, unknown>();
  private readonly wakers = new Map<string, Set<Waker>>();
  private closing: Promise<void> | null = null;

  constructor(options: RedisJobQueueOptions) {
    checkKeys('RedisJobQueue option', options, KEYS);
    const { label, ...conn } = redisOptions(options.url);
    this.label = label;
    this.name = options.queueName ?? DEFAULT_QUEUE_NAME;
    this.maxQueued = int('maxQueued', options.maxQueued ?? 1000, 1);
    this.timeoutMs = int('timeoutMs', options.timeoutMs ?? 0, 0);
    this.attempts = int('attempts', options.attempts ?? 3, 1);
    this.backoffMs = int('backoffMs', options.backoffMs ?? 500, 0);
    this.retainMs = int('retainMs', options.retainMs ?? 3_600_000, 1000);
    this.maxRetained = int('maxRetained', options.maxRetained ?? 1000, 1);
    this.commandTimeoutMs = int('commandTimeoutMs', options.commandTimeoutMs ?? 1500, 100);
    // Reconnect every second at most while open; once closed, no connection (nor BullMQ's copies of it) reconnects.
    const retryStrategy = (times: number) => (this.closing ? null : Math.min(100 * times, 1000));
    // Fail fast while Redis is away (no offline queue, bounded commands), reconnect in the background.
    this.client = new Redis({ ...conn, enableOfflineQueue: false, connectTimeout: this.commandTimeoutMs, commandTimeout: this.commandTimeoutMs, maxRetriesPerRequest: 1, retryStrategy });
    this.client.on('error', () => undefined); // reported through health() and each request's 503
    this.queue = new Queue(this.name, { connection: this.client });
    this.queue.on('error', () => undefined);
    this.eventsClient = new Redis({ ...conn, connectTimeout: this.commandTimeoutMs, maxRetriesPerRequest: null, retryStrategy });
    this.eventsClient.on('error', () => undefined);
    this.events = new QueueEvents(this.name, { connection: this.eventsClient });
    this.events.on('error', () => undefined);
    this.events.on('completed', ({ jobId }) => this.finished(jobId));
    this.events.on('failed', ({ jobId }) => this.finished(jobId));
  }

  /** Resolves once Redis answers (within `ms`), else rejects with QueueUnavailableError. */
  async ready(ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.client.status !== 'ready') {
      if (Date.now() > deadline) throw new QueueUnavailableError(`Cannot reach Redis at ${this.label} within ${ms / 1000} s; start it or fix \`--queue\``);
      await sleep(50);
    }
    await this.guard('ping', () => this.client.ping());
    await this.events.waitUntilReady();
  }

  async submit(task: AnalysisTask, meta: JobSubmitMeta): Promise<JobView> {
    if (this.closing) throw new ServerBusyError('The server is shutting down; no new jobs are accepted');
    if (meta.signal?.aborted) throw new JobCancelledError('The job was cancelled before it started: its client went away');
    const waiting = await this.guard('count the waiting jobs', () => this.queue.getJobCountByTypes('waiting', 'delayed', 'prioritized'));
    if (waiting >= this.maxQueued) throw new QueueFullError(`${waiting} jobs are already waiting in Redis (the limit is ${this.maxQueued}); retry later or start more \`mechint worker\`s`);
    const id = randomUUID();
    const data: QueuedJobData = { task: encodeTask(task), layerName: meta.layerName, timeoutMs: this.timeoutMs };
    this.shapers.set(id, meta.shape);
    try {
      await this.guard('queue the job', () =>
        this.queue.add(task.analysisType, data, {
          jobId: id,
          attempts: this.attempts,
          backoff: { type: 'exponential', delay: this.backoffMs },
          removeOnComplete: { age: Math.ceil(this.retainMs / 1000), count: this.maxRetained },
          removeOnFail: { age: Math.ceil(this.retainMs / 1000), count: this.maxRetained },
        }),
      );
    } catch (err) {
      this.shapers.delete(id);
      throw err;
    }
    if (meta.signal) {
      const signal = meta.signal;
      const onAbort = () => void this.cancel(id).catch(() => undefined);
      signal.addEventListener('abort', onAbort, { once: true });
      void this.wait(id).catch(() => undefined).finally(() => signal.removeEventListener('abort', onAbort));
    }
    return this.view(id);
  }

  async view(id: string): Promise<JobView> {
    const { job, state, cancelledAt } = await this.load(id);
    const data = job.data as QueuedJobData;
    const task = data.task as { analysisType?: string; layers?: string[] };
    const finishedOn = job.finishedOn ? new Date(job.finishedOn).toISOString() : null;
    const v: JobView = {
      job_id: id,
      state,
      analysis_type: task.analysisType ?? job.name,
      layer_name: data.layerName,
      created: new Date(job.timestamp).toISOString(),
      started: job.processedOn ? new Date(job.processedOn).toISOString() : null,
      finished: cancelledAt ?? finishedOn,
      progress: progressOf(job, state),
    };
    if (state === 'succeeded') {
      v.result = { analysis_type: v.analysis_type, layer_name: data.layerName, results: this.shape(id, job), timestamp: finishedOn! };
    }
    const error = state === 'cancelled' ? new JobCancelledError(`Job ${id} was cancelled`) : state === 'failed' ? decodeError(job.failedReason) : null;
    if (error) v.error = { statusCode: error.statusCode, code: error.code, error: STATUS_CODES[error.statusCode] ?? 'Error', message: error.message };
    return v;
  }

  async wait(id: string): Promise<unknown> {
    for (;;) {
      const { job, state } = await this.load(id);
      if (state === 'succeeded') return this.shape(id, job);
      if (state === 'cancelled') throw new JobCancelledError(`Job ${id} was cancelled`);
      if (state === 'failed') throw decodeError(job.failedReason);
      if (this.closing) throw new JobCancelledError('The job was left to its worker: the server closed');
      // The completed/failed event wakes this at once; the poll covers events lost in an outage.
      await new Promise<void>((resolve) => {
        const set = this.wakers.get(id) ?? new Set<Waker>();
        this.wakers.set(id, set);
        const wake = () => {
          clearTimeout(timer);
          set.delete(wake);
          if (set.size === 0) this.wakers.delete(id);
          resolve();
        };
        const timer = setTimeout(wake, 1000);
        set.add(wake);
      });
    }
  }

  async cancel(id: string): Promise<JobView> {
    const { job, state } = await this.load(id);
    if (state === 'queued' || state === 'running') {
      // The worker polls this key: a queued job is dropped when it is reached, a running one stops at its next progress event.
      await this.guard('cancel the job', () => this.client.set(cancelKey(this.name, id), new Date().toISOString(), 'PX', this.retainMs));
      this.shapers.delete(id);
      this.wake(id);
      return this.view(id);
    }
    const v = await this.view(id);
    await this.guard('forget the job', () => job.remove()).catch(() => undefined);
    await this.guard('forget the job', () => this.client.del(cancelKey(this.name, id))).catch(() => undefined);
    return v;
  }

  async counts(): Promise<Record<JobState, number>> {
    const c = await this.guard('count the jobs', () => this.queue.getJobCounts('waiting', 'delayed', 'prioritized', 'active', 'completed', 'failed'));
    return { queued: (c.waiting ?? 0) + (c.delayed ?? 0) + (c.prioritized ?? 0), running: c.active ?? 0, succeeded: c.completed ?? 0, failed: c.failed ?? 0, cancelled: 0 };
  }

  async health(): Promise<QueueHealth> {
    try {
      const c = await this.counts();
      return { kind: 'redis', connected: true, waiting: c.queued, active: c.running };
    } catch {
      return { kind: 'redis', connected: false, waiting: 0, active: 0 };
    }
  }

  /** Stops taking jobs and disconnects; queued and running jobs stay in Redis for the workers. */
  close(_options: JobCloseOptions = {}): Promise<void> {
    this.closing ??= (async () => {
      for (const id of [...this.wakers.keys()]) this.wake(id);
      // BullMQ's close waits for a connection that may never come (Redis down): bounded, then both are ended here.
      await Promise.race([Promise.allSettled([this.events.close(), this.queue.close()]), sleep(this.commandTimeoutMs)]);
      this.eventsClient.disconnect();
      this.client.disconnect();
    })();
    return this.closing;
  }

  private async load(id: string): Promise<{ job: Job; state: JobState; cancelledAt: string | null }> {
    const missing = () => new JobNotFoundError(`No job \`${id}\` in Redis (${this.label}): it never existed or finished more than ${Math.round(this.retainMs / 1000)} s ago`);
    let job = await this.guard('read the job', () => this.queue.getJob(id));
    if (!job) throw missing();
    const [raw, cancelledAt] = await this.guard('read the job', () => Promise.all([job!.getState(), this.client.get(cancelKey(this.name, id))]));
    // The job may have finished between reading it and its state: read it again for its result or reason.
    if ((raw === 'completed' && job.returnvalue == null) || (raw === 'failed' && !job.failedReason)) {
      job = await this.guard('read the job', () => this.queue.getJob(id));
      if (!job) throw missing();
    }
    let state: JobState = STATES[raw] ?? 'queued';
    if (cancelledAt !== null && state !== 'succeeded') state = 'cancelled';
    else if (state === 'failed' && decodeError(job.failedReason).code === 'MECHINT_ERR_JOB_CANCELLED') state = 'cancelled';
    return { job, state, cancelledAt: state === 'cancelled' ? cancelledAt : null };
  }

  /** The job's shaped results: this process' shaper (which records what was computed) the first time, else the generic shape. */
  private shape(id: string, job: Job): unknown {
    if (this.shaped.has(id)) return this.shaped.get(id);
    const outcome = job.returnvalue as ExecuteOutcome | null;
    if (outcome === null || typeof outcome !== 'object') throw new InternalServerError(`Job ${id} completed without a result in Redis`);
    const data = job.data as QueuedJobData;
    const shaper = this.shapers.get(id);
    this.shapers.delete(id);
    const type = (data.task as { analysisType: string }).analysisType;
    const results = shaper ? shaper(outcome) : data.layerName === null ? outcome.analyses[type] : outcome.analyses[type]?.[data.layerName];
    this.shaped.set(id, results);
    if (this.shaped.size > this.maxRetained) this.shaped.delete(this.shaped.keys().next().value!);
    return results;
  }

  /** A job finished somewhere: wake its waiters, and record its results if this process queued it. */
  private finished(id: string): void {
    this.wake(id);
    if (!this.shapers.has(id)) return;
    void this.load(id).then(({ job, state }) => {
      if (state === 'succeeded') this.shape(id, job);
      else if (state === 'failed' || state === 'cancelled') this.shapers.delete(id);
    }, () => undefined);
  }

  private wake(id: string): void {
    for (const w of [...(this.wakers.get(id) ?? [])]) w();
  }

  /** Runs a Redis call within commandTimeoutMs; an outage or a timeout is QueueUnavailableError. */
  private async guard<T>(what: string, f: () => Promise<T>): Promise<T> {
    const unavailable = (why: string, cause?: unknown) =>
      new QueueUnavailableError(`Redis at ${this.label} is unavailable (${why}) and could not ${what}; retry once it is back`, { cause });
    if (this.client.status !== 'ready') throw unavailable(`connection ${this.client.status}`);
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        f(),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(unavailable(`no answer within ${this.commandTimeoutMs} ms`)), this.commandTimeoutMs))),
      ]);
    } catch (err) {
      if (err instanceof MechIntError) throw err;
      throw unavailable((err as Error).message, err);
    } finally {
      clearTimeout(timer);
    }
  }
}

function progressOf(job: Job, state: JobState): JobProgress {
  const p = job.progress;
  if (state === 'succeeded') return { ...(typeof p === 'object' && p !== null ? (p as unknown as JobProgress) : {}), fraction: 1, stage: 'done' };
  if (typeof p === 'object' && p !== null && 'fraction' in p) return p as unknown as JobProgress;
  return state === 'queued' ? { fraction: 0, stage: 'queued' } : { fraction: 0, stage: 'start' };
}

function int(name: string, v: number, min: number): number {
  if (!Number.isInteger(v) || v < min) throw new ConfigError(`Expected \`${name}\` to be an integer >= ${min}; got \`${String(v)}\``);
  return v;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
