/**
 * SHA-256 on a worker thread, so hashing a shard never holds up the training loop on the main
 * thread. One small worker (plain JS, evaluated inline) serves every request; it holds the
 * process open only while a request is in flight.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

const WORKER_CODE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', ({ id, buffers }) => {
  const hash = createHash('sha256');
  for (const b of buffers) hash.update(new Uint8Array(b));
  parentPort.postMessage({ id, hex: hash.digest('hex') });
});
`;

/** Below this size the copy and message cost more than hashing in place. */
const OFF_THREAD_MIN_BYTES = 1 << 20;

let worker: Worker | null = null;
let nextId = 0;
const waiting = new Map<number, { resolve: (hex: string) => void; reject: (err: Error) => void }>();

function getWorker(): Worker {
  if (worker) return worker;
  const w = new Worker(WORKER_CODE, { eval: true });
  w.on('message', ({ id, hex }: { id: number; hex: string }) => {
    waiting.get(id)?.resolve(hex);
    waiting.delete(id);
    if (waiting.size === 0) w.unref();
  });
  const fail = (err: Error) => {
    for (const p of waiting.values()) p.reject(err);
    waiting.clear();
    if (worker === w) worker = null;
  };
  w.on('error', fail);
  w.on('exit', () => fail(new Error('the hashing thread stopped')));
  w.unref();
  worker = w;
  return w;
}

/** sha256 (hex) of the concatenated chunks; large inputs are copied to and hashed on a worker thread. */
export function sha256Chunks(chunks: readonly Uint8Array[]): Promise<string> {
  const total = chunks.reduce((a, c) => a + c.byteLength, 0);
  if (total < OFF_THREAD_MIN_BYTES) {
    const hash = createHash('sha256');
    for (const c of chunks) hash.update(c);
    return Promise.resolve(hash.digest('hex'));
  }
  // Copies (a memcpy, several times faster than hashing) are transferred, so the caller's buffers
  // stay usable (a Buffer's slice() would share, and transferring its pool would break it).
  const buffers = chunks.map((c) => {
    const copy = new Uint8Array(c.byteLength);
    copy.set(c);
    return copy.buffer;
  });
  return new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    const w = getWorker();
    w.ref();
    w.postMessage({ id, buffers }, buffers);
  });
}
