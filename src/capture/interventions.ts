/**
 * Running a model with layers' outputs changed, scoped and always undone: ablation of units,
 * patching in activations recorded from another input, adding a direction. And recording the
 * activations of layers on given inputs (the eval-time counterpart of the sampler).
 */
import { tf } from '../backend.js';
import { CaptureError } from '../errors.js';
import { hookLayerCall } from './layer-hook.js';
import { getLayerByPath } from './modules.js';
import { pickActivation } from './sampler.js';

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
    return await run();
  } finally {
    for (const u of undo.reverse()) u();
  }
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

/** Replaces the output by activations recorded on other inputs (all units, or only `units`). */
export function patchActivations(recorded: { data: Float32Array; shape: number[] }, units?: readonly number[]): InterventionFn {
  return (output) =>
    tf.tidy(() => {
      const batch = output.shape[0]!;
      const per = output.size / batch;
      if (recorded.shape.slice(1).join() !== output.shape.slice(1).join() || recorded.shape[0]! < batch) {
        throw new CaptureError(`Patched activations of shape [${recorded.shape}] do not fit an output of shape [${output.shape}]`);
      }
      const patch = tf.tensor(recorded.data.subarray(0, batch * per), output.shape);
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
