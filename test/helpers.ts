import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { initBackend, tf } from '../src/backend.js';

/** A fresh temporary directory, removed after the test file. */
export async function tempDir(prefix = 'mechint-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * input[4] → nested model `backbone` (dense `blocks.0` [8], dense `blocks.1` [8]) → dense `head` [2].
 * Paths: backbone, backbone.blocks.0, backbone.blocks.1, head.
 */
export async function smallNestedModel(seed = 1): Promise<tf.LayersModel> {
  await initBackend();
  const init = (s: number) => tf.initializers.glorotUniform({ seed: seed * 10 + s });
  const innerIn = tf.input({ shape: [4] });
  const b0 = tf.layers.dense({ units: 8, activation: 'relu', name: 'blocks.0', kernelInitializer: init(1) }).apply(innerIn) as tf.SymbolicTensor;
  const b1 = tf.layers.dense({ units: 8, activation: 'tanh', name: 'blocks.1', kernelInitializer: init(2) }).apply(b0) as tf.SymbolicTensor;
  const backbone = tf.model({ inputs: innerIn, outputs: b1, name: 'backbone' });
  const x = tf.input({ shape: [4] });
  const h = backbone.apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 2, name: 'head', kernelInitializer: init(3) }).apply(h) as tf.SymbolicTensor;
  return tf.model({ inputs: x, outputs: out });
}

/** input [T=5, 3] → dense `proj` [5,6] (a [B,T,D] output) → flatten → dense `out` [1]. */
export async function sequenceModel(): Promise<tf.LayersModel> {
  await initBackend();
  const x = tf.input({ shape: [5, 3] });
  const proj = tf.layers.dense({ units: 6, name: 'proj' }).apply(x) as tf.SymbolicTensor;
  const flat = tf.layers.flatten({ name: 'flat' }).apply(proj) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, name: 'out' }).apply(flat) as tf.SymbolicTensor;
  return tf.model({ inputs: x, outputs: out });
}

export function seededMatrix(rows: number, cols: number, seed = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < out.length; i++) {
    a = (a * 1664525 + 1013904223) >>> 0;
    out[i] = a / 2 ** 32 - 0.5;
  }
  return out;
}

/** `F` random unit-norm directions in R^D, row-major (planted features). */
export function unitDirections(rng: { normal(): number }, F: number, D: number): Float32Array {
  const U = new Float32Array(F * D);
  for (let i = 0; i < F; i++) {
    let s = 0;
    for (let j = 0; j < D; j++) s += (U[i * D + j] = rng.normal()) ** 2;
    for (let j = 0; j < D; j++) U[i * D + j]! /= Math.sqrt(s);
  }
  return U;
}
