/**
 * What the Redis queue and its workers agree on: the queue's name and keys, the Redis URL, the job
 * payload (an AnalysisTask with its typed arrays as base64, so uploads and eval data cross too),
 * errors as JSON in BullMQ's `failedReason`, and progress as the JobManager reports it.
 */
import type { RedisOptions } from 'ioredis';
import { ConfigError, InternalServerError, MechIntError } from '../errors.js';
import type { AnalysisProgress } from '../analysis/types.js';
import type { JobProgress } from './jobs.js';
import type { AnalysisTask } from './task.js';

/** The BullMQ queue mechint uses unless told otherwise. */
export const DEFAULT_QUEUE_NAME = 'mechint-analyses';

/** The key a cancel sets; the worker polls it. Its value is when the job was cancelled (ISO). */
export const cancelKey = (queueName: string, id: string) => `mechint:${queueName}:cancel:${id}`;

/** The job's data in Redis. */
export interface QueuedJobData {
  task: unknown;
  layerName: string | null;
  /** Longest the job may run on a worker, in ms; 0: no limit. */
  timeoutMs: number;
}

/** `redis://[user:pass@]host:port[/db]` (or `rediss://`, TLS) as ioredis options. */
export function redisOptions(url: string): RedisOptions & { label: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`Expected \`--queue\` to be a Redis URL such as redis://127.0.0.1:6379; got \`${url}\``);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new ConfigError(`Expected \`--queue\` to be a redis:// or rediss:// URL; got \`${url}\``);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new ConfigError(`Expected the database in \`--queue ${url}\` to be an integer >= 0; got \`${u.pathname.slice(1)}\``);
  return {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    db,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    label: `redis://${u.hostname}:${u.port || 6379}${db ? `/${db}` : ''}`,
  };
}

const TYPED = '__mechint_typed';
type TypedName = 'Float32Array' | 'Int32Array' | 'Uint8Array';
const CTORS = { Float32Array, Int32Array, Uint8Array } as const;

/** The task as JSON-safe data: typed arrays become `{ __mechint_typed, base64 }`. */
export function encodeTask(task: AnalysisTask): unknown {
  const enc = (v: unknown): unknown => {
    if (v instanceof Float32Array || v instanceof Int32Array || v instanceof Uint8Array) {
      return { [TYPED]: v.constructor.name as TypedName, base64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
    }
    if (Array.isArray(v)) return v.map(enc);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, enc(x)]));
    return v;
  };
  return enc(task);
}

export function decodeTask(data: unknown): AnalysisTask {
  const dec = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(dec);
    if (v !== null && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      const name = o[TYPED];
      if (typeof name === 'string' && name in CTORS && typeof o.base64 === 'string') {
        const bytes = Buffer.from(o.base64, 'base64');
        const Ctor = CTORS[name as TypedName];
        const copy = new Uint8Array(bytes.byteLength);
        copy.set(bytes);
        return new Ctor(copy.buffer, 0, bytes.byteLength / Ctor.BYTES_PER_ELEMENT);
      }
      return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, dec(x)]));
    }
    return v;
  };
  return dec(data) as AnalysisTask;
}

/** An error as the job's failedReason (JSON), so every process reads back its code and status. */
export function encodeError(err: unknown): string {
  const e = err instanceof MechIntError
    ? { code: err.code, statusCode: err.statusCode, message: err.message }
    : { code: 'MECHINT_ERR_INTERNAL', statusCode: 500, message: `The analysis failed: ${err instanceof Error ? err.message : String(err)}` };
  return JSON.stringify(e);
}

export function decodeError(reason: string | undefined): MechIntError {
  try {
    const e = JSON.parse(reason ?? '') as { code?: unknown; statusCode?: unknown; message?: unknown };
    if (typeof e.code === 'string' && typeof e.message === 'string') return new MechIntError(e.code, e.message, { statusCode: typeof e.statusCode === 'number' ? e.statusCode : 500 });
  } catch {
    // not ours: BullMQ's own reason (a stalled job past its limit, a lost lock)
  }
  return new InternalServerError(`The analysis job failed on its worker: ${reason ?? 'no reason given'}`);
}

/** A progress event as the job reports it (0..1 over all layers; epochs count within a layer). */
export function jobProgress(layers: readonly string[], p: AnalysisProgress): JobProgress {
  const i = Math.max(0, layers.indexOf(p.layer));
  const within = p.stage === 'done' ? 1 : p.epochs ? (p.epoch ?? 0) / p.epochs : 0;
  return {
    fraction: Math.min(1, (i + within) / Math.max(1, layers.length)),
    stage: p.stage,
    layer: p.layer,
    ...(p.epoch === undefined ? {} : { epoch: p.epoch }),
    ...(p.epochs === undefined ? {} : { epochs: p.epochs }),
  };
}
