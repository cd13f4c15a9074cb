/**
 * One analysis request as plain data (so it can cross into a worker thread) and the function that
 * runs it: the executor's `executeAnalyses`, called the same way inline on the event loop (small
 * analyses) and inside job workers.
 */
import { tf } from '../backend.js';
import { MechIntConfig } from '../config.js';
import { executeAnalyses, type ExecuteOutcome } from '../analysis/executor.js';
import { ManifestResultsStore, MemoryResultsStore, type ResultsStore } from '../analysis/results-store.js';
import { loadPlugins } from '../analysis/plugins.js';
import { matrixSource, readerSource } from '../analysis/sources.js';
import type { AnalysisProgress, EvalData } from '../analysis/types.js';
import { loadLayerModules, loadModelFrom } from '../model/registry.js';
import { ShardReader } from '../storage/shard-reader.js';

/** Rows of one uploaded tensor, flattened to `rows × dim`. */
export interface MatrixRows {
  rows: Float32Array;
  dim: number;
}

export type TaskSource =
  | { kind: 'cache'; path: string; verify: boolean }
  | { kind: 'tensors'; layers: Record<string, MatrixRows>; id: string };

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
  covariates?: Record<string, { data: Float32Array; shape: number[]; categorical?: boolean }>;
}

/** Where the task finds stored results and puts artifacts: the cache's manifest, or a scratch directory only. */
export type TaskStore = { kind: 'manifest'; cacheDir: string; scratch: string } | { kind: 'memory'; scratch: string };

export interface AnalysisTask {
  analysisType: string;
  /** Layers to analyse; with more than one, a layer that fails records `{ error, code }` and the others still run. */
  layers: string[];
  /** All sampled layers in model order, for analyses that relate layers (circuit). @default layers */
  contextLayers?: string[];
  /** The request's `config` (options of the analysis), over the server config's `analysisOptions`. */
  options: Record<string, unknown>;
  /** The server's MechIntConfig as JSON. */
  config: Record<string, unknown>;
  source: TaskSource;
  store: TaskStore;
  /** A tfjs model.json (or its directory) for analyses that need the model. */
  modelPath?: string;
  /** Modules registering custom layers (the model registry's), for loading the model in a worker. */
  layerModules?: string[];
  /** Plugin modules of custom analyses, loaded in a worker before it runs. */
  analysisModules?: string[];
  evalData?: SerializedEvalData;
  /** Rows per block read from the shards. @default 8192 */
  blockRows?: number;
}

/** What the caller already holds in this thread (the inline path reuses the server's reader and model). */
export interface TaskEnv {
  reader?: ShardReader;
  model?: tf.LayersModel | null;
  evalData?: EvalData | null;
  store?: ResultsStore;
  /** Save each computed result in the store (the server's own thread; a worker leaves that to it). */
  persist?: boolean;
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
    ...(e.covariates ? { covariates: e.covariates } : {}),
  };
}

export function deserializeEvalData(s: SerializedEvalData): EvalData {
  const toTensor = (t: SerializedTensor) => tf.tensor(t.data, t.shape, t.dtype);
  return {
    inputs: many(s.inputs, toTensor),
    ...(s.targets ? { targets: many(s.targets, toTensor, isSerialized) } : {}),
    ...(s.corruptedInputs ? { corruptedInputs: many(s.corruptedInputs, toTensor) } : {}),
    ...(s.probeTargets ? { probeTargets: s.probeTargets } : {}),
    ...(s.covariates ? { covariates: s.covariates } : {}),
  };
}

export function storeFor(s: TaskStore): ResultsStore {
  return s.kind === 'manifest' ? new ManifestResultsStore(s.cacheDir, s.scratch) : new MemoryResultsStore(s.scratch);
}

/**
 * Runs the task through the executor; resolves to its outcome (the results by layer, and every
 * result with its key). A single-layer task rejects with the analysis' error. In a worker the
 * store only finds results and places artifacts: the server records what was computed.
 */
export async function runTask(task: AnalysisTask, env: TaskEnv = {}): Promise<ExecuteOutcome> {
  const config = MechIntConfig.from(task.config);
  let model = env.model ?? null;
  let evalData = env.evalData ?? null;
  const owned: tf.Tensor[] = [];
  if (task.analysisModules) await loadPlugins(task.analysisModules);
  if (task.layerModules) await loadLayerModules(task.layerModules);
  try {
    if (!model && task.modelPath) model = await loadModelFrom(task.modelPath);
    if (!evalData && task.evalData) {
      evalData = deserializeEvalData(task.evalData);
      for (const v of [evalData.inputs, evalData.targets, evalData.corruptedInputs]) {
        if (v) owned.push(...(Array.isArray(v) ? v : isTensor(v) ? [v] : Object.values(v)));
      }
    }
    const { source } = task;
    const blockRows = task.blockRows ?? 8192;
    const layerSource = source.kind === 'cache'
      ? readerSource(env.reader ?? (await ShardReader.open(source.path, { verify: source.verify })), blockRows)
      : matrixSource(source.layers, source.id, blockRows);
    return await executeAnalyses(
      { analyses: [task.analysisType], layers: task.layers, contextLayers: task.contextLayers ?? task.layers, config, options: { [task.analysisType]: task.options } },
      {
        source: layerSource,
        model,
        evalData,
        store: env.store ?? storeFor(task.store),
        persist: env.persist === true,
        throwOnError: task.layers.length === 1,
        ...(env.onProgress ? { onProgress: env.onProgress } : {}),
      },
    );
  } finally {
    for (const t of owned) t.dispose();
    if (model && model !== env.model) model.dispose();
  }
}
