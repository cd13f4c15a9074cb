/**
 * Reads an activation file as float32 tensors on a worker thread, so that parsing an untrusted
 * or very large file (inflating, unpickling, checksums, dtype conversion) never holds up the
 * event loop that serves other requests. One thread serves the requests in turn and is unref'd
 * while idle; a read that runs past its time limit is stopped by terminating the thread.
 */
import { Worker } from 'node:worker_threads';
import { FormatError, LimitError, MechIntError, UnsafePickleError } from '../errors.js';
import { toFloat32, type DType } from './dtypes.js';
import { openActivationFile, type OpenActivationOptions } from './open-any.js';
import type { ActivationFileFormat } from './read-any.js';

export interface Float32Tensor {
  /** The dtype stored in the file (the values are float32 whatever it was). */
  dtype: DType;
  shape: number[];
  /** Row-major values, in a buffer of their own (transferable). */
  values: Float32Array;
}

export interface Float32File {
  format: ActivationFileFormat;
  bytes: number;
  metadata: Record<string, string>;
  tensors: Record<string, Float32Tensor>;
}

export interface ThreadReadOptions extends OpenActivationOptions {
  /** Stop the read (LimitError) after this long. @default 120000 */
  timeoutMs?: number;
}

/** @internal */
export interface ThreadRequest { id: number; path: string; options: OpenActivationOptions }
/** @internal */
export type ThreadResponse = { id: number; file: Float32File; error?: undefined } | { id: number; error: { code: string; statusCode: number; message: string }; file?: undefined };

/** Reads every tensor of a file as float32 on the calling thread (what the worker runs). */
export async function readFloat32Here(path: string, options: OpenActivationOptions = {}): Promise<Float32File> {
  const file = await openActivationFile(path, options);
  try {
    const tensors: Record<string, Float32Tensor> = {};
    for (const name of file.tensorNames()) {
      const t = await file.readTensor(name);
      // A fresh buffer per tensor: F32 data is used as it is, other dtypes are converted.
      const values = toFloat32(t);
      const own = values.byteOffset === 0 && values.buffer.byteLength === values.byteLength ? values : values.slice();
      Object.defineProperty(tensors, name, { value: { dtype: t.dtype, shape: t.shape, values: own }, enumerable: true, writable: true, configurable: true });
    }
    return { format: file.format, bytes: file.bytes, metadata: file.metadata, tensors };
  } finally {
    await file.close();
  }
}

const RUNNING_TS = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL(RUNNING_TS ? './read-worker.ts' : './read-worker.js', import.meta.url);

/** Built code runs read-worker.js; under tsx, Node 20 workers do not get the parent's `--import tsx` hooks, so register tsx first. */
function spawn(): Worker {
  if (!RUNNING_TS) return new Worker(WORKER_URL);
  const api = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); });`;
  return new Worker(code, { eval: true });
}

interface Pending {
  request: ThreadRequest;
  timeoutMs: number;
  resolve: (file: Float32File) => void;
  reject: (err: Error) => void;
}

const ERRORS: Record<string, (message: string) => MechIntError> = {
  MECHINT_ERR_FORMAT: (m) => new FormatError(m),
  MECHINT_ERR_LIMIT: (m) => new LimitError(m),
  MECHINT_ERR_UNSAFE_PICKLE: (m) => new UnsafePickleError(m),
};

let worker: Worker | null = null;
let current: (Pending & { timer: NodeJS.Timeout; worker: Worker }) | null = null;
const queue: Pending[] = [];
let nextId = 0;

function getWorker(): Worker {
  if (worker) return worker;
  const w = spawn();
  w.on('message', (m: ThreadResponse) => {
    if (!current || current.worker !== w || current.request.id !== m.id) return;
    const job = current;
    finish();
    if (m.file) job.resolve(m.file);
    else job.reject(ERRORS[m.error.code]?.(m.error.message) ?? new MechIntError(m.error.code, m.error.message, { statusCode: m.error.statusCode }));
  });
  const fail = (err: Error): void => {
    if (worker === w) worker = null;
    const job = current;
    if (job && job.worker === w) {
      finish();
      job.reject(err);
    }
  };
  w.on('error', (err) => fail(new MechIntError('MECHINT_ERR_INTERNAL', `The file-reading thread failed: ${err.message}`, { cause: err })));
  w.on('exit', (code) => fail(new MechIntError('MECHINT_ERR_INTERNAL', `The file-reading thread exited (code ${code})`)));
  w.unref();
  worker = w;
  return w;
}

function finish(): void {
  if (current) clearTimeout(current.timer);
  current = null;
  pump();
}

function pump(): void {
  if (current) return;
  const job = queue.shift();
  if (!job) {
    worker?.unref();
    return;
  }
  const w = getWorker();
  w.ref();
  const timer = setTimeout(() => {
    if (current?.request.id !== job.request.id) return;
    current = null;
    worker = null;
    void w.terminate();
    job.reject(new LimitError(`${job.request.options.source ?? job.request.path}: reading the file took longer than ${job.timeoutMs} ms; it was stopped`));
    pump();
  }, job.timeoutMs);
  current = { ...job, timer, worker: w };
  w.postMessage(job.request);
}

/**
 * Reads every tensor of an activation file as float32, off the event loop.
 * @example
 * const { format, tensors } = await readFloat32OffThread(upload.path, { source: 'activations.pt' });
 */
export function readFloat32OffThread(path: string, options: ThreadReadOptions = {}): Promise<Float32File> {
  const { timeoutMs = 120_000, ...rest } = options;
  return new Promise((resolve, reject) => {
    queue.push({ request: { id: nextId++, path, options: rest }, timeoutMs, resolve, reject });
    pump();
  });
}
