/**
 * Running a model with layers' outputs changed, scoped and always undone: ablation of units,
 * patching in activations recorded from another input, adding a direction. And recording the
 * activations of layers on given inputs (the eval-time counterpart of the sampler).
 */
import { tf } from '../backend.js';
import { CaptureError } from '../errors.js';
import { hookLayerCall, pickActivation } from './layer-hook.js';
import { getLayerByPath } from './layer-paths.js';

type Model = tf.LayersModel | tf.layers.Layer;

/** Maps a layer's output (batch first, units last) to what the rest of the model sees. */
export type InterventionFn = (output: tf.Tensor) => tf.Tensor;

/**
 * Runs `run` with each layer's output replaced by `fn(output)`; the layers are restored when it
 * returns or throws, so afterwards the model computes exactly what it did before.
 * @example
 * const out = await withIntervention(model, { 'mamba_backbone.blocks.3': ablateUnits([4, 7]) }, () => model.predict(x));
 */
export async function withIntervention<T>(model: Model, interventions: Record<string, InterventionFn>, run: () => T | Promise<T>): Promise<T> {
  const undo = installInterventions(model, interventions);
  try {
    return await run();
  } finally {
    for (const u of undo.reverse()) u();
  }
}

/**
 * `withIntervention` for synchronous code: everything stays on one gradient tape, so `run` may
 * be differentiated with `tf.grad` (circuit attributions differentiate through it).
 */
export function withInterventionSync<T>(model: Model, interventions: Record<string, InterventionFn>, run: () => T): T {
  const undo = installInterventions(model, interventions);
  try {
    return run();
  } finally {
    for (const u of undo.reverse()) u();
  }
}

function installInterventions(model: Model, interventions: Record<string, InterventionFn>): (() => void)[] {
  const undo: (() => void)[] = [];
  try {
    for (const [path, fn] of Object.entries(interventions)) {
      const layer = getLayerByPath(model, path);
      undo.push(
        hookLayerCall(layer, (output) => {
          const t = pickActivation(output);
          if (!t) throw new CaptureError(`Layer \`${path}\` returned no tensor to intervene on`);
          const changed = fn(t);
          if (changed.shape.join() !== t.shape.join()) {
            throw new CaptureError(`The intervention on \`${path}\` returned shape [${changed.shape}] for an output of shape [${t.shape}]`);
          }
          return Array.isArray(output) ? [changed, ...output.slice(1)] : changed;
        }),
      );
    }
  } catch (err) {
    for (const u of undo.reverse()) u();
    throw err;
  }
  return undo;
}

function unitMask(units: readonly number[], width: number, path = 'layer'): Float32Array {
  const keep = new Float32Array(width).fill(1);
  for (const u of units) {
    if (!Number.isInteger(u) || u < 0 || u >= width) throw new CaptureError(`Unit ${u} is outside \`${path}\`, which has ${width} units`);
    keep[u] = 0;
  }
  return keep;
}

/** Sets the given units (last dimension) to zero, or to `values` (e.g. their mean activation). */
export function ablateUnits(units: readonly number[], values?: ArrayLike<number>): InterventionFn {
  return (output) =>
    tf.tidy(() => {
      const width = output.shape.at(-1)!;
      const keep = tf.tensor1d(unitMask(units, width));
      const kept = tf.mul(output, keep);
      if (!values) return kept;
      if (values.length !== width) throw new CaptureError(`Mean ablation needs ${width} values; got ${values.length}`);
      return tf.add(kept, tf.mul(tf.sub(1, keep), tf.tensor1d(Float32Array.from(values))));
    });
}

/**
 * Replaces the output by activations recorded on other inputs (all units, or only `units`).
 * Successive calls take successive rows of the recording, so it lines up with `predict`'s batches.
 */
export function patchActivations(recorded: { data: Float32Array; shape: number[] }, units?: readonly number[]): InterventionFn {
  let offset = 0;
  const total = recorded.shape[0]!;
  return (output) =>
    tf.tidy(() => {
      const batch = output.shape[0]!;
      const per = output.size / batch;
      if (offset + batch > total) offset = 0;
      if (recorded.shape.slice(1).join() !== output.shape.slice(1).join() || total < batch) {
        throw new CaptureError(`Patched activations of shape [${recorded.shape}] do not fit an output of shape [${output.shape}]`);
      }
      const patch = tf.tensor(recorded.data.subarray(offset * per, (offset + batch) * per), output.shape);
      offset += batch;
      if (!units) return patch;
      const keep = tf.tensor1d(unitMask(units, output.shape.at(-1)!));
      return tf.add(tf.mul(output, keep), tf.mul(patch, tf.sub(1, keep)));
    });
}

/** Adds `strength × direction` to every position's units (steering along a feature). */
export function addDirection(direction: ArrayLike<number>, strength: number): InterventionFn {
  return (output) =>
    tf.tidy(() => {
      const width = output.shape.at(-1)!;
      if (direction.length !== width) throw new CaptureError(`A direction of ${direction.length} values cannot be added to ${width} units`);
      return tf.add(output, tf.mul(tf.tensor1d(Float32Array.from(direction)), strength));
    });
}

export interface RecordedActivation {
  /** Row-major values of the full output, batch first. */
  data: Float32Array;
  shape: number[];
}

function sliceBatch(x: tf.Tensor | tf.Tensor[], start: number, size: number): tf.Tensor | tf.Tensor[] {
  const one = (t: tf.Tensor) => tf.slice(t, [start], [size]);
  return Array.isArray(x) ? x.map(one) : one(x);
}

export function batchSizeOf(x: tf.Tensor | tf.Tensor[]): number {
  return (Array.isArray(x) ? x[0]! : x).shape[0]!;
}

/**
 * Runs `model.predict` on `inputs` (in batches) and returns each layer's output over all inputs,
 * optionally under interventions. The model is left as it was.
 */
export async function recordActivations(
  model: tf.LayersModel,
  layers: readonly string[],
  inputs: tf.Tensor | tf.Tensor[],
  options: { batchSize?: number; interventions?: Record<string, InterventionFn> } = {},
): Promise<Record<string, RecordedActivation>> {
  const n = batchSizeOf(inputs);
  const batchSize = options.batchSize ?? 256;
  const parts: Record<string, Float32Array[]> = {};
  const shapes: Record<string, number[]> = {};
  const undo: (() => void)[] = [];
  try {
    for (const path of layers) {
      parts[path] = [];
      undo.push(
        hookLayerCall(getLayerByPath(model, path), (output) => {
          const t = pickActivation(output);
          if (t) {
            shapes[path] = t.shape.slice(1) as number[];
            parts[path]!.push(t.dataSync() as Float32Array);
          }
          return output;
        }),
      );
    }
    await withIntervention(model, options.interventions ?? {}, () => {
      for (let start = 0; start < n; start += batchSize) {
        const size = Math.min(batchSize, n - start);
        tf.tidy(() => {
          model.predict(sliceBatch(inputs, start, size));
        });
      }
    });
  } finally {
    for (const u of undo) u();
  }
  const out: Record<string, RecordedActivation> = {};
  for (const path of layers) {
    const chunks = parts[path]!;
    if (chunks.length === 0 || !shapes[path]) throw new CaptureError(`Layer \`${path}\` did not run when the model was called on the eval inputs`);
    const total = chunks.reduce((a, c) => a + c.length, 0);
    const data = new Float32Array(total);
    let offset = 0;
    for (const c of chunks) {
      data.set(c, offset);
      offset += c.length;
    }
    out[path] = { data, shape: [n, ...shapes[path]!] };
  }
  return out;
}

/** `model.predict` on all inputs in batches, concatenated (the first output when there are several). */
export function predictAll(model: tf.LayersModel, inputs: tf.Tensor | tf.Tensor[], batchSize = 256): RecordedActivation[] {
  const n = batchSizeOf(inputs);
  const chunks: Float32Array[][] = [];
  let shapes: number[][] = [];
  for (let start = 0; start < n; start += batchSize) {
    const size = Math.min(batchSize, n - start);
    const outs = tf.tidy(() => {
      const y = model.predict(sliceBatch(inputs, start, size));
      return Array.isArray(y) ? y : [y];
    });
    shapes = outs.map((o) => o.shape.slice(1) as number[]);
    chunks.push(outs.map((o) => o.dataSync() as Float32Array));
    tf.dispose(outs);
  }
  return shapes.map((shape, k) => {
    const total = chunks.reduce((a, c) => a + c[k]!.length, 0);
    const data = new Float32Array(total);
    let offset = 0;
    for (const c of chunks) {
      data.set(c[k]!, offset);
      offset += c[k]!.length;
    }
    return { data, shape: [n, ...shape] };
  });
}

/** `inputs` repeated `times` along the batch: copy g holds rows g·B … (g+1)·B − 1. */
export function tileBatch(inputs: tf.Tensor | tf.Tensor[], times: number): tf.Tensor | tf.Tensor[] {
  const one = (t: tf.Tensor) => (times === 1 ? t.clone() : tf.tile(t, [times, ...t.shape.slice(1).map(() => 1)]));
  return Array.isArray(inputs) ? inputs.map(one) : one(inputs);
}

/** Views an output of a batch tiled `variants` times as [variants, positions, units]. */
function asVariants(output: tf.Tensor, variants: number): tf.Tensor3D {
  const width = output.shape.at(-1)!;
  if (output.shape[0]! % variants !== 0) {
    // model.predict splits its input into batches of 32 by default, which breaks the tiling.
    throw new CaptureError(`An output of batch ${output.shape[0]} cannot be split into ${variants} variants: run the whole tiled batch at once (model.predict(x, { batchSize: rows }) or model.apply)`);
  }
  return tf.reshape(output, [variants, -1, width]);
}

/**
 * For a batch tiled once per variant (see `tileBatch`): in variant g the units where
 * `masks[g·D + u]` is 1 take the replacement, the others keep their value. The replacement is
 * zero (none given), one value per unit (a mean), or the activations of one copy of the batch
 * (`{ data, shape }`, e.g. recorded on clean inputs for patching). One forward pass then
 * evaluates every variant.
 */
export function replaceUnitsPerVariant(masks: Float32Array, variants: number, replacement?: ArrayLike<number> | RecordedActivation): InterventionFn {
  return (output) =>
    tf.tidy(() => {
      const width = output.shape.at(-1)!;
      if (masks.length !== variants * width) throw new CaptureError(`Variant masks hold ${masks.length} values; ${variants} variants of ${width} units need ${variants * width}`);
      const v = asVariants(output, variants);
      const m = tf.tensor3d(masks, [variants, 1, width]);
      let r: tf.Tensor;
      if (replacement === undefined) r = tf.zeros([1, 1, width]);
      else if ('data' in replacement && 'shape' in replacement) {
        const per = v.shape[1]! * width;
        if (replacement.data.length !== per) throw new CaptureError(`Replacement activations of shape [${replacement.shape}] do not fit one copy of an output of shape [${output.shape}]`);
        r = tf.tensor3d(replacement.data, [1, v.shape[1]!, width]);
      } else {
        if (replacement.length !== width) throw new CaptureError(`A replacement of ${replacement.length} values does not fit ${width} units`);
        r = tf.tensor3d(Float32Array.from(replacement), [1, 1, width]);
      }
      return tf.reshape(tf.add(tf.mul(v, tf.sub(1, m)), tf.mul(r, m)), output.shape);
    });
}

/** For a batch tiled once per variant: variant g gets `strengths[g] × direction` added at every position. */
export function addDirectionPerVariant(direction: ArrayLike<number>, strengths: readonly number[]): InterventionFn {
  return (output) =>
    tf.tidy(() => {
      const width = output.shape.at(-1)!;
      if (direction.length !== width) throw new CaptureError(`A direction of ${direction.length} values cannot be added to ${width} units`);
      const v = asVariants(output, strengths.length);
      const shift = tf.mul(tf.tensor3d(Float32Array.from(strengths), [strengths.length, 1, 1]), tf.tensor3d(Float32Array.from(direction), [1, 1, width]));
      return tf.reshape(tf.add(v, shift), output.shape);
    });
}

/**
 * Calls `see` with every output of the layer at `path` (inside the model's call, so on the same
 * gradient tape) and leaves the output unchanged. Returns the undo.
 */
export function watchLayer(model: Model, path: string, see: (output: tf.Tensor) => void): () => void {
  return hookLayerCall(getLayerByPath(model, path), (output) => {
    const t = pickActivation(output);
    if (!t) throw new CaptureError(`Layer \`${path}\` returned no tensor to read`);
    see(t);
    return output;
  });
}

/**
 * The given layers in the order the model runs them on `inputs` (the first call of each counts);
 * layers that do not run are left out. Analyses that relate "consecutive" layers use this, so a
 * config listing `popt` before `perceiver` still pairs them in the direction data flows.
 */
export function executionOrder(model: tf.LayersModel, layers: readonly string[], inputs: tf.Tensor | tf.Tensor[]): string[] {
  const order: string[] = [];
  const undo = layers.map((path) =>
    hookLayerCall(getLayerByPath(model, path), (output) => {
      if (!order.includes(path)) order.push(path);
      return output;
    }),
  );
  try {
    tf.tidy(() => {
      model.predict(sliceBatch(inputs, 0, Math.min(1, batchSizeOf(inputs))));
    });
  } finally {
    for (const u of undo) u();
  }
  return order;
}
