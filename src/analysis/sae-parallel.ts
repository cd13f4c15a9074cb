/**
 * Runs a TopK SAE on S latent slices: S worker threads (each with its own tfjs + wasm backend,
 * since tfjs-wasm uses one core in Node), or the calling thread alone when S = 1. The main
 * thread only feeds batches: a step is started and returns at once, so the next batch is
 * shuffled while the workers compute; the next call waits for it. Commands and phases are
 * ordered with Atomics on shared memory (no per-step messages).
 */
import { availableParallelism } from 'node:os';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { MechIntError } from '../errors.js';
import type { SaeParamValues } from './sae-common.js';
import { allocShared, CMD, CTL, sliceStart, viewShared, type SharedBuffers, type SharedConfig, type SharedViews } from './sae-parallel-shared.js';
import { SliceEngine } from './sae-slice.js';

/** What a worker thread is started with. @internal */
export interface SliceWorkerData {
  buffers: SharedBuffers;
  config: SharedConfig;
  slice: number;
  errors: MessagePort;
}

export interface TopKRunner {
  readonly slices: number;
  /** Starts a training step on `n` rows (copied); returns before it finishes. */
  step(batch: Float32Array, n: number): void;
  /** The merged code of `n` rows (copies) and their summed squared reconstruction error. */
  encode(rows: Float32Array, n: number): { values: Float32Array; indices: Int32Array; sqErr: number };
  /** Loss sum (loss × rows) and active-latent count since the last call. */
  takeMetrics(): { loss: number; l0: number };
  /** The current parameters, SAELens layout (copies). */
  values(): SaeParamValues;
  /** The in-process slice (S = 1 only), for the gradient check. */
  readonly local?: SliceEngine;
  dispose(): Promise<void>;
}

/** Worker count when the `workers` option is not given: every core. */
export const defaultSaeWorkers = (): number => availableParallelism();

const RUNNING_TS = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL(RUNNING_TS ? './sae-worker.ts' : './sae-worker.js', import.meta.url);

/** Built code runs sae-worker.js; under tsx, Node 20 workers do not inherit the `--import tsx` hooks, so register tsx first. */
function spawn(workerData: SliceWorkerData): Worker {
  const transferList = [workerData.errors];
  if (!RUNNING_TS) return new Worker(WORKER_URL, { workerData, transferList });
  const api = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); });`;
  return new Worker(code, { eval: true, workerData, transferList });
}

function writeInit(sh: SharedViews, init: SaeParamValues, c: SharedConfig): void {
  const { dim: d, nLatents: L, slices: S } = c;
  for (let s = 0; s < S; s++) {
    const s0 = sliceStart(L, S, s);
    const Ls = sliceStart(L, S, s + 1) - s0;
    for (let q = 0; q < d; q++) for (let i = 0; i < Ls; i++) sh.W_enc[d * s0 + q * Ls + i] = init.W_enc[q * L + s0 + i]!;
  }
  sh.b_enc.set(init.b_enc);
  sh.W_dec.set(init.W_dec);
  sh.b_dec.set(init.b_dec);
}

/** Starts S slices (threads when S > 1) holding `init`; resolves when every thread is ready. */
export async function startTopK(init: SaeParamValues, config: Omit<SharedConfig, 'slices'>, workers: number): Promise<TopKRunner> {
  const c: SharedConfig = { ...config, slices: Math.max(1, Math.min(workers, config.nLatents)) };
  const buffers = allocShared(c);
  const sh = viewShared(buffers);
  writeInit(sh, init, c);
  const S = c.slices;
  const { ctl } = sh;
  let local: SliceEngine | undefined;
  const threads: Worker[] = [];
  const ports: MessagePort[] = [];
  if (S === 1) {
    local = new SliceEngine(sh, c, 0);
  } else {
    const ready: Promise<void>[] = [];
    for (let s = 0; s < S; s++) {
      const ch = new MessageChannel();
      ports.push(ch.port1);
      const w = spawn({ buffers, config: c, slice: s, errors: ch.port2 });
      threads.push(w);
      ready.push(new Promise((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
        w.once('exit', (code) => reject(new MechIntError('MECHINT_ERR_INTERNAL', `SAE worker ${s} exited (${code}) before it was ready`)));
      }));
    }
    try {
      await Promise.all(ready);
    } catch (err) {
      await Promise.all(threads.map((w) => w.terminate()));
      throw err;
    }
    for (const w of threads) {
      w.removeAllListeners();
      // A worker error is reported through its port; this only keeps an unhandled 'error' from throwing.
      w.on('error', () => undefined);
      w.unref();
    }
  }

  let slot = 0;
  let running = false;
  const failure = (): Error => {
    for (const p of ports) {
      const m = receiveMessageOnPort(p)?.message as { code?: string; message: string } | undefined;
      if (m) return new MechIntError(m.code ?? 'MECHINT_ERR_INTERNAL', `SAE worker failed: ${m.message}`);
    }
    return new MechIntError('MECHINT_ERR_INTERNAL', 'An SAE worker failed');
  };
  const wait = () => {
    if (!running) return;
    for (;;) {
      const done = Atomics.load(ctl, CTL.DONE);
      if (done === S) break;
      if (Atomics.load(ctl, CTL.ERROR) !== 0) {
        running = false;
        throw failure();
      }
      Atomics.wait(ctl, CTL.DONE, done, 250);
    }
    running = false;
  };
  const start = (cmd: number, n: number, s: number) => {
    if (Atomics.load(ctl, CTL.ERROR) !== 0) throw failure();
    Atomics.store(ctl, CTL.CMD, cmd);
    Atomics.store(ctl, CTL.NROWS, n);
    Atomics.store(ctl, CTL.SLOT, s);
    if (local) {
      local.run();
      return;
    }
    Atomics.store(ctl, CTL.DONE, 0);
    running = true;
    Atomics.add(ctl, CTL.START, 1);
    Atomics.notify(ctl, CTL.START);
  };
  const put = (rows: Float32Array, n: number) => {
    // The other slot: the running command may still read its own.
    slot = 1 - slot;
    const at = slot * c.maxRows * c.dim;
    sh.x.set(rows.subarray(0, n * c.dim), at);
  };
  const chunks = (n: number, f: (from: number, m: number) => void) => {
    for (let from = 0; from < n; from += c.maxRows) f(from, Math.min(c.maxRows, n - from));
  };

  return {
    slices: S,
    ...(local ? { local } : {}),
    step(batch, n) {
      if (n > c.maxRows) throw new MechIntError('MECHINT_ERR_INTERNAL', `SAE step of ${n} rows exceeds its buffers (${c.maxRows})`);
      put(batch, n);
      wait();
      start(CMD.STEP, n, slot);
    },
    encode(rows, n) {
      const { k } = c;
      const values = new Float32Array(n * k);
      const indices = new Int32Array(n * k);
      let sqErr = 0;
      chunks(n, (from, m) => {
        wait();
        put(rows.subarray(from * c.dim), m);
        start(CMD.ENCODE, m, slot);
        wait();
        values.set(sh.codeV.subarray(0, m * k), from * k);
        indices.set(sh.codeI.subarray(0, m * k), from * k);
        for (let s = 0; s < S; s++) sqErr += sh.stats[s * 4 + 2]!;
      });
      return { values, indices, sqErr };
    },
    takeMetrics() {
      wait();
      let loss = 0;
      for (let s = 0; s < S; s++) {
        loss += sh.stats[s * 4]!;
        sh.stats[s * 4] = 0;
      }
      const l0 = sh.stats[1]!;
      sh.stats[1] = 0;
      return { loss, l0 };
    },
    values() {
      wait();
      start(CMD.VALUES, 0, slot);
      wait();
      const { dim: d, nLatents: L } = c;
      const W_enc = new Float32Array(d * L);
      for (let s = 0; s < S; s++) {
        const s0 = sliceStart(L, S, s);
        const Ls = sliceStart(L, S, s + 1) - s0;
        for (let q = 0; q < d; q++) for (let i = 0; i < Ls; i++) W_enc[q * L + s0 + i] = sh.W_enc[d * s0 + q * Ls + i]!;
      }
      return { W_enc, b_enc: sh.b_enc.slice(), W_dec: sh.W_dec.slice(), b_dec: sh.b_dec.slice() };
    },
    async dispose() {
      try {
        wait();
      } catch {
        // Disposing after a failure: the threads are stopped below either way.
      }
      local?.dispose();
      if (threads.length > 0) {
        Atomics.store(ctl, CTL.CMD, CMD.EXIT);
        Atomics.add(ctl, CTL.START, 1);
        Atomics.notify(ctl, CTL.START);
        await Promise.all(threads.map((w) => w.terminate()));
        for (const p of ports) p.close();
      }
    },
  };
}
