/**
 * The features a circuit is drawn between: raw units or SAE latents of the upstream layer
 * (written as C + X·P so X can be differentiated), and units, SAE latents or output units
 * downstream (read per sample as the mean over positions).
 */
import { tf } from '../backend.js';
import { predictAll, type RecordedActivation } from '../model/interventions.js';
import { ConfigError } from '../errors.js';
import { headNames, outputList, topIndices, unitMeans, type ModelInputs } from '../model/model-runs.js';
import { encodeSae, type SaeWeights } from './sae-weights.js';

/** Upstream features: the layer's output is C + X·P with X [rows, m], P [m, D]. */
export interface Upstream {
  kind: 'units' | 'sae_latents';
  ids: number[];
  means: number[];
  x0: Float32Array;
  P: Float32Array;
  C: Float32Array;
  shape: number[];
}

/** Downstream features, read per sample as the mean over positions → [N, F]. */
export interface Downstream {
  kind: 'units' | 'sae_latents' | 'output_units';
  /** Layer path, or head name per feature for outputs. */
  layers: string[];
  ids: number[];
  means: number[];
  /** Values as differentiated (latents: pre-activations on the clean run's active set). */
  readGrad: (t: tf.Tensor | tf.Tensor[], copies: number) => tf.Tensor;
  /** Values as they are (latents: the SAE's own encoding). */
  readTrue: (t: tf.Tensor | tf.Tensor[]) => tf.Tensor;
}

const rowsOf = (r: RecordedActivation) => r.data.length / r.shape.at(-1)!;

export async function upstreamFeatures(act: RecordedActivation, sae: SaeWeights | null, max: number): Promise<Upstream> {
  const D = act.shape.at(-1)!;
  const rows = rowsOf(act);
  let ids: number[];
  let means: number[];
  let x0: Float32Array;
  let Pm: Float32Array;
  if (sae) {
    if (sae.dim !== D) throw new ConfigError(`The SAE for this layer has dim ${sae.dim} but the layer has ${D} units`);
    const z = await encodeSae(sae, act.data, rows);
    const m = unitMeans(z, sae.nLatents);
    ids = topIndices(m, max).filter((i) => m[i]! > 0);
    means = ids.map((i) => m[i]!);
    x0 = new Float32Array(rows * ids.length);
    for (let r = 0; r < rows; r++) ids.forEach((id, k) => (x0[r * ids.length + k] = z[r * sae.nLatents + id]!));
    Pm = new Float32Array(ids.length * D);
    ids.forEach((id, k) => Pm.set(sae.W_dec.subarray(id * D, (id + 1) * D), k * D));
  } else {
    const mAbs = unitMeans(act.data, D, true);
    const m = unitMeans(act.data, D);
    ids = (D <= max ? Array.from({ length: D }, (_, i) => i) : topIndices(mAbs, max)).sort((a, b) => a - b);
    means = ids.map((i) => m[i]!);
    x0 = new Float32Array(rows * ids.length);
    for (let r = 0; r < rows; r++) ids.forEach((id, k) => (x0[r * ids.length + k] = act.data[r * D + id]!));
    Pm = new Float32Array(ids.length * D);
    ids.forEach((id, k) => (Pm[k * D + id] = 1));
  }
  // C = A − X₀·P, computed in float64 so that C + X₀·P reproduces A to float32 precision.
  const C = new Float32Array(act.data.length);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < D; j++) {
      let s = act.data[r * D + j]!;
      for (let k = 0; k < ids.length; k++) s -= x0[r * ids.length + k]! * Pm[k * D + j]!;
      C[r * D + j] = s;
    }
  }
  return { kind: sae ? 'sae_latents' : 'units', ids, means, x0, P: Pm, C, shape: act.shape };
}

/**
 * Mean over positions of selected columns: [N, …, D] → [N, F]. A one-hot matMul rather than
 * gather, because gather's gradient needs UnsortedSegmentSum, which the wasm backend lacks.
 */
function meanColumns(t: tf.Tensor, cols: number[]): tf.Tensor {
  const D = t.shape.at(-1)!;
  const pick = new Float32Array(D * cols.length);
  cols.forEach((c, k) => (pick[c * cols.length + k] = 1));
  const picked = tf.matMul(tf.reshape(t, [-1, D]), tf.tensor2d(pick, [D, cols.length]));
  return tf.mean(tf.reshape(picked, [t.shape[0]!, -1, cols.length]), 1);
}

export async function downstreamFeatures(model: tf.LayersModel, layer: string | null, act: RecordedActivation | null, sae: SaeWeights | null, inputs: ModelInputs, max: number): Promise<Downstream> {
  if (layer === null || act === null) {
    const outs = predictAll(model, inputs);
    const heads = headNames(model);
    const per = Math.max(1, Math.ceil(max / outs.length));
    const chosen = outs.map((o) => {
      const d = o.shape.at(-1)!;
      const mAbs = unitMeans(o.data, d, true);
      return (d <= per ? Array.from({ length: d }, (_, i) => i) : topIndices(mAbs, per)).sort((a, b) => a - b);
    });
    const layers: string[] = [];
    const ids: number[] = [];
    const means: number[] = [];
    chosen.forEach((cols, k) => {
      const m = unitMeans(outs[k]!.data, outs[k]!.shape.at(-1)!);
      for (const c of cols) {
        layers.push(heads[k]!);
        ids.push(c);
        means.push(m[c]!);
      }
    });
    const read = (t: tf.Tensor | tf.Tensor[]) => {
      const list = outputList(t);
      return tf.concat(chosen.map((cols, k) => meanColumns(list[k]!, cols)), 1);
    };
    return { kind: 'output_units', layers, ids, means, readGrad: (t) => read(t), readTrue: read };
  }
  const D = act.shape.at(-1)!;
  const rows = rowsOf(act);
  if (!sae) {
    const mAbs = unitMeans(act.data, D, true);
    const m = unitMeans(act.data, D);
    const ids = (D <= max ? Array.from({ length: D }, (_, i) => i) : topIndices(mAbs, max)).sort((a, b) => a - b);
    const read = (t: tf.Tensor | tf.Tensor[]) => meanColumns(outputList(t)[0]!, ids);
    return { kind: 'units', layers: ids.map(() => layer), ids, means: ids.map((i) => m[i]!), readGrad: (t) => read(t), readTrue: read };
  }
  if (sae.dim !== D) throw new ConfigError(`The SAE for \`${layer}\` has dim ${sae.dim} but the layer has ${D} units`);
  const z = await encodeSae(sae, act.data, rows);
  const m = unitMeans(z, sae.nLatents);
  const ids = topIndices(m, max).filter((i) => m[i]! > 0);
  const L = sae.nLatents;
  // Which latents were active on each clean row: the gradient of a TopK/ReLU latent is that of its pre-activation where it fires.
  const active = new Float32Array(rows * ids.length);
  for (let r = 0; r < rows; r++) ids.forEach((id, k) => (active[r * ids.length + k] = z[r * L + id]! > 0 ? 1 : 0));
  const encSel = new Float32Array(D * ids.length);
  for (let j = 0; j < D; j++) ids.forEach((id, k) => (encSel[j * ids.length + k] = sae.W_enc[j * L + id]!));
  const bEncSel = Float32Array.from(ids, (id) => sae.b_enc[id]!);
  const flat = (t: tf.Tensor) => tf.sub(tf.reshape(t, [-1, D]), tf.tensor1d(sae.b_dec));
  const perSample = (v: tf.Tensor, n: number) => tf.mean(tf.reshape(v, [n, -1, v.shape[1]!]), 1);
  return {
    kind: 'sae_latents', layers: ids.map(() => layer), ids, means: ids.map((i) => m[i]!),
    readGrad: (t, copies) => {
      const x = outputList(t)[0]!;
      const pre = tf.add(tf.matMul(flat(x), tf.tensor2d(encSel, [D, ids.length])), tf.tensor1d(bEncSel));
      const mask = tf.tile(tf.tensor2d(active, [rows, ids.length]), [copies, 1]);
      return perSample(tf.mul(pre, mask), x.shape[0]!);
    },
    readTrue: (t) => {
      const x = outputList(t)[0]!;
      const pre = tf.add(tf.matMul(flat(x), tf.tensor2d(sae.W_enc, [D, L])), tf.tensor1d(sae.b_enc));
      let zAll = tf.relu(pre);
      if (sae.architecture === 'topk' && sae.k < L) {
        const kth = tf.slice(tf.topk(pre, sae.k).values, [0, sae.k - 1], [-1, 1]);
        zAll = tf.mul(zAll, tf.cast(tf.greaterEqual(pre, kth), 'float32'));
      }
      return perSample(tf.gather(zAll, tf.tensor1d(ids, 'int32'), 1), x.shape[0]!);
    },
  };
}
