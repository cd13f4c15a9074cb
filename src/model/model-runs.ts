/**
 * Running a model on eval inputs under many interventions at once, for the causal, circuit and
 * steering analyses: the batch is tiled once per variant so one forward pass evaluates several
 * interventions (per-op overhead, not FLOPs, dominates small models on wasm), and each variant's
 * outputs are reduced on the device to a few statistics that are summed over sample chunks.
 */
import { tf } from '../backend.js';
import { batchSizeOf, tileBatch, withInterventionSync, type InterventionFn } from './interventions.js';
import { ConfigError } from '../errors.js';
import { createRng } from '../random.js';

export type ModelInputs = tf.Tensor | tf.Tensor[];

/** Rows `start … start+size−1` of every input. */
export function takeSamples(x: ModelInputs, start: number, size: number): ModelInputs {
  const one = (t: tf.Tensor) => tf.slice(t, [start], [size]);
  return Array.isArray(x) ? x.map(one) : one(x);
}

export function outputList(y: tf.Tensor | tf.Tensor[]): tf.Tensor[] {
  return Array.isArray(y) ? y : [y];
}

/** The first `n` samples of the eval inputs (all when there are fewer), as new tensors the caller disposes. */
export function firstSamples(x: ModelInputs, n: number): ModelInputs {
  return takeSamples(x, 0, Math.min(n, batchSizeOf(x)));
}

export function disposeInputs(x: ModelInputs | null | undefined): void {
  if (x) tf.dispose(Array.isArray(x) ? x : [x]);
}

/** Output names of the model, one per head (`output_0`… when the model has none). */
export function headNames(model: tf.LayersModel): string[] {
  return model.outputs.map((_, i) => model.outputNames?.[i] ?? `output_${i}`);
}

/** Eval targets as one tensor per head, in the model's output order. */
export function targetsByHead(model: tf.LayersModel, targets: tf.Tensor | tf.Tensor[] | Record<string, tf.Tensor>): tf.Tensor[] {
  const names = headNames(model);
  let list: tf.Tensor[];
  if (targets instanceof tf.Tensor) list = [targets];
  else if (Array.isArray(targets)) list = targets;
  else {
    list = names.map((name) => {
      const t = (targets as Record<string, tf.Tensor>)[name];
      if (!t) throw new ConfigError(`Expected \`evalData.targets\` to hold a tensor for output \`${name}\`; got keys ${Object.keys(targets).join(', ')}`);
      return t;
    });
  }
  if (list.length !== names.length) throw new ConfigError(`Expected \`evalData.targets\` to hold ${names.length} tensor(s), one per model output (${names.join(', ')}); got ${list.length}`);
  return list;
}

export type PerSampleLoss = (yTrue: tf.Tensor[], yPred: tf.Tensor[]) => tf.Tensor;

/**
 * Loss per sample ([B]) summed over heads: the model's compiled losses when it was compiled
 * (tfjs has no loss weights, so a plain sum is what training minimises), else mean squared error.
 */
export function perSampleLoss(model: tf.LayersModel): { loss: PerSampleLoss; kind: 'compiled' | 'mse' } {
  const fns = (model as { lossFunctions?: ((a: tf.Tensor, b: tf.Tensor) => tf.Tensor)[] }).lossFunctions;
  const compiled = Array.isArray(fns) && fns.length === model.outputs.length;
  const toPerSample = (l: tf.Tensor, b: number) => (l.rank === 0 ? tf.fill([b], l.dataSync()[0]!) : l.rank === 1 ? l : tf.mean(l, Array.from({ length: l.rank - 1 }, (_, i) => i + 1)));
  const loss: PerSampleLoss = (yTrue, yPred) =>
    tf.addN(
      yPred.map((p, k) => {
        const t = yTrue[k]!;
        const raw = compiled ? fns![k]!(t, p) : tf.squaredDifference(t, p);
        return toPerSample(raw, p.shape[0]!);
      }),
    );
  return { loss, kind: compiled ? 'compiled' : 'mse' };
}

export interface VariantRun {
  /** The layer intervened on. */
  layer: string;
  inputs: ModelInputs;
  nVariants: number;
  /** The intervention for variants first … first+count−1 on samples start … start+size−1 (batch tiled `count` times). */
  intervention: (first: number, count: number, start: number, size: number) => InterventionFn;
  /** Statistics (1-D) of one variant's outputs (one tensor per head, `size` samples); summed over sample chunks. */
  stat: (outputs: tf.Tensor[], start: number, size: number) => tf.Tensor;
  /** Rows (samples × variants) per forward pass. @default 4096 */
  rowsPerPass?: number;
}

/** Runs every variant over all samples; returns, per variant, the statistics summed over sample chunks. */
export function sumOverVariants(model: tf.LayersModel, run: VariantRun): Float64Array[] {
  const n = batchSizeOf(run.inputs);
  const rowsPerPass = run.rowsPerPass ?? 4096;
  const chunk = Math.max(1, Math.min(n, rowsPerPass));
  const perPass = Math.max(1, Math.floor(rowsPerPass / chunk));
  const sums: Float64Array[] = [];
  for (let start = 0; start < n; start += chunk) {
    const size = Math.min(chunk, n - start);
    for (let first = 0; first < run.nVariants; first += perPass) {
      const count = Math.min(perPass, run.nVariants - first);
      const stats = withInterventionSync(model, { [run.layer]: run.intervention(first, count, start, size) }, () =>
        tf.tidy(() => {
          const x = tileBatch(takeSamples(run.inputs, start, size), count);
          const outs = outputList(model.predict(x, { batchSize: count * size }));
          return tf.stack(Array.from({ length: count }, (_, g) => tf.reshape(run.stat(outs.map((o) => tf.slice(o, g * size, size)), start, size), [-1])));
        }),
      );
      const data = stats.dataSync();
      const width = stats.shape[1]!;
      stats.dispose();
      for (let g = 0; g < count; g++) {
        const acc = (sums[first + g] ??= new Float64Array(width));
        for (let j = 0; j < width; j++) acc[j]! += data[g * width + j]!;
      }
    }
  }
  return sums;
}

export const CORRUPTIONS = ['shuffle', 'noise'] as const;
export type Corruption = (typeof CORRUPTIONS)[number];

/**
 * Corrupted counterparts of the clean inputs: `shuffle` gives sample i another sample's inputs
 * (a random cyclic derangement, so no sample keeps its own), `noise` adds Gaussian noise of
 * `noiseScale` × each input's standard deviation.
 */
export function corruptInputs(inputs: ModelInputs, kind: Corruption, seed: number, noiseScale = 1): ModelInputs {
  const n = batchSizeOf(inputs);
  const rng = createRng(seed + 104729);
  if (kind === 'shuffle') {
    if (n < 2) throw new ConfigError('Expected at least 2 eval samples to corrupt by `shuffle`; got 1');
    const order = rng.shuffle(Int32Array.from({ length: n }, (_, i) => i));
    const source = new Int32Array(n);
    for (let i = 0; i < n; i++) source[order[i]!] = order[(i + 1) % n]!;
    const idx = tf.tensor1d(source, 'int32');
    const one = (t: tf.Tensor) => tf.gather(t, idx);
    const out = Array.isArray(inputs) ? inputs.map(one) : one(inputs);
    idx.dispose();
    return out;
  }
  const one = (t: tf.Tensor) =>
    tf.tidy(() => {
      const std = tf.sqrt(tf.moments(t).variance).dataSync()[0]!;
      const noise = Float32Array.from({ length: t.size }, () => rng.normal() * std * noiseScale);
      return tf.add(t, tf.tensor(noise, t.shape));
    });
  return Array.isArray(inputs) ? inputs.map(one) : one(inputs);
}

/** Mean over all leading positions of each unit of row-major activations with `width` units. */
export function unitMeans(data: Float32Array, width: number, abs = false): Float64Array {
  const out = new Float64Array(width);
  const rows = data.length / width;
  for (let r = 0; r < rows; r++) for (let j = 0; j < width; j++) out[j]! += abs ? Math.abs(data[r * width + j]!) : data[r * width + j]!;
  for (let j = 0; j < width; j++) out[j]! /= Math.max(rows, 1);
  return out;
}

/** Indices of the `k` largest scores, largest first (ties by index). */
export function topIndices(scores: ArrayLike<number>, k: number): number[] {
  return Array.from({ length: scores.length }, (_, i) => i)
    .sort((a, b) => scores[b]! - scores[a]! || a - b)
    .slice(0, Math.max(0, k));
}

/** Positive integer option check that names the option, the value and what is allowed. */
export function intOption(name: string, value: unknown, min: number): number {
  if (!Number.isInteger(value) || (value as number) < min) throw new ConfigError(`Expected \`${name}\` to be an integer >= ${min}; got \`${String(value)}\``);
  return value as number;
}

/** Rounds for JSON results: finite numbers with a stable number of significant digits, null otherwise. */
export function round(v: number, digits = 6): number | null {
  return Number.isFinite(v) ? Number(v.toPrecision(digits)) : null;
}
