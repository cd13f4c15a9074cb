/**
 * Eval data as one safetensors file, so a server can run the model analyses (causal, circuit,
 * steering, probe) on the same held-out inputs a script used: tensors `inputs` (or `inputs.0`,
 * `inputs.1`, … for several model inputs), `targets` (or `targets.0`, …), `corrupted_inputs`
 * (optional), `probe.<name>` for probe targets and `covariates.<name>` for covariates (the names
 * of categorical ones listed, comma-separated, in the metadata key `categorical_covariates`).
 * `mechint demo` writes one; `mechint serve --eval-data FILE` reads it.
 */
import { readFile } from 'node:fs/promises';
import { tf } from '../backend.js';
import type { EvalData } from '../analysis/types.js';
import { FormatError } from '../errors.js';
import { fromFloat32, toFloat32, type RawTensor } from '../formats/dtypes.js';
import { parseSafetensors, serializeSafetensors } from '../formats/safetensors.js';
import { writeFileAtomic } from '../storage/atomic.js';

const COVARIATE_PREFIX = 'covariates.';
const CATEGORICAL_KEY = 'categorical_covariates';

type Many = tf.Tensor | tf.Tensor[] | Record<string, tf.Tensor>;

function many(prefix: string, value: Many | undefined, out: Record<string, RawTensor>): void {
  if (!value) return;
  const put = (name: string, t: tf.Tensor) => (out[name] = fromFloat32(Float32Array.from(t.dataSync()), [...t.shape]));
  if (value instanceof tf.Tensor) put(prefix, value);
  else if (Array.isArray(value)) value.forEach((t, i) => put(`${prefix}.${i}`, t));
  else for (const [k, t] of Object.entries(value)) put(`${prefix}.${k}`, t);
}

export async function writeEvalDataFile(path: string, data: EvalData): Promise<void> {
  const tensors: Record<string, RawTensor> = {};
  many('inputs', data.inputs, tensors);
  many('targets', data.targets, tensors);
  many('corrupted_inputs', data.corruptedInputs, tensors);
  for (const [name, t] of Object.entries(data.probeTargets ?? {})) tensors[`probe.${name}`] = fromFloat32(Float32Array.from(t.data), t.shape);
  const categorical: string[] = [];
  for (const [name, c] of Object.entries(data.covariates ?? {})) {
    if (name.includes(',')) throw new FormatError(`Covariate name \`${name}\` contains a comma; rename it to write ${path}`);
    tensors[`${COVARIATE_PREFIX}${name}`] = fromFloat32(Float32Array.from(c.data), c.shape);
    if (c.categorical) categorical.push(name);
  }
  const metadata: Record<string, string> = { format: 'mechint-eval-data' };
  if (categorical.length > 0) metadata[CATEGORICAL_KEY] = categorical.join(',');
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

function collect(tensors: Record<string, RawTensor>, prefix: string): tf.Tensor | tf.Tensor[] | Record<string, tf.Tensor> | undefined {
  const whole = tensors[prefix];
  if (whole) return tf.tensor(toFloat32(whole), whole.shape);
  const parts = Object.keys(tensors).filter((k) => k.startsWith(`${prefix}.`)).map((k) => k.slice(prefix.length + 1));
  if (parts.length === 0) return undefined;
  const make = (k: string) => tf.tensor(toFloat32(tensors[`${prefix}.${k}`]!), tensors[`${prefix}.${k}`]!.shape);
  if (parts.every((p) => /^\d+$/.test(p))) return parts.sort((a, b) => Number(a) - Number(b)).map(make);
  return Object.fromEntries(parts.map((p) => [p, make(p)]));
}

export async function readEvalDataFile(path: string): Promise<EvalData> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (err) {
    throw new FormatError(`Cannot read eval data ${path}: ${(err as Error).message}`, { cause: err });
  }
  const { header, tensors } = parseSafetensors(bytes, path);
  const inputs = collect(tensors, 'inputs');
  if (!inputs || (!(inputs instanceof tf.Tensor) && !Array.isArray(inputs))) {
    throw new FormatError(`${path} has no \`inputs\` tensor (or \`inputs.0\`, \`inputs.1\`, …); it holds ${Object.keys(tensors).join(', ') || 'nothing'}`);
  }
  const targets = collect(tensors, 'targets');
  const corrupted = collect(tensors, 'corrupted_inputs');
  const probeTargets: NonNullable<EvalData['probeTargets']> = {};
  for (const [k, t] of Object.entries(tensors)) if (k.startsWith('probe.')) probeTargets[k.slice(6)] = { data: Float32Array.from(toFloat32(t)), shape: t.shape };
  const categorical = new Set((header.metadata[CATEGORICAL_KEY] ?? '').split(',').filter(Boolean));
  const covariates: NonNullable<EvalData['covariates']> = {};
  for (const [k, t] of Object.entries(tensors)) {
    if (!k.startsWith(COVARIATE_PREFIX)) continue;
    const name = k.slice(COVARIATE_PREFIX.length);
    covariates[name] = { data: Float32Array.from(toFloat32(t)), shape: t.shape, ...(categorical.has(name) ? { categorical: true } : {}) };
  }
  return {
    inputs,
    ...(targets ? { targets } : {}),
    ...(corrupted && (corrupted instanceof tf.Tensor || Array.isArray(corrupted)) ? { corruptedInputs: corrupted } : {}),
    ...(Object.keys(probeTargets).length ? { probeTargets } : {}),
    ...(Object.keys(covariates).length ? { covariates } : {}),
  };
}
