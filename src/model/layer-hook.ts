/**
 * The one mechanism behind capture and interventions: wrap a layer instance's `call` so functions
 * see (and may replace) its output. It works wherever the layer runs (fit, predict, apply, custom
 * loops, nested models). Several hooks may share a layer and be removed in any order; when the
 * last is removed the layer is restored exactly.
 */
import { tf } from '../backend.js';

type Layer = tf.layers.Layer;
type CallFn = Layer['call'];
export type Kwargs = Parameters<CallFn>[1];

/** Sees a layer's output (and the inputs of that call); returns it, or a replacement of the same structure. */
export type OutputHook = (output: tf.Tensor | tf.Tensor[], kwargs: Kwargs, inputs: tf.Tensor | tf.Tensor[]) => tf.Tensor | tf.Tensor[];

interface Installed {
  hadOwn: boolean;
  original: CallFn;
  hooks: { hook: OutputHook }[];
}

const installed = new WeakMap<Layer, Installed>();

/** Adds a hook to `layer`; hooks run in the order they were added. Returns the undo. */
export function hookLayerCall(layer: Layer, hook: OutputHook): () => void {
  let entry = installed.get(layer);
  if (!entry) {
    const created: Installed = { hadOwn: Object.hasOwn(layer, 'call'), original: layer.call, hooks: [] };
    layer.call = function (this: Layer, inputs, kwargs) {
      let out = created.original.call(this, inputs, kwargs);
      for (const h of [...created.hooks]) out = h.hook(out, kwargs, inputs);
      return out;
    } as CallFn;
    installed.set(layer, created);
    entry = created;
  }
  const handle = { hook };
  entry.hooks.push(handle);
  const e = entry;
  return () => {
    const i = e.hooks.indexOf(handle);
    if (i < 0) return;
    e.hooks.splice(i, 1);
    if (e.hooks.length > 0) return;
    if (e.hadOwn) layer.call = e.original;
    else delete (layer as unknown as Record<string, unknown>).call;
    installed.delete(layer);
  };
}

/** Which tensor of a layer's output is captured: the tensor, the first of a list, or hidden_states/latents/output of a dict. */
export function pickActivation(output: unknown): tf.Tensor | null {
  if (output instanceof tf.Tensor) return output;
  if (Array.isArray(output)) return output[0] instanceof tf.Tensor ? output[0] : null;
  if (output !== null && typeof output === 'object') {
    for (const key of ['hidden_states', 'latents', 'output']) {
      const v = (output as Record<string, unknown>)[key];
      if (v instanceof tf.Tensor) return v;
    }
  }
  return null;
}
