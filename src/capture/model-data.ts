/**
 * The data a model actually receives, seen from inside it, so captured rows can be traced back
 * to their inputs even when `model.fit` shuffles (fit never tells callbacks which rows a batch
 * holds):
 * - inputs: each model input is seen at the layer that consumes it (its call's inputs), for
 *   Sequential, functional and multi-input models alike (execute() feeds inputs to their
 *   consumers directly; the InputLayer itself never runs);
 * - targets: fit and fitDataset hand them only to the loss, so each of `model.lossFunctions` is
 *   wrapped (tfjs looks them up at every step);
 * - ids: a tensor tagged with tagSampleIds (withSampleIds does it for a `{xs, ys, ids}`
 *   dataset) brings its batch's ids along when it reaches its consumer.
 */
import { tf } from '../backend.js';
import { hookLayerCall, type Kwargs } from '../model/layer-hook.js';
import type { CaptureOrigins } from './origins.js';

type Layer = tf.layers.Layer;

interface NodeLike {
  inputTensors: unknown[];
}

const sampleIds = new WeakMap<tf.Tensor, ArrayLike<number>>();

/**
 * Tags a batch tensor (a model input) with the ids of its rows: when it reaches the model, the
 * rows captured from that batch record them (`@ids.<layer>` in the shard).
 */
export function tagSampleIds(batch: tf.Tensor, ids: ArrayLike<number> | tf.Tensor): tf.Tensor {
  const values = ids instanceof tf.Tensor ? (Array.from(ids.dataSync() as ArrayLike<number>) as number[]) : ids;
  sampleIds.set(batch, values);
  return batch;
}

/** The ids tagged on a tensor, if any. */
export function taggedSampleIds(t: tf.Tensor): ArrayLike<number> | undefined {
  return sampleIds.get(t);
}

/** Tags every input tensor of a `{xs, ys}` element (a Tensor, an array, or a map by input name). */
function tagInputs(xs: unknown, ids: ArrayLike<number> | tf.Tensor): void {
  const all = xs instanceof tf.Tensor ? [xs] : Array.isArray(xs) ? xs : xs && typeof xs === 'object' ? Object.values(xs) : [];
  for (const x of all) if (x instanceof tf.Tensor) tagSampleIds(x, ids);
}

/**
 * A dataset of `{xs, ys, ids}` batches as fitDataset wants it (`{xs, ys}`), with each batch's
 * inputs tagged with its ids. fitDataset itself ignores keys other than xs and ys, so `ids` would
 * otherwise be lost; the tag reaches the capture even with prefetching, since it travels on the
 * batch tensor.
 * @example
 * await model.fitDataset(withSampleIds(ds), { epochs: 2, callbacks: [new MechIntCallback(config)] });
 */
export function withSampleIds(dataset: tf.data.Dataset<tf.TensorContainerObject>): tf.data.Dataset<tf.TensorContainerObject> {
  return dataset.map((element) => {
    const { ids, xs, ys } = element as { ids?: unknown; xs: tf.TensorContainer; ys: tf.TensorContainer };
    if (ids instanceof tf.Tensor || Array.isArray(ids) || ArrayBuffer.isView(ids)) {
      tagInputs(xs, ids as ArrayLike<number> | tf.Tensor);
      if (ids instanceof tf.Tensor) ids.dispose();
    }
    return { xs, ys };
  });
}

function inboundNodes(layer: Layer): NodeLike[] {
  return ((layer as unknown as { inboundNodes?: NodeLike[] }).inboundNodes ?? []) as NodeLike[];
}

function childrenOf(model: unknown): Layer[] {
  const layers = (model as { layers?: unknown }).layers;
  return Array.isArray(layers) ? (layers as Layer[]) : [];
}

/** For each model input, a layer that consumes it and where the input sits in that call's inputs. */
function inputConsumers(model: tf.LayersModel): { name: string; layer: Layer; index: number; arity: number }[] {
  const inputs = (model.inputs ?? []) as unknown[];
  const names = model.inputNames ?? [];
  const out: { name: string; layer: Layer; index: number; arity: number }[] = [];
  inputs.forEach((sym, i) => {
    for (const layer of childrenOf(model)) {
      if (layer.getClassName() === 'InputLayer') continue;
      const nodes = inboundNodes(layer);
      // A layer called on more than one node cannot tell which call carried the input.
      if (nodes.length !== 1) continue;
      const index = nodes[0]!.inputTensors.indexOf(sym);
      if (index < 0) continue;
      out.push({ name: names[i] ?? `input_${i}`, layer, index, arity: nodes[0]!.inputTensors.length });
      return;
    }
  });
  return out;
}

export interface ModelDataWatch {
  /** Input names that could be watched. */
  inputs: string[];
  /** Output names whose targets are watched. */
  targets: string[];
  undo: () => void;
}

/**
 * Watches `model`'s inputs (and the ids tagged on them) at their consumers, and its targets at
 * its loss functions, feeding `origins`. `active(kwargs)` says whether a call counts (capture
 * enabled, training only in fit).
 */
export function watchModelData(model: tf.LayersModel | Layer, origins: CaptureOrigins, active: (kwargs: Kwargs) => boolean): ModelDataWatch {
  const undos: (() => void)[] = [];
  const watched: string[] = [];
  // The kwargs of the latest call of an input's consumer: the loss of a validation pass must not
  // count as the target of a training pass.
  let lastKwargs: Kwargs = { training: true };
  const asModel = model as tf.LayersModel;
  if (Array.isArray(asModel.inputs)) {
    for (const c of inputConsumers(asModel)) {
      watched.push(c.name);
      undos.push(
        hookLayerCall(c.layer, (output, kwargs, inputs) => {
          lastKwargs = kwargs;
          if (!active(kwargs)) return output;
          const list = Array.isArray(inputs) ? inputs : [inputs];
          const t = c.arity === 1 && list.length === 1 ? list[0] : list[c.index];
          if (t instanceof tf.Tensor) {
            const ids = sampleIds.get(t);
            if (ids) origins.offer('ids', '', ids);
            origins.offer('inputs', c.name, t);
          }
          return output;
        }),
      );
    }
  }
  const targets: string[] = [];
  const holder = model as unknown as { lossFunctions?: ((yTrue: tf.Tensor, yPred: tf.Tensor) => tf.Tensor)[]; outputNames?: string[] };
  if (origins.keep.targets && Array.isArray(holder.lossFunctions)) {
    const originals = [...holder.lossFunctions];
    const list = holder.lossFunctions;
    originals.forEach((loss, i) => {
      const name = holder.outputNames?.[i] ?? `output_${i}`;
      targets.push(name);
      list[i] = (yTrue: tf.Tensor, yPred: tf.Tensor) => {
        // The loss runs for training and validation alike; only a pass whose rows were kept waits for it.
        if (origins.waiting && active(lastKwargs)) origins.offer('targets', name, yTrue);
        return loss(yTrue, yPred);
      };
    });
    undos.push(() => {
      originals.forEach((loss, i) => {
        list[i] = loss;
      });
    });
  }
  return {
    inputs: watched,
    targets,
    undo: () => {
      for (const u of undos.splice(0).reverse()) u();
    },
  };
}
