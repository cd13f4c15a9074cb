/**
 * The TensorFlow.js backend. mechint uses the WebAssembly backend (SIMD, one core in Node), or
 * `tensorflow` when @tensorflow/tfjs-node is loaded by the user. It is chosen before any tensor
 * exists so that the pure-JS cpu backend, and the banner it prints in Node, never start.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { ConfigError } from './errors.js';

export type BackendName = 'wasm' | 'cpu' | 'tensorflow';

let ready: Promise<string> | null = null;

/**
 * Makes sure a backend is active. With no argument: the `tensorflow` backend when registered,
 * else `wasm`. Repeated calls are cheap.
 */
export async function initBackend(name?: BackendName): Promise<string> {
  if (name === undefined && ready) return ready;
  const wanted = name ?? (tf.findBackendFactory('tensorflow') ? 'tensorflow' : 'wasm');
  if (!tf.findBackendFactory(wanted)) {
    throw new ConfigError(`Expected \`backend\` to be one of wasm, cpu (or tensorflow with @tensorflow/tfjs-node loaded); got \`${wanted}\``);
  }
  const p = (async () => {
    if (tf.getBackend() !== wanted) {
      const ok = await tf.setBackend(wanted);
      if (!ok) throw new ConfigError(`The TensorFlow.js backend \`${wanted}\` failed to initialise`);
    }
    await tf.ready();
    return wanted;
  })();
  if (name === undefined) ready = p;
  return p;
}

export { tf };
