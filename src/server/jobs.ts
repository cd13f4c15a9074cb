/**
 * Analysis jobs: each runs in its own worker thread so that SAE training or a large PCA never
 * blocks the event loop. A job is queued, runs, and ends succeeded, failed or cancelled; its
 * progress comes from the analysis' onProgress. Whatever ends a job (its result, an error, cancel,
 * its timeout, close) goes through one place that terminates its worker and frees its slot.
 */
import { randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { STATUS_CODES } from 'node:http';
import { ConfigError, InternalServerError, JobCancelledError, JobNotFoundError, JobTimeoutError, MechIntError, ServerBusyError } from '../errors.js';
import type { AnalysisTask } from './task.js';
import type { WorkerMessage } from './worker.js';
import { checkKeys } from '../options.js';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobProgress {
  /** 0..1 over all layers of the job; epochs count within a layer. */
  fraction: number;
  stage: 'queued' | 'start' | 'epoch' | 'done' | 'error';
  layer?: string;
  epoch?: number;
  epochs?: number;
}

/** A job as `GET /interpret/jobs/:id` reports it. */
export interface JobView {
  job_id: string;
  state: JobState;
  analysis_type: string;
  layer_name: string | null;
  created: string;
  started: string | null;
  finished: string | null;
  progress: JobProgress;
  result?: { analysis_type: string; layer_name: string | null; results: unknown; timestamp: string };
  error?: { statusCode: number; code: string; error: string; message: string };
}

export interface JobManagerOptions {
  /** Workers running at once; the rest wait in the queue. @default max(1, availableParallelism() - 1) */
  readonly concurrency?: number;
  /** Jobs waiting at most; more are refused with 503. @default 100 */
  readonly maxQueued?: number;
  /** How long a finished job's result stays readable. @default 3_600_000 (1 h) */
  readonly retainMs?: number;
  /** Finished jobs kept at most (oldest forgotten first). @default 1000 */
  readonly maxRetained?: number;
  /**
   * Longest a job may run (from when its worker starts), in ms; past it the worker is stopped and
   * the job fails with MECHINT_ERR_JOB_TIMEOUT (504). @default 0 (no limit)
   */
  readonly timeoutMs?: number;
}

export interface JobCloseOptions {
  /** How long running jobs may go on to finish before they are cancelled, in ms. Queued jobs are cancelled at once. @default 0 */
  readonly graceMs?: number;
}

/** Shapes a job's result for the HTTP body: one layer's result, or layer → result when the job had several. */
export type ResultShaper = (outcome: import('../analysis/executor.js').ExecuteOutcome) => unknown;

interface Job {
  id: string;
  task: AnalysisTask;
  layerName: string | null;
  shape: ResultShaper;
  transfer: ArrayBuffer[];
  state: JobState;
  progress: JobProgress;
  created: Date;
  started: Date | null;
  finished: Date | null;
  results: unknown;
  error: MechIntError | null;
  worker: Worker | null;
  timer: NodeJS.Timeout | null;
  signal: AbortSignal | null;
  onAbort: (() => void) | null;
  settled: Promise<void>;
  settle: () => void;
}

const RUNNING_TS = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL(RUNNING_TS ? './worker.ts' : './worker.js', import.meta.url);

/** Built code runs worker.js; under tsx, Node 20 workers do not get the parent's `--import tsx` hooks, so register tsx first. */
function spawnWorker(options: WorkerOptions): Worker {
  if (!RUNNING_TS) return new Worker(WORKER_URL, options);
  const api = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); });`;
  return new Worker(code, { ...options, eval: true });
}

/** What `submit` needs besides the task. */
export interface JobSubmitMeta {
  readonly layerName: string | null;
  readonly shape: ResultShaper;
  /** Buffers that move to the worker instead of being copied. @default [] */
  readonly transfer?: ArrayBuffer[];
  /** Cancels the job when it aborts (e.g. the client of a synchronous request went away). @default none */
  readonly signal?: AbortSignal;
}

const isActive = (job: Job) => job.state === 'queued' || job.state === 'running';

const JOB_MANAGER_KEYS = Object.keys({ concurrency: 1, maxQueued: 1, retainMs: 1, maxRetained: 1, timeoutMs: 1 } satisfies Record<keyof JobManagerOptions, 1>);

export class JobManager {
  private readonly jobs = new Map<string, Job>();
  private readonly queue: Job[] = [];
  /** Worker slots taken: a slot is freed when its thread has exited, not merely been asked to. */
  private running = 0;
  /** Live worker threads and the promise of their exit. */
  private readonly threads = new Map<Worker, Promise<void>>();
  private readonly concurrency: number;
  private readonly maxQueued: number;
  private readonly retainMs: number;
  private readonly maxRetained: number;
  private readonly timeoutMs: number;
  private closing: Promise<void> | null = null;

  constructor(options: JobManagerOptions = {}) {
    checkKeys('JobManager option', options, JOB_MANAGER_KEYS);
    this.concurrency = positiveInt('concurrency', options.concurrency ?? Math.max(1, availableParallelism() - 1));
    this.maxQueued = positiveInt('maxQueued', options.maxQueued ?? 100);
    this.retainMs = options.retainMs ?? 3_600_000;
    this.maxRetained = positiveInt('maxRetained', options.maxRetained ?? 1000);
    this.timeoutMs = nonNegative('timeoutMs', options.timeoutMs ?? 0);
  }

  /** Queues a task; `transfer` buffers move to the worker instead of being copied; `signal` cancels it. */
  submit(task: AnalysisTask, meta: JobSubmitMeta): JobView {
    if (this.closing) throw new ServerBusyError('The server is shutting down; no new jobs are accepted');
    this.sweep();
    if (this.queue.length >= this.maxQueued) throw new ServerBusyError(`${this.queue.length} jobs are already waiting (the limit is ${this.maxQueued}); retry later`);
    if (meta.signal?.aborted) throw new JobCancelledError('The job was cancelled before it started: its client went away');
    let settle!: () => void;
    const settled = new Promise<void>((r) => (settle = r));
    const job: Job = {
      id: randomUUID(),
      task,
      layerName: meta.layerName,
      shape: meta.shape,
      transfer: meta.transfer ?? [],
      state: 'queued',
      progress: { fraction: 0, stage: 'queued' },
      created: new Date(),
      started: null,
      finished: null,
      results: undefined,
      error: null,
      worker: null,
      timer: null,
      signal: meta.signal ?? null,
      onAbort: null,
      settled,
      settle,
    };
    if (job.signal) {
      job.onAbort = () => this.end(job, 'cancelled', undefined, new JobCancelledError(`Job ${job.id} was cancelled: its client went away`));
      job.signal.addEventListener('abort', job.onAbort, { once: true });
    }
    this.jobs.set(job.id, job);
    this.queue.push(job);
    this.pump();
    return this.view(job.id);
  }

  /** The job's current view; 404 when unknown. */
  view(id: string): JobView {
    const job = this.find(id);
    const v: JobView = {
      job_id: job.id,
      state: job.state,
      analysis_type: job.task.analysisType,
      layer_name: job.layerName,
      created: job.created.toISOString(),
      started: job.started?.toISOString() ?? null,
      finished: job.finished?.toISOString() ?? null,
      progress: { ...job.progress },
    };
    if (job.state === 'succeeded') {
      v.result = { analysis_type: job.task.analysisType, layer_name: job.layerName, results: job.results, timestamp: job.finished!.toISOString() };
    }
    if (job.error) {
      v.error = { statusCode: job.error.statusCode, code: job.error.code, error: STATUS_CODES[job.error.statusCode] ?? 'Error', message: job.error.message };
    }
    return v;
  }

  /** Waits for the job; resolves to its shaped results or rejects with its error. */
  async wait(id: string): Promise<unknown> {
    const job = this.find(id);
    await job.settled;
    if (job.state === 'succeeded') return job.results;
    throw job.error ?? new InternalServerError(`Job ${id} ended without a result`);
  }

  /** Cancels a queued or running job (its worker thread is terminated); a finished job is forgotten. Returns the job's last view. */
  cancel(id: string): JobView {
    const job = this.find(id);
    if (isActive(job)) {
      this.end(job, 'cancelled', undefined, new JobCancelledError(`Job ${id} was cancelled`));
      return this.view(id);
    }
    const v = this.view(id);
    this.jobs.delete(id);
    return v;
  }

  /**
   * Stops taking jobs, cancels the queued ones, gives the running ones `graceMs` to finish, cancels
   * the rest and resolves once every worker thread has exited. Calling it again returns the same promise.
   */
  close(options: JobCloseOptions = {}): Promise<void> {
    this.closing ??= this.shutdown(nonNegative('graceMs', options.graceMs ?? 0));
    return this.closing;
  }

  /** Counts by state (for /health). */
  counts(): Record<JobState, number> {
    const c: Record<JobState, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const j of this.jobs.values()) c[j.state]++;
    return c;
  }

  /** Worker threads alive now, including ones told to stop that have not exited yet (for /health and tests). */
  liveWorkers(): number {
    return this.threads.size;
  }

  private async shutdown(graceMs: number): Promise<void> {
    const closed = () => new JobCancelledError('The job was cancelled: the server closed');
    for (const job of [...this.queue]) this.end(job, 'cancelled', undefined, closed());
    const running = [...this.jobs.values()].filter((j) => j.state === 'running');
    if (graceMs > 0 && running.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(running.map((j) => j.settled)), new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    for (const job of running) this.end(job, 'cancelled', undefined, closed());
    await Promise.allSettled([...this.threads.values()]);
  }

  private find(id: string): Job {
    const job = this.jobs.get(id);
    if (!job) throw new JobNotFoundError(`No job \`${id}\`: it never existed or finished more than ${Math.round(this.retainMs / 1000)} s ago`);
    return job;
  }

  private pump(): void {
    while (this.running < this.concurrency && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running++;
      this.start(job);
    }
  }

  private start(job: Job): void {
    job.state = 'running';
    job.started = new Date();
    job.progress = { fraction: 0, stage: 'start' };
    let worker: Worker;
    try {
      worker = spawnWorker({ workerData: job.task, transferList: job.transfer });
    } catch (err) {
      this.running--;
      this.end(job, 'failed', undefined, new InternalServerError(`The analysis worker could not start: ${(err as Error).message}`, { cause: err }));
      return;
    }
    job.worker = worker;
    job.transfer = [];
    // The slot is freed when the thread is gone, so a stopped job never overlaps its successor.
    const exited = new Promise<void>((resolve) =>
      worker.once('exit', () => {
        this.threads.delete(worker);
        this.running--;
        resolve();
        this.pump();
      }),
    );
    this.threads.set(worker, exited);
    if (this.timeoutMs > 0) {
      job.timer = setTimeout(() => this.end(job, 'failed', undefined, new JobTimeoutError(`Job ${job.id} (${job.task.analysisType}) ran longer than the server's limit of ${this.timeoutMs / 1000} s and was stopped; raise \`timeoutMs\` (\`mechint serve --job-timeout\`) or make the job smaller`)), this.timeoutMs);
      job.timer.unref();
    }
    const layers = job.task.layers;
    worker.on('message', (m: WorkerMessage) => {
      if (job.worker !== worker) return; // ended meanwhile
      if (m.type === 'progress') {
        const p = m.progress;
        const i = Math.max(0, layers.indexOf(p.layer));
        const within = p.stage === 'done' ? 1 : p.epochs ? (p.epoch ?? 0) / p.epochs : 0;
        job.progress = {
          fraction: Math.min(1, (i + within) / Math.max(1, layers.length)),
          stage: p.stage,
          layer: p.layer,
          ...(p.epoch === undefined ? {} : { epoch: p.epoch }),
          ...(p.epochs === undefined ? {} : { epochs: p.epochs }),
        };
      } else if (m.type === 'result') {
        let shaped: unknown;
        try {
          shaped = job.shape(m.result);
        } catch (err) {
          this.end(job, 'failed', undefined, new InternalServerError(`The job's result could not be shaped: ${(err as Error).message}`, { cause: err }));
          return;
        }
        this.end(job, 'succeeded', shaped);
      } else {
        this.end(job, 'failed', undefined, new MechIntError(m.error.code, m.error.message, { statusCode: m.error.statusCode }));
      }
    });
    worker.on('error', (err) => this.end(job, 'failed', undefined, new InternalServerError(`The analysis worker crashed: ${err.message}`, { cause: err })));
    worker.on('exit', (code) => this.end(job, 'failed', undefined, new InternalServerError(`The analysis worker exited (code ${code}) without a result`)));
  }

  /** The one way a job ends: records the outcome, stops its timer, signal and worker, and wakes its waiters. */
  private end(job: Job, state: JobState, results?: unknown, error?: MechIntError): void {
    if (!isActive(job)) return;
    const queued = this.queue.indexOf(job);
    if (queued >= 0) this.queue.splice(queued, 1);
    job.state = state;
    job.finished = new Date();
    if (state === 'succeeded') {
      job.results = results;
      job.progress = { ...job.progress, fraction: 1, stage: 'done' };
    }
    job.error = error ?? null;
    if (job.timer) clearTimeout(job.timer);
    job.timer = null;
    if (job.signal && job.onAbort) job.signal.removeEventListener('abort', job.onAbort);
    job.signal = null;
    job.onAbort = null;
    const worker = job.worker;
    job.worker = null;
    // Terminating a thread that already finished is harmless; its 'exit' frees the slot.
    if (worker) worker.terminate().catch(() => undefined);
    job.settle();
  }

  /** Forgets finished jobs past their retention or beyond the count limit, oldest first. */
  private sweep(): void {
    const now = Date.now();
    const finished = [...this.jobs.values()].filter((j) => j.finished !== null);
    let excess = finished.length - this.maxRetained;
    for (const j of finished) {
      if (excess > 0 || now - j.finished!.getTime() > this.retainMs) {
        this.jobs.delete(j.id);
        excess--;
      }
    }
  }
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new ConfigError(`Expected \`${name}\` to be an integer >= 1; got \`${v}\``);
  return v;
}

function nonNegative(name: string, v: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ConfigError(`Expected \`${name}\` to be a finite number >= 0 (ms); got \`${String(v)}\``);
  return v;
}
