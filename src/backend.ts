/**
 * The TensorFlow.js backend. mechint uses the WebAssembly backend (SIMD, one core in Node), or
 * `tensorflow` when @tensorflow/tfjs-node is loaded by the user. It is chosen before any tensor
 * exists so that the pure-JS cpu backend, and the banner it prints in Node, never start.
 *
 * Importing this module (so importing mechint) makes a backend ready before the import resolves:
 * registering the wasm backend makes it tfjs' first choice, and tfjs refuses ops on a backend that
 * initialises asynchronously until someone awaits it, so without this a user's own `model.fit`
 * would throw "The highest priority backend 'wasm' has not yet been initialized". A backend the
 * user already chose (`tf.setBackend`) is kept; a registered `tensorflow` (tfjs-node) is preferred.
 * The process-wide `uncaughtException`/`unhandledRejection` handlers that the wasm module's
 * Emscripten glue installs are removed, so a user's own uncaught error prints as Node prints it.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { ConfigError } from './errors.js';

export type BackendName = 'wasm' | 'cpu' | 'tensorflow';

let ready: Promise<string> | null = null;

/**
 * Makes sure a backend is active. With no argument: the one already active (or being set), else
 * the `tensorflow` backend when registered, else `wasm`. Repeated calls are cheap.
 */
export async function initBackend(name?: BackendName): Promise<string> {
  if (name === undefined && ready) return ready;
  const chosen = name === undefined ? tf.engine().backendName : undefined;
  const wanted = name ?? chosen ?? (tf.findBackendFactory('tensorflow') ? 'tensorflow' : 'wasm');
  if (!tf.findBackendFactory(wanted)) {
    throw new ConfigError(`Expected \`backend\` to be one of wasm, cpu (or tensorflow with @tensorflow/tfjs-node loaded); got \`${wanted}\``);
  }
  const p = withoutEmscriptenHandlers(async () => {
    // Already active or being set (by the user or an earlier call): wait for it, never start it twice.
    if (tf.engine().backendName !== wanted) {
      const ok = await tf.setBackend(wanted);
      if (!ok) throw new ConfigError(`The TensorFlow.js backend \`${wanted}\` failed to initialise`);
    }
    await tf.ready();
    return wanted;
  });
  if (name === undefined) {
    ready = p;
    // A failed start may be retried by the next call.
    p.catch(() => {
      if (ready === p) ready = null;
    });
  }
  return p;
}

/** Emscripten's Node glue rethrows every uncaught exception and unhandled rejection from inside its own (minified) code. */
const EMSCRIPTEN_HANDLER = /ExitStatus|^function\s*\(\w+\)\s*\{\s*throw\s+\w+;?\s*\}$/;

/**
 * Runs `fn` (which may instantiate the wasm module) and then removes the process handlers it added
 * that are Emscripten's: with them, a user's uncaught error is rethrown from within the wasm glue
 * and Node prints that source line (kilobytes of minified code) before the real message.
 */
async function withoutEmscriptenHandlers<T>(fn: () => Promise<T>): Promise<T> {
  if (typeof process === 'undefined' || typeof process.listeners !== 'function') return fn();
  const events = ['uncaughtException', 'unhandledRejection'];
  const before = new Map(events.map((e) => [e, new Set<unknown>(process.listeners(e as 'uncaughtException'))]));
  try {
    return await fn();
  } finally {
    for (const event of events) {
      for (const listener of process.listeners(event as 'uncaughtException')) {
        if (!before.get(event)!.has(listener) && EMSCRIPTEN_HANDLER.test(Function.prototype.toString.call(listener).trim())) {
          process.removeListener(event, listener);
        }
      }
    }
  }
}

// Ready before the importer's first line runs; a failure is not thrown here (an import that only
// reads shards must not fail) but by the next initBackend() and by tfjs' own first op.
await initBackend().catch(() => undefined);

export { tf };
