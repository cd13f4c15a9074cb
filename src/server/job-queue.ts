/**
 * What the routes need of a job runner: the in-process JobManager (worker threads) and the Redis
 * queue (`mechint serve --queue`, workers anywhere) both provide it. Methods may answer at once or
 * through a promise (Redis answers over the network).
 */
import type { AnalysisTask } from './task.js';
import type { JobCloseOptions, JobState, JobSubmitMeta, JobView } from './jobs.js';

/** What `/health` says of the queue. */
export interface QueueHealth {
  kind: 'memory' | 'redis';
  connected: boolean;
  waiting: number;
  active: number;
}

export interface JobQueue {
  /** Queues a task; 503/429 when the queue cannot take it. */
  submit(task: AnalysisTask, meta: JobSubmitMeta): JobView | Promise<JobView>;
  /** The job's current view; 404 when unknown. */
  view(id: string): JobView | Promise<JobView>;
  /** Waits for the job; resolves to its shaped results or rejects with its error. */
  wait(id: string): Promise<unknown>;
  /** Cancels a queued or running job; a finished job is forgotten. Returns its last view. */
  cancel(id: string): JobView | Promise<JobView>;
  /** Stops taking jobs and releases what the queue holds. */
  close(options?: JobCloseOptions): Promise<void>;
  /** Jobs by state (for /health). */
  counts(): Record<JobState, number> | Promise<Record<JobState, number>>;
}

/** A JobQueue that reports its own health (the Redis queue). */
export interface HealthReporting {
  health(): Promise<QueueHealth>;
}

export function reportsHealth(q: unknown): q is HealthReporting {
  return typeof (q as { health?: unknown } | null)?.health === 'function';
}
