/**
 * A tiny model shaped like the guide's NeuroFMX, shared by the examples: a nested model
 * `mamba_backbone` holding `blocks.0` … `blocks.3`, then `popt` and `head`. Its dotted layer paths
 * are the guide's defaults (`mamba_backbone.blocks.3`, `popt`), so `new MechIntConfig()` works as is.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';

export const INPUT_DIM = 6;
export const OUTPUT_DIM = 2;

/** input [6] → mamba_backbone (4 × dense 8, relu) → popt (dense 4, relu) → head (dense 2). */
export function tinyModel(seed = 1): tf.LayersModel {
  const init = (i: number) => tf.initializers.glorotUniform({ seed: seed * 100 + i });
  const innerIn = tf.input({ shape: [INPUT_DIM] });
  let h: tf.SymbolicTensor = innerIn;
  for (let b = 0; b < 4; b++) {
    h = tf.layers.dense({ units: 8, activation: 'relu', name: `blocks.${b}`, kernelInitializer: init(b) }).apply(h) as tf.SymbolicTensor;
  }
  const backbone = tf.model({ inputs: innerIn, outputs: h, name: 'mamba_backbone' });
  const x = tf.input({ shape: [INPUT_DIM] });
  const hidden = backbone.apply(x) as tf.SymbolicTensor;
  const popt = tf.layers.dense({ units: 4, activation: 'relu', name: 'popt', kernelInitializer: init(10) }).apply(hidden) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: OUTPUT_DIM, name: 'head', kernelInitializer: init(11) }).apply(popt) as tf.SymbolicTensor;
  return tf.model({ inputs: x, outputs: out });
}

/** `n` rows of inputs and targets from a fixed linear rule plus noise (seeded, so runs repeat). */
export function tinyData(n: number, seed = 1): { xs: tf.Tensor2D; ys: tf.Tensor2D } {
  let a = seed >>> 0;
  const rand = () => (a = (a * 1664525 + 1013904223) >>> 0) / 2 ** 32 - 0.5;
  const x = Float32Array.from({ length: n * INPUT_DIM }, rand);
  const y = new Float32Array(n * OUTPUT_DIM);
  for (let i = 0; i < n; i++) {
    y[i * 2] = x[i * 6]! + 0.5 * x[i * 6 + 1]! + 0.1 * rand();
    y[i * 2 + 1] = x[i * 6 + 2]! - x[i * 6 + 3]! + 0.1 * rand();
  }
  return { xs: tf.tensor2d(x, [n, INPUT_DIM]), ys: tf.tensor2d(y, [n, OUTPUT_DIM]) };
}

/** True when the file was run directly (`npx tsx examples/x.ts`), not imported by a test. */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && moduleUrl === pathToFileURL(resolve(process.argv[1])).href;
}
