/**
 * Entry of one TopK SAE worker thread (started by startTopK): loads its own tfjs + wasm backend,
 * then runs the commands the main thread posts on the shared control array until told to exit.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { initBackend } from '../backend.js';
import { MechIntError } from '../errors.js';
import type { SliceWorkerData } from './sae-parallel.js';
import { CMD, CTL, PeerFailed, viewShared } from './sae-parallel-shared.js';
import { SliceEngine } from './sae-slice.js';

const port = parentPort;
if (!port) throw new Error('src/analysis/sae-worker is a worker thread entry; it is started by startTopK');
const data = workerData as SliceWorkerData;
await initBackend();
const sh = viewShared(data.buffers);
const { ctl } = sh;
const S = data.config.slices;
const engine = new SliceEngine(sh, data.config, data.slice);
let seen = Atomics.load(ctl, CTL.START);
port.postMessage('ready');

for (;;) {
  while (Atomics.load(ctl, CTL.START) === seen) Atomics.wait(ctl, CTL.START, seen, 1000);
  seen = Atomics.load(ctl, CTL.START);
  const cmd = Atomics.load(ctl, CTL.CMD);
  if (cmd === CMD.EXIT) break;
  try {
    engine.run();
  } catch (err) {
    if (!(err instanceof PeerFailed)) {
      data.errors.postMessage({ code: err instanceof MechIntError ? err.code : undefined, message: err instanceof Error ? err.message : String(err) });
    }
    // Wake everyone: the peers in a barrier and the main thread give up on seeing the flag.
    Atomics.store(ctl, CTL.ERROR, 1);
    Atomics.notify(ctl, CTL.BAR_GEN);
    Atomics.notify(ctl, CTL.DONE);
  }
  if (Atomics.add(ctl, CTL.DONE, 1) === S - 1) Atomics.notify(ctl, CTL.DONE);
}
engine.dispose();
port.close();
