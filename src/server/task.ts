/**
 * One analysis request as plain data (so it can cross into a worker thread) and the function that
 * runs it, used both inline on the event loop (small analyses) and inside job workers.
 */
import { initBackend, tf } from '../backend.js';
import { MechIntConfig } from '../config.js';
import { MechIntError, ModelRequiredError } from '../errors.js';
import { getAnalysis } from '../analysis/registry.js';
import type { AnalysisContext, AnalysisProgress, EvalData } from '../analysis/types.js';
import { rowsFromMatrix, type RowSource } from '../storage/rows.js';
import { ShardReader } from '../storage/shard-reader.js';

/** Rows of one uploaded tensor, flattened to `rows × dim`. */
export interface MatrixRows {
  rows: Float32Array;
  dim: number;
}

export type TaskSource =
  | { kind: 'cache'; path: string; verify: boolean }
  | { kind: 'tensors'; layers: Record<string, MatrixRows> };

/** A tensor as plain arrays (tf tensors cannot be posted to a worker). */
export interface SerializedTensor {
  dtype: 'float32' | 'int32' | 'bool';
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

/** One tensor, a list, or tensors by name (targets may be keyed by output name). */
type MaybeMany<T> = T | T[] | Record<string, T>;

export interface SerializedEvalData {
  inputs: SerializedTensor | SerializedTensor[];
  targets?: MaybeMany<SerializedTensor>;
  corruptedInputs?: SerializedTensor | SerializedTensor[];
  probeTargets?: Record<string, { data: Float32Array; shape: number[] }>;
}

export interface AnalysisTask {
  analysisType: string;
  /** Layers to analyse; with more than one, a layer that fails records `{ error, code }` and the others still run. */
  layers: string[];
  /** All sampled layers in model order, for analyses that relate layers (circuit). @default layers */
  contextLayers?: string[];
  /** The request's `config`, merged over the server config's options for this analysis. */
  options: Record<string, unknown>;
  /** The server's MechIntConfig as JSON. */
  config: Record<string, unknown>;
  source: TaskSource;
  /** Where analyses may write files (SAE weights); none when absent. */
  outputDir?: string;
  /** A tfjs model.json (or its directory) for analyses that need the model. */
  modelPath?: string;
  evalData?: SerializedEvalData;
  /** Rows per block read from the shards. @default 8192 */
  blockRows?: number;
}

/** What the caller already holds in this thread (the inline path reuses the server's reader and model). */
export interface TaskEnv {
  reader?: ShardReader;
  model?: tf.LayersModel | null;
  evalData?: EvalData | null;
  onProgress?: (p: AnalysisProgress) => void;
}

export function serializeTensor(t: tf.Tensor): SerializedTensor {
  const dtype = t.dtype === 'int32' || t.dtype === 'bool' ? t.dtype : 'float32';
  const data = t.dataSync();
  return { dtype, shape: [...t.shape], data: data instanceof Float32Array || data instanceof Int32Array || data instanceof Uint8Array ? data : Float32Array.from(data as ArrayLike<number>) };
}

function many<A extends object, B>(v: A | A[], f: (a: A) => B): B | B[];
function many<A extends object, B>(v: MaybeMany<A>, f: (a: A) => B, isOne: (x: unknown) => x is A): MaybeMany<B>;
function many<A extends object, B>(v: MaybeMany<A>, f: (a: A) => B, isOne?: (x: unknown) => x is A): MaybeMany<B> {
  if (Array.isArray(v)) return v.map(f);
  if (!isOne || isOne(v)) return f(v as A);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, f(x)]));
}
const isTensor = (x: unknown): x is tf.Tensor => x instanceof tf.Tensor;
const isSerialized = (x: unknown): x is SerializedTensor => typeof x === 'object' && x !== null && 'dtype' in x && 'shape' in x && 'data' in x;

export function serializeEvalData(e: EvalData): SerializedEvalData {
  return {
    inputs: many(e.inputs, serializeTensor),
    ...(e.targets ? { targets: many(e.targets, serializeTensor, isTensor) } : {}),
    ...(e.corruptedInputs ? { corruptedInputs: many(e.corruptedInputs, serializeTensor) } : {}),
    ...(e.probeTargets ? { probeTargets: e.probeTargets } : {}),
  };
}

export function deserializeEvalData(s: SerializedEvalData): EvalData {
  const toTensor = (t: SerializedTensor) => tf.tensor(t.data, t.shape, t.dtype);
  return {
    inputs: many(s.inputs, toTensor),
    ...(s.targets ? { targets: many(s.targets, toTensor, isSerialized) } : {}),
    ...(s.corruptedInputs ? { corruptedInputs: many(s.corruptedInputs, toTensor) } : {}),
    ...(s.probeTargets ? { probeTargets: s.probeTargets } : {}),
  };
}

/** Checks up front what an analysis needs, so the request fails with a clear 422 before any work. */
export function assertRunnable(analysisType: string, hasModel: boolean, hasEvalData: boolean): void {
  const def = getAnalysis(analysisType);
  if (!def) return;
  if (def.needsModel && !hasModel) {
    throw new ModelRequiredError(`The ${analysisType} analysis needs a model: start the server with \`mechint serve --model DIR\` (or buildApp({ modelPath }))`);
  }
  if (def.needsEvalData && !hasEvalData) {
    throw new ModelRequiredError(`The ${analysisType} analysis needs eval data: pass \`evalData\` to buildApp`);
  }
}

async function loadModel(path: string): Promise<tf.LayersModel> {
  // Imported lazily: only analyses that run the model need the file IO handler.
  const { fileSystem } = await import('../model/file-handler.js');
  // mechint's own model (the demo's checkpoints) uses custom layers: make them known to tfjs.
  (await import('../demo/neurofmx-mini.js')).registerNeuroFMXMiniLayers();
  return tf.loadLayersModel(fileSystem(path));
}

/** Runs the task; resolves to layer → result. A single-layer task rejects with the analysis' error. */
export async function runTask(task: AnalysisTask, env: TaskEnv = {}): Promise<Record<string, unknown>> {
  const def = getAnalysis(task.analysisType);
  if (!def) throw new MechIntError('MECHINT_ERR_BAD_REQUEST', `No analysis named \`${task.analysisType}\``, { statusCode: 400 });
  const usesTf = def.name !== 'neuron' && def.name !== 'feature';
  if (usesTf) await initBackend();
  const config = MechIntConfig.from(task.config);
  let model = env.model ?? null;
  let evalData = env.evalData ?? null;
  const owned: tf.Tensor[] = [];
  if (def.needsModel && !model && task.modelPath) model = await loadModel(task.modelPath);
  if (!evalData && task.evalData && (def.needsModel || def.needsEvalData)) {
    evalData = deserializeEvalData(task.evalData);
    for (const v of [evalData.inputs, evalData.targets, evalData.corruptedInputs]) {
      if (v) owned.push(...(Array.isArray(v) ? v : isTensor(v) ? [v] : Object.values(v)));
    }
  }
  assertRunnable(def.name, model !== null, evalData !== null);

  let rowsOf: (layer: string) => RowSource;
  const { source } = task;
  if (source.kind === 'cache') {
    const reader = env.reader ?? (await ShardReader.open(source.path, { verify: source.verify }));
    rowsOf = (layer) => reader.rows(layer, { blockRows: task.blockRows ?? 8192 });
  } else {
    rowsOf = (layer) => {
      const m = source.layers[layer];
      if (!m) throw new MechIntError('MECHINT_ERR_LAYER_NOT_FOUND', `No layer \`${layer}\` in the upload`, { statusCode: 404 });
      return rowsFromMatrix(m.rows, m.dim, task.blockRows ?? 8192, 'upload');
    };
  }

  const out: Record<string, unknown> = {};
  try {
    for (const layer of task.layers) {
      const ctx: AnalysisContext = {
        layer,
        config,
        ...(task.outputDir === undefined ? {} : { outputDir: task.outputDir }),
        model,
        evalData,
        previous: {},
        layers: task.contextLayers ?? task.layers,
        rowsOf,
        ...(env.onProgress ? { onProgress: env.onProgress } : {}),
      };
      try {
        env.onProgress?.({ analysis: def.name, layer, stage: 'start' });
        out[layer] = await def.run(rowsOf(layer), task.options, ctx);
        env.onProgress?.({ analysis: def.name, layer, stage: 'done' });
      } catch (err) {
        if (task.layers.length === 1) throw err;
        out[layer] = err instanceof MechIntError ? { error: err.message, code: err.code } : { error: (err as Error).message };
      }
    }
  } finally {
    for (const t of owned) t.dispose();
    if (model && model !== env.model) model.dispose();
  }
  return out;
}
