/**
 * Fingerprints of a model's weights and of eval data: the part of a results key that says
 * "the same model on the same inputs". Layer names are left out (tfjs numbers them per
 * process); the weights' shapes, dtypes and bytes in order are what make two models equal.
 */
import { createHash, type Hash } from 'node:crypto';
import { tf } from '../backend.js';

type Tensors = tf.Tensor | tf.Tensor[] | Record<string, tf.Tensor>;

function hashTensor(h: Hash, t: tf.Tensor): void {
  h.update(`${t.dtype}[${t.shape.join(',')}]`);
  const data = t.dataSync();
  h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
}

function hashTensors(h: Hash, label: string, v: Tensors | undefined): void {
  if (!v) return;
  h.update(`|${label}:`);
  if (v instanceof tf.Tensor) hashTensor(h, v);
  else if (Array.isArray(v)) v.forEach((t) => hashTensor(h, t));
  else for (const k of Object.keys(v).sort()) (h.update(k), hashTensor(h, v[k]!));
}

const cache = new WeakMap<object, Map<string, string>>();

/** The parts of eval data an analysis reads (its results key names only those). */
export type EvalDataPart = 'inputs' | 'targets' | 'corruptedInputs' | 'probeTargets' | 'covariates';
export const ALL_EVAL_DATA_PARTS: readonly EvalDataPart[] = ['inputs', 'targets', 'corruptedInputs', 'probeTargets', 'covariates'];

/** sha256 of the model's weights, computed each time (training changes them in place). */
export function modelFingerprint(model: tf.LayersModel): string {
  const h = createHash('sha256');
  // Compiled or not decides which loss the analyses measure.
  h.update(`losses:${model.lossFunctions?.length ?? 0}|`);
  for (const w of model.getWeights()) hashTensor(h, w);
  return h.digest('hex');
}

export interface FingerprintableEvalData {
  inputs: tf.Tensor | tf.Tensor[];
  targets?: Tensors;
  corruptedInputs?: tf.Tensor | tf.Tensor[];
  probeTargets?: Record<string, { data: Float32Array; shape: number[] }>;
  covariates?: Record<string, { data: Float32Array; shape: number[]; categorical?: boolean }>;
}

/** sha256 of the named parts of eval data, in a fixed order (cached per object and parts). */
export function evalDataFingerprint(e: FingerprintableEvalData, parts: readonly EvalDataPart[] = ALL_EVAL_DATA_PARTS): string {
  const id = [...parts].sort().join(',');
  let known = cache.get(e);
  const hit = known?.get(id);
  if (hit) return hit;
  const h = createHash('sha256');
  if (parts.includes('inputs')) hashTensors(h, 'inputs', e.inputs);
  if (parts.includes('targets')) hashTensors(h, 'targets', e.targets);
  if (parts.includes('corruptedInputs')) hashTensors(h, 'corrupted', e.corruptedInputs);
  if (parts.includes('probeTargets')) {
    for (const k of Object.keys(e.probeTargets ?? {}).sort()) {
      const t = e.probeTargets![k]!;
      h.update(`|probe.${k}[${t.shape.join(',')}]`);
      h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
  }
  if (parts.includes('covariates')) {
    for (const k of Object.keys(e.covariates ?? {}).sort()) {
      const t = e.covariates![k]!;
      h.update(`|covariate.${k}${t.categorical ? ':categorical' : ''}[${t.shape.join(',')}]`);
      h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
  }
  const digest = h.digest('hex');
  if (!known) cache.set(e, (known = new Map()));
  known.set(id, digest);
  return digest;
}
