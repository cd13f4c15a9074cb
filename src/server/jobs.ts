/**
 * Analysis jobs: each runs in its own worker thread so that SAE training or a large PCA never
 * blocks the event loop. A job is queued, runs, and ends succeeded, failed or cancelled; its
 * progress comes from the analysis' onProgress. Cancel terminates the worker.
 */
import { randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { ConfigError, InternalServerError, JobCancelledError, JobNotFoundError, MechIntError, ServerBusyError } from '../errors.js';
import type { AnalysisTask } from './task.js';
import type { WorkerMessage } from './worker.js';

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
}

/** Shapes a job's result for the HTTP body: one layer's result, or layer → result when the job had several. */
export type ResultShaper = (layerResults: Record<string, unknown>) => unknown;

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
  settled: Promise<void>;
  settle: () => void;
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 409: 'Conflict', 413: 'Payload Too Large', 422: 'Unprocessable Entity', 500: 'Internal Server Error', 503: 'Service Unavailable' };

const RUNNING_TS = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL(RUNNING_TS ? './worker.ts' : './worker.js', import.meta.url);

/** Built code runs worker.js; under tsx, Node 20 workers do not get the parent's `--import tsx` hooks, so register tsx first. */
function spawnWorker(options: WorkerOptions): Worker {
  if (!RUNNING_TS) return new Worker(WORKER_URL, options);
  const api = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); });`;
  return new Worker(code, { ...options, eval: true });
}

export class JobManager {
  private readonly jobs = new Map<string, Job>();
  private readonly queue: Job[] = [];
  private running = 0;
  private readonly concurrency: number;
  private readonly maxQueued: number;
  private readonly retainMs: number;
  private readonly maxRetained: number;
  private closed = false;

  constructor(options: JobManagerOptions = {}) {
    this.concurrency = positiveInt('concurrency', options.concurrency ?? Math.max(1, availableParallelism() - 1));
    this.maxQueued = positiveInt('maxQueued', options.maxQueued ?? 100);
    this.retainMs = options.retainMs ?? 3_600_000;
    this.maxRetained = positiveInt('maxRetained', options.maxRetained ?? 1000);
  }

  /** Queues a task; `transfer` buffers move to the worker instead of being copied. */
  submit(task: AnalysisTask, meta: { layerName: string | null; shape: ResultShaper; transfer?: ArrayBuffer[] }): JobView {
    if (this.closed) throw new ServerBusyError('The server is shutting down; no new jobs are accepted');
    this.sweep();
    if (this.queue.length >= this.maxQueued) throw new ServerBusyError(`${this.queue.length} jobs are already waiting (the limit is ${this.maxQueued}); retry later`);
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
      settled,
      settle,
    };
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
      v.error = { statusCode: job.error.statusCode, code: job.error.code, error: STATUS_TEXT[job.error.statusCode] ?? 'Error', message: job.error.message };
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

  /** Cancels a queued or running job; a finished job is forgotten. Returns the job's last view. */
  cancel(id: string): JobView {
    const job = this.find(id);
    if (job.state === 'queued' || job.state === 'running') {
      const wasRunning = job.state === 'running';
      const idx = this.queue.indexOf(job);
      if (idx >= 0) this.queue.splice(idx, 1);
      this.finish(job, 'cancelled', undefined, new JobCancelledError(`Job ${id} was cancelled`));
      if (wasRunning) {
        void job.worker?.terminate();
        this.running--;
        this.pump();
      }
      return this.view(id);
    }
    const v = this.view(id);
    this.jobs.delete(id);
    return v;
  }

  /** Terminates every worker; queued and running jobs end cancelled. */
  async close(): Promise<void> {
    this.closed = true;
    const workers: Promise<number>[] = [];
    for (const job of this.jobs.values()) {
      if (job.state === 'queued' || job.state === 'running') {
        if (job.worker) workers.push(job.worker.terminate());
        this.finish(job, 'cancelled', undefined, new JobCancelledError(`Job ${job.id} was cancelled: the server closed`));
      }
    }
    this.queue.length = 0;
    await Promise.allSettled(workers);
  }

  /** Counts by state (for /health). */
  counts(): Record<JobState, number> {
    const c: Record<JobState, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const j of this.jobs.values()) c[j.state]++;
    return c;
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
    const worker = spawnWorker({ workerData: job.task, transferList: job.transfer });
    job.worker = worker;
    job.transfer = [];
    const layers = job.task.layers;
    const done = (state: JobState, results?: unknown, error?: MechIntError) => {
      if (job.state !== 'running') return; // cancelled meanwhile
      this.finish(job, state, results, error);
      this.running--;
      void worker.terminate();
      this.pump();
    };
    worker.on('message', (m: WorkerMessage) => {
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
        done('succeeded', job.shape(m.result));
      } else {
        done('failed', undefined, new MechIntError(m.error.code, m.error.message, { statusCode: m.error.statusCode }));
      }
    });
    worker.on('error', (err) => done('failed', undefined, new InternalServerError(`The analysis worker crashed: ${err.message}`, { cause: err })));
    worker.on('exit', (code) => done('failed', undefined, new InternalServerError(`The analysis worker exited (code ${code}) without a result`)));
  }

  private finish(job: Job, state: JobState, results?: unknown, error?: MechIntError): void {
    job.state = state;
    job.finished = new Date();
    job.worker = null;
    if (state === 'succeeded') {
      job.results = results;
      job.progress = { ...job.progress, fraction: 1, stage: 'done' };
    }
    job.error = error ?? null;
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
