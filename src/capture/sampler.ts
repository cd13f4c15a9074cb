/**
 * ActivationSampler: hooks named layers (by wrapping the layer instance's `call`), keeps a bounded,
 * reservoir-sampled cache of their outputs on the CPU, and saves it as a shard.
 * Works in `model.fit`, `predict`, `apply` and custom loops, and for layers in nested models.
 */
import { tf } from '../backend.js';
import { CaptureError, LayerNotFoundError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { encodeUserMetadata } from '../storage/metadata.js';
import { ShardWriter, type AuxBlock, type LayerBlock, type ShardFileFormat } from '../storage/shard-writer.js';
import { AUX_PREFIX } from '../storage/provenance.js';
import { CaptureOrigins, type StepInfo } from './origins.js';
import { watchModelData, type ModelDataWatch } from './model-data.js';
import type { ShardRecord } from '../storage/manifest.js';
import { hookLayerCall, pickActivation } from '../model/layer-hook.js';
import { autoDetectLayers, namedLayers, similarPaths } from '../model/layer-paths.js';
import { createRng } from '../random.js';
import { Reservoir } from './reservoir.js';
import { checkKeys } from '../options.js';

type Layer = tf.layers.Layer;

export interface ActivationSamplerOptions {
  /** Dotted layer paths; null or omitted auto-detects. */
  layers?: string[] | null;
  /** Directory for shards and the manifest. @default './activations' */
  saveDir?: string;
  /** Samples per layer kept in the cache and written per shard. @default 10000 */
  maxSamplesPerShard?: number;
  /** @default Number(process.env.RANK) or 0 */
  rank?: number;
  /** @default false */
  perRankShards?: boolean;
  /** @default true */
  verbose?: boolean;
  /** Seed of the reservoir's random choices. @default 0 */
  seed?: number;
  /** Config recorded in the manifest. */
  config?: Record<string, unknown>;
  /**
   * A requested layer the model does not have: 'error' throws a LayerNotFoundError (with
   * did-you-mean suggestions) before any hook is registered; 'warn' skips it with a warning.
   * @default 'error'
   */
  missingLayers?: 'error' | 'warn';
  /** Shard file format. @default 'safetensors' */
  shardFormat?: ShardFileFormat;
  /** Store each row's step, epoch, batch, row and position (`@provenance.<layer>`, docs/provenance.md). @default true */
  provenance?: boolean;
  /** Store the model inputs of each kept sample (`@inputs.<layer>.<input>`); costs memory. @default false */
  captureInputs?: boolean;
  /** Store the targets of each kept sample (`@targets.<layer>.<output>`); costs memory. @default false */
  captureTargets?: boolean;
  /** The guide's snake_case spellings. */
  save_dir?: string;
  max_samples_per_shard?: number;
  per_rank_shards?: boolean;
  missing_layers?: 'error' | 'warn';
  shard_format?: ShardFileFormat;
  capture_inputs?: boolean;
  capture_targets?: boolean;
}

const SAMPLER_OPTION_KEYS = Object.keys({ layers: 1, saveDir: 1, maxSamplesPerShard: 1, rank: 1, perRankShards: 1, verbose: 1, seed: 1, config: 1, missingLayers: 1, shardFormat: 1, provenance: 1, captureInputs: 1, captureTargets: 1, save_dir: 1, max_samples_per_shard: 1, per_rank_shards: 1, missing_layers: 1, shard_format: 1, capture_inputs: 1, capture_targets: 1 } satisfies Record<keyof ActivationSamplerOptions, 1>);

/** What a loop hands over for one batch: by input (output) name, a list in model order, or one tensor. */
export type BatchTensors = tf.Tensor | tf.Tensor[] | Record<string, tf.Tensor>;

export interface BatchData {
  inputs?: BatchTensors;
  targets?: BatchTensors;
  /** One id per batch row. */
  ids?: ArrayLike<number> | tf.Tensor;
}

/** Info lines only when verbose; warnings always (they say something is wrong). */
export function captureLogger(verbose: boolean): Logger {
  return { info: createLogger(verbose).info, warn: createLogger(true).warn };
}

export interface SamplerStatistics {
  total_samples_saved: number;
  current_cache_samples: number;
  total_shards: number;
  tracked_layers: string[];
  /** Samples waiting in the cache, per layer. */
  cache_samples_per_layer: Record<string, number>;
}


interface LayerCache {
  data: Float32Array;
  /** Values per sample. */
  size: number;
  /** Filled slots (slots are filled in order, then replaced). */
  count: number;
}


/**
 * A CPU-resident tensor's values. On wasm a view of the heap (no copy): it is copied into the
 * cache at once, before any other op can move or reuse that memory.
 */
function readNow(t: tf.Tensor): Float32Array {
  const backend = tf.backend() as { typedArrayFromHeap?: (t: tf.Tensor) => ArrayLike<number> };
  if (t.dtype === 'float32' && tf.getBackend() === 'wasm' && typeof backend.typedArrayFromHeap === 'function') {
    return backend.typedArrayFromHeap(t) as Float32Array;
  }
  const values = t.dataSync();
  return values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
}

/** A Float32Array whose memory is not zeroed first (every slot is written before it is read). */
function uninitializedFloats(n: number): Float32Array {
  const buf = Buffer.allocUnsafeSlow(n * 4);
  return new Float32Array(buf.buffer, buf.byteOffset, n);
}

function sameSampleShape(sample: readonly number[], full: readonly number[]): boolean {
  if (sample.length !== full.length - 1) return false;
  for (let i = 0; i < sample.length; i++) if (sample[i] !== full[i + 1]) return false;
  return true;
}

/** Backends whose tensors live in CPU memory: reading them is a copy, so it is done at once. */
const CPU_BACKENDS = new Set(['wasm', 'cpu', 'tensorflow']);

export class ActivationSampler {
  /** Shape of one sample per layer (the output shape without the batch dimension). */
  sampleShapes: Record<string, number[]> = {};
  /** False pauses capture while hooks stay registered. */
  enabled = true;
  /** Capture only calls made with `training: true` (fit's training batches, not its validation). */
  trainingOnly = false;
  readonly saveDir: string;
  readonly maxSamplesPerShard: number;
  readonly rank: number;
  /** Only rank 0 writes, unless perRankShards. */
  readonly writes: boolean;
  readonly writer: ShardWriter;
  protected readonly logger: Logger;
  private requested: string[] | null;
  private tracked: string[] = [];
  private hooks = new Map<string, () => void>();
  private reservoirs: Record<string, Reservoir> = {};
  /** Per layer, samples back to back in one buffer that grows up to maxSamplesPerShard samples. */
  private caches: Record<string, LayerCache> = {};
  /** The per-sample view handed out by `activations`, kept so a subclass's changes are saved. */
  private exposed: Record<string, Float32Array[]> | null = null;
  /** A written-out cache buffer per layer, reused by the next interval that fits in it. */
  private spare: Record<string, Float32Array> = {};
  /** Samples per layer the last interval held: the next one's first allocation. */
  private lastCounts: Record<string, number> = {};
  /** Bumped by clearCache, so a late asynchronous read never lands in a newer interval. */
  private generation = 0;
  private pending = new Set<Promise<void>>();
  private readonly random: () => number;
  private warnedShapes = new Set<string>();
  private totalSaved = 0;
  private shardCount = 0;
  private captureError: Error | null = null;
  private readonly missingLayers: 'error' | 'warn';
  /** The shard write in progress: the next save waits for it, so at most one snapshot is pending. */
  private inFlight: Promise<unknown> | null = null;
  /** Where each cached sample came from (docs/provenance.md). */
  readonly origins: CaptureOrigins;
  readonly provenance: boolean;
  private dataWatches = new Map<object, ModelDataWatch>();
  private inputNames: string[] = [];
  private outputNames: string[] = [];

  constructor(options: ActivationSamplerOptions = {}) {
    checkKeys('ActivationSampler option', options, SAMPLER_OPTION_KEYS);
    this.requested = options.layers ?? null;
    this.saveDir = options.saveDir ?? options.save_dir ?? './activations';
    this.maxSamplesPerShard = options.maxSamplesPerShard ?? options.max_samples_per_shard ?? 10000;
    if (!Number.isInteger(this.maxSamplesPerShard) || this.maxSamplesPerShard < 1) {
      throw new CaptureError(`Expected \`max_samples_per_shard\` to be an integer >= 1; got \`${this.maxSamplesPerShard}\``);
    }
    this.rank = options.rank ?? (Number(process.env.RANK ?? 0) || 0);
    const perRank = options.perRankShards ?? options.per_rank_shards ?? false;
    this.writes = this.rank === 0 || perRank;
    this.logger = captureLogger(options.verbose ?? true);
    this.random = createRng(options.seed ?? 0).uniform;
    this.missingLayers = options.missingLayers ?? options.missing_layers ?? 'error';
    if (this.missingLayers !== 'error' && this.missingLayers !== 'warn') throw new CaptureError(`Expected \`missing_layers\` to be one of error, warn; got \`${String(this.missingLayers)}\``);
    const format = options.shardFormat ?? options.shard_format ?? 'safetensors';
    this.writer = new ShardWriter({ dir: this.saveDir, rank: this.rank, perRankShards: perRank, config: options.config ?? {}, logger: this.logger, format });
    this.provenance = options.provenance ?? true;
    const keep = { inputs: options.captureInputs ?? options.capture_inputs ?? false, targets: options.captureTargets ?? options.capture_targets ?? false };
    for (const [k, v] of Object.entries({ provenance: this.provenance, capture_inputs: keep.inputs, capture_targets: keep.targets })) {
      if (typeof v !== 'boolean') throw new CaptureError(`Expected \`${k}\` to be true or false; got \`${String(v)}\``);
    }
    this.origins = new CaptureOrigins(this.maxSamplesPerShard, this.logger, keep);
  }

  /** True when a hooked call counts: capture is on, and in fit only training calls do. */
  private active(kwargs: { training?: boolean } | undefined): boolean {
    return this.enabled && (!this.trainingOnly || kwargs?.training === true);
  }

  /** The step in progress is now known (fit's onBatchBegin; a custom loop before its forward pass). */
  beginStep(info: StepInfo, data: BatchData = {}): void {
    this.origins.beginStep(info);
    this.offerBatch(data);
  }

  /** The step ended: the rows captured since the previous step are its rows. */
  endStep(info: StepInfo, data: BatchData = {}): void {
    this.offerBatch(data);
    this.origins.endStep(info);
  }

  /** Inputs, targets and ids of the batch in progress, given by a loop (kept until the step ends). */
  offerBatch(data: BatchData): void {
    const each = (kind: 'inputs' | 'targets', v: BatchTensors | undefined, names: string[]) => {
      if (v === undefined) return;
      if (v instanceof tf.Tensor) this.origins.offer(kind, names[0] ?? (kind === 'inputs' ? 'input' : 'target'), v, true);
      else if (Array.isArray(v)) v.forEach((t, i) => this.origins.offer(kind, names[i] ?? `${kind === 'inputs' ? 'input' : 'target'}_${i}`, t, true));
      else for (const [k, t] of Object.entries(v)) this.origins.offer(kind, k, t, true);
    };
    each('inputs', data.inputs, this.inputNames);
    each('targets', data.targets, this.outputNames);
    if (data.ids !== undefined) this.origins.offer('ids', '', data.ids instanceof tf.Tensor ? Array.from(data.ids.dataSync() as ArrayLike<number>) : data.ids, true);
  }

  /** The layer paths being captured. */
  get trackedLayers(): string[] {
    return [...this.tracked];
  }

  /**
   * Hooks the requested layers of `model` (auto-detected when none were given). Returns the
   * registered paths. A path the model does not have throws a LayerNotFoundError naming similar
   * ones (nothing is hooked then), or with missingLayers 'warn' is skipped with a warning.
   */
  registerHooks(model: tf.LayersModel | Layer): string[] {
    if (!this.writes) {
      this.logger.info(`Rank ${this.rank}: not capturing (only rank 0 writes shards unless perRankShards is set)`);
      return [];
    }
    const all = namedLayers(model);
    let wanted = this.requested;
    if (wanted === null) {
      const detected = autoDetectLayers(model);
      this.logger.info(`Auto-detected ${detected.reason}`);
      wanted = detected.paths;
    }
    const byPath = new Map(all.map((n) => [n.path, n.layer]));
    const reserved = wanted.filter((p) => p.startsWith(AUX_PREFIX));
    // Names starting with `@` are the shard's provenance tensors (docs/provenance.md).
    if (reserved.length > 0) throw new CaptureError(`Layer paths starting with \`${AUX_PREFIX}\` cannot be captured (the name is reserved for provenance tensors in shards): ${reserved.join(', ')}`);
    const absent = wanted.filter((p) => !byPath.has(p));
    if (absent.length > 0 && this.missingLayers === 'error') {
      const paths = [...byPath.keys()];
      const parts = absent.map((p) => {
        const similar = similarPaths(p, paths);
        return `\`${p}\`${similar.length ? ` (did you mean ${similar.join(', ')}?)` : ''}`;
      });
      throw new LayerNotFoundError(
        `sample_layers names ${absent.length === 1 ? 'a layer' : 'layers'} the model does not have: ${parts.join('; ')}. The model's layer paths: ${paths.slice(0, 20).join(', ')}${paths.length > 20 ? ', …' : ''} (listLayerPaths(model) prints them all). Set missing_layers: 'warn' to skip missing layers instead.`,
      );
    }
    // Before the layers: a layer that consumes an input sees its input hook first.
    this.watchData(model);
    const registered: string[] = [];
    for (const path of wanted) {
      const layer = byPath.get(path);
      if (!layer) {
        const similar = similarPaths(path, [...byPath.keys()]);
        this.logger.warn(`Layer \`${path}\` not found in the model; skipped${similar.length ? ` (did you mean ${similar.join(', ')}?)` : ''}. Print listLayerPaths(model) to see every path.`);
        continue;
      }
      if (!this.hooks.has(path)) this.hook(path, layer);
      registered.push(path);
    }
    this.tracked = [...new Set([...this.tracked, ...registered])];
    if (registered.length > 0) this.logger.info(`Registered hooks on ${registered.join(', ')}`);
    else this.logger.warn('No layer was hooked; nothing will be captured');
    return registered;
  }

  /** Watches the model's inputs and targets (and tagged ids) once per model, before its layers are hooked. */
  private watchData(model: tf.LayersModel | Layer): void {
    if (this.dataWatches.has(model) || !(this.provenance || this.origins.keep.inputs || this.origins.keep.targets)) return;
    const watch = watchModelData(model, this.origins, (kwargs) => this.active(kwargs));
    this.dataWatches.set(model, watch);
    const m = model as { inputNames?: string[]; outputNames?: string[] };
    if (Array.isArray(m.inputNames)) this.inputNames = [...m.inputNames];
    if (Array.isArray(m.outputNames)) this.outputNames = [...m.outputNames];
    const asked = (this.origins.keep.inputs ? m.inputNames?.length ?? 0 : 0);
    if (asked > watch.inputs.length) {
      const lost = (m.inputNames ?? []).filter((n) => !watch.inputs.includes(n));
      this.logger.warn(`capture_inputs: input(s) ${lost.join(', ')} have no consumer layer called exactly once; pass them per step (hooks.beginStep({ ..., inputs }))`);
    }
  }

  private hook(path: string, layer: Layer): void {
    const undo = hookLayerCall(layer, (output, kwargs) => {
      if (this.active(kwargs)) this.capture(path, output);
      return output;
    });
    this.hooks.set(path, undo);
  }

  private capture(path: string, output: unknown): void {
    const t = pickActivation(output);
    if (!t || t.rank < 1) {
      if (!this.warnedShapes.has(path)) {
        this.warnedShapes.add(path);
        this.logger.warn(`Layer \`${path}\` returned ${t ? 'a scalar' : 'no tensor'}; it cannot be captured`);
      }
      return;
    }
    const known = this.sampleShapes[path];
    let size = 1;
    for (let d = 1; d < t.rank; d++) size *= t.shape[d]!;
    if (known ? !sameSampleShape(known, t.shape) : false) {
      if (!this.warnedShapes.has(path)) {
        this.warnedShapes.add(path);
        this.logger.warn(`Layer \`${path}\` changed its sample shape from [${known}] to [${t.shape.slice(1)}]; samples of the new shape are skipped until the next shard`);
      }
      return;
    }
    if (!known) this.sampleShapes[path] = t.shape.slice(1) as number[];
    const reservoir = (this.reservoirs[path] ??= new Reservoir(this.maxSamplesPerShard, this.random));
    const slots = reservoir.offer(t.shape[0]!);
    if (!slots.some((s) => s >= 0)) return;
    // The provenance follows the slot: a replaced sample's origin is replaced with it.
    this.origins.assign(path, slots);
    if (CPU_BACKENDS.has(tf.getBackend())) {
      this.store(path, size, slots, reservoir.lastFilled, readNow(t), this.generation);
      return;
    }
    // GPU-resident tensors: keep a clone (no copy) past the step's tidy and read it asynchronously.
    const generation = this.generation;
    const consecutive = reservoir.lastFilled;
    const kept = tf.keep(t.clone());
    const p = kept
      .data()
      .then((values) => this.store(path, size, slots, consecutive, values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>), generation))
      .catch((err: Error) => {
        this.captureError ??= err;
      })
      .finally(() => {
        kept.dispose();
        this.pending.delete(p);
      });
    this.pending.add(p);
  }

  /** Copies the kept samples of one captured batch into the layer's cache slots. */
  private store(path: string, size: number, slots: Int32Array, consecutive: boolean, values: Float32Array, generation: number): void {
    if (generation !== this.generation) return;
    const cache = this.cacheFor(path, size, slots);
    const n = slots.length;
    const first = slots[0]!;
    if (consecutive) {
      // Until the reservoir is full the slots are consecutive: one copy for the whole batch.
      cache.data.set(values.subarray(0, n * size), first * size);
      if (first + n > cache.count) cache.count = first + n;
    } else {
      for (let i = 0; i < n; i++) {
        const slot = slots[i]!;
        if (slot < 0) continue;
        cache.data.set(values.subarray(i * size, (i + 1) * size), slot * size);
        if (slot >= cache.count) cache.count = slot + 1;
      }
    }
    this.exposed = null;
  }

  /** The layer's cache, grown (doubling, up to the reservoir's capacity) to hold the given slots. */
  private cacheFor(path: string, size: number, slots: Int32Array): LayerCache {
    let max = -1;
    for (const s of slots) if (s > max) max = s;
    // Start at the size the last interval reached, so a steady run allocates once per shard.
    const cache = (this.caches[path] ??= { data: new Float32Array(0), size, count: 0 });
    const needed = (max + 1) * size;
    if (needed > cache.data.length) {
      const samples = Math.min(this.maxSamplesPerShard, Math.max(max + 1, (2 * cache.data.length) / size, this.lastCounts[path] ?? 0, 64));
      const spare = this.spare[path];
      let grown: Float32Array;
      if (spare && spare.length >= samples * size) {
        grown = spare;
        delete this.spare[path];
      } else grown = uninitializedFloats(samples * size);
      grown.set(cache.data.subarray(0, cache.count * size));
      cache.data = grown;
    }
    return cache;
  }

  /**
   * The cached samples per layer, one Float32Array per sample (views of the cache, no copies).
   * A subclass may replace them before calling `saveActivations` (the guide's "Custom Activation
   * Processing"); what it leaves there is what is saved. Capturing again discards the view.
   */
  get activations(): Record<string, Float32Array[]> {
    if (!this.exposed) {
      const view: Record<string, Float32Array[]> = {};
      for (const [layer, c] of Object.entries(this.caches)) {
        view[layer] = Array.from({ length: c.count }, (_, i) => c.data.subarray(i * c.size, (i + 1) * c.size));
      }
      this.exposed = view;
    }
    return this.exposed;
  }

  set activations(value: Record<string, Float32Array[]>) {
    this.exposed = value;
  }

  /** Waits until every asynchronous read of captured activations has landed in the cache. */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
    if (this.captureError) {
      const err = this.captureError;
      this.captureError = null;
      throw new CaptureError(`Reading a captured activation failed: ${err.message}`);
    }
  }

  /** Samples in the cache per layer. */
  private cacheCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    if (this.exposed) for (const [layer, acts] of Object.entries(this.exposed)) out[layer] = acts.filter(Boolean).length;
    else for (const [layer, c] of Object.entries(this.caches)) if (c.count > 0) out[layer] = c.count;
    return out;
  }

  /**
   * Writes the cached samples as one shard (then empties the cache) and returns its path, or
   * null when nothing was captured or this rank does not write.
   */
  async saveActivations(globalStep: number, metadata: Record<string, unknown> = {}): Promise<string | null> {
    const record = await this.saveShard(globalStep, metadata);
    return record ? `${this.writer.dir}/${record.file}` : null;
  }

  /** As saveActivations, returning the manifest record of the shard. */
  protected async saveShard(globalStep: number, metadata: Record<string, unknown>): Promise<ShardRecord | null> {
    if (!this.writes) return null;
    if (!Number.isInteger(globalStep) || globalStep < 0) throw new CaptureError(`Expected \`global_step\` to be an integer >= 0; got \`${globalStep}\``);
    const { epoch, batch_idx: batchIdx, ...rest } = metadata;
    // Metadata the shard cannot hold faithfully (a tensor, ...) is refused before the cache is touched.
    encodeUserMetadata(rest, { global_step: String(globalStep) });
    // Backpressure: while the previous shard is still being written this save waits (capture goes
    // on meanwhile into this interval), so at most one snapshot waits for the disk.
    while (this.inFlight) await this.inFlight.catch(() => {});
    // With nothing in flight the snapshot is taken synchronously, so a save started in the
    // background holds exactly the steps before it.
    if (this.pending.size > 0 || this.captureError) await this.flush();
    const layers: Record<string, LayerBlock> = {};
    const aux: AuxBlock[] = [];
    const auxOf = (layer: string, count: number) => {
      const shape = this.sampleShapes[layer] ?? [];
      const size = shape.reduce((a, d) => a * d, 1);
      const rowsPerSample = shape.length === 0 ? 1 : shape.at(-1)! === 0 ? 0 : size / shape.at(-1)!;
      aux.push(...this.origins.auxFor(layer, count, rowsPerSample, this.provenance));
    };
    if (this.exposed) {
      // A subclass may have rewritten the samples: save what it left.
      for (const [layer, acts] of Object.entries(this.exposed)) {
        const samples = acts.filter(Boolean);
        if (samples.length === 0) continue;
        // Provenance only while the samples still stand one for one in their slots.
        if (samples.length === acts.length && samples.length === this.caches[layer]?.count && samples[0]!.length === this.caches[layer]?.size) auxOf(layer, samples.length);
        const size = samples[0]!.length;
        const data = new Float32Array(samples.length * size);
        samples.forEach((sample, i) => {
          if (sample.length !== size) throw new CaptureError(`Cached samples of \`${layer}\` differ in size (${sample.length} vs ${size})`);
          data.set(sample, i * size);
        });
        layers[layer] = { shape: [samples.length, ...(this.sampleShapes[layer] ?? [size])], data };
      }
    } else {
      for (const [layer, c] of Object.entries(this.caches)) {
        if (c.count === 0) continue;
        layers[layer] = { shape: [c.count, ...(this.sampleShapes[layer] ?? [c.size])], data: c.data.subarray(0, c.count * c.size) };
        auxOf(layer, c.count);
      }
    }
    const buffers = Object.entries(this.caches).map(([layer, c]) => [layer, c.data] as const);
    this.clearCache();
    if (Object.keys(layers).length === 0) return null;
    const written = this.writer.write({
      layers,
      aux,
      globalStep,
      epoch: typeof epoch === 'number' ? epoch : null,
      batchIdx: typeof batchIdx === 'number' ? batchIdx : null,
      metadata: rest,
    });
    // Once written, the buffers serve a later interval: a steady run then allocates nothing, and
    // the garbage collector is not pushed into full collections by megabytes of dropped buffers.
    this.inFlight = written;
    const record = await written.finally(() => {
      if (this.inFlight === written) this.inFlight = null;
      for (const [layer, data] of buffers) if (data.length > (this.spare[layer]?.length ?? 0)) this.spare[layer] = data;
    });
    this.shardCount++;
    for (const n of Object.values(record.rows)) this.totalSaved += n;
    this.logger.info(`Saved ${record.file} (${Object.entries(record.rows).map(([l, n]) => `${l}: ${n}`).join(', ')})`);
    return record;
  }

  /** True while a shard write started by saveActivations is in progress. */
  get saving(): boolean {
    return this.inFlight !== null;
  }

  getStatistics(): SamplerStatistics {
    const counts = this.cacheCounts();
    return {
      total_samples_saved: this.totalSaved,
      current_cache_samples: Object.values(counts).reduce((a, b) => a + b, 0),
      total_shards: this.shardCount,
      tracked_layers: this.trackedLayers,
      cache_samples_per_layer: counts,
    };
  }

  /** Empties the cache and starts a new sampling interval (pending reads land in the old one). */
  clearCache(): void {
    for (const [layer, c] of Object.entries(this.caches)) this.lastCounts[layer] = c.count;
    this.caches = {};
    this.exposed = null;
    this.reservoirs = {};
    this.sampleShapes = {};
    this.origins.reset();
    this.generation++;
  }

  /** Restores every hooked layer's own `call`; nothing is captured afterwards. */
  clearHooks(): void {
    for (const undo of this.hooks.values()) undo();
    this.hooks.clear();
    for (const w of this.dataWatches.values()) w.undo();
    this.dataWatches.clear();
  }
}
