/**
 * AnalysisRunner, the core of the guide's EvalMechIntRunner (report/eval-runner.ts adds export).
 * It streams each sampled layer's rows from the shards through every analysis in `analysesToRun`;
 * an analysis that fails, or cannot run without a model or eval data, records `{ error }` and the
 * others still run.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend, type BackendName, tf } from '../backend.js';
import { MechIntConfig, type MechIntConfigInput } from '../config.js';
import { CheckpointError, MechIntError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { appendAnalysisHistory } from '../storage/history.js';
import type { RowSource } from '../storage/rows.js';
import { ShardReader, type OpenShardsOptions } from '../storage/shard-reader.js';
import { getAnalysis } from './registry.js';
import type { AnalysisContext, AnalysisProgress, AnalysisResults, EvalData } from './types.js';

export interface EvalRunnerOptions {
  /** TensorFlow.js backend. @default 'wasm' (or 'tensorflow' when tfjs-node is loaded) */
  backend?: BackendName;
  /** Rows per block read from the shards: the memory bound of streaming. @default 8192 */
  blockRows?: number;
  /** Called as analyses start, progress and finish (the CLI draws its progress bar from it). */
  onProgress?: (p: AnalysisProgress) => void;
  /** How shards are opened (S3 endpoint and path style for `s3://` paths, checksum verification). */
  shards?: OpenShardsOptions;
  /** Loads a checkpoint for `runMechintEval({ checkpointPath })`. */
  loadCheckpoint?: (path: string) => Promise<tf.LayersModel>;
}

export interface RunMechintEvalArgs {
  /** A checkpoint (model.json directory) loaded into the runner's model before the analyses. */
  checkpointPath?: string;
  /** A shard directory, a shard file, or `s3://bucket/prefix`. */
  hiddenShardsPath: string;
  /** Inputs (and targets) for analyses that run the model. */
  evalData?: EvalData | null;
  /** Layers to analyse; default: the config's sampleLayers, or every layer in the shards when that is null. */
  layers?: string[];
}

/** The guide's result structure: `{ config, analyses }`. */
export interface EvalResults {
  config: Record<string, unknown>;
  analyses: AnalysisResults;
}

function errorResult(err: unknown): { error: string; code?: string } {
  if (err instanceof MechIntError) return { error: err.message, code: err.code };
  return { error: err instanceof Error ? err.message : String(err) };
}

/** The analyses of a config in run order: `enableFeatureSteering` adds 'steering' right after 'sae' (it steers along SAE latents). */
export function analysesFor(config: MechIntConfig): string[] {
  const names: string[] = [...config.analysesToRun];
  if (config.enableFeatureSteering && !names.includes('steering')) {
    const sae = names.indexOf('sae');
    names.splice(sae < 0 ? names.length : sae + 1, 0, 'steering');
  }
  return names;
}

export class AnalysisRunner {
  readonly config: MechIntConfig;
  model: tf.LayersModel | null;
  results: EvalResults | null = null;
  /** When and on what the last evaluation ran. */
  summary: { shards_path: string; layers: string[]; started: string; seconds: number } | null = null;
  private readonly options: EvalRunnerOptions;
  private readonly logger: Logger;
  private workDir: string | null = null;

  /**
   * @example
   * const runner = new AnalysisRunner(model, new MechIntConfig({ analysesToRun: ['sae', 'neuron', 'feature'] }));
   * const results = await runner.runMechintEval({ hiddenShardsPath: './mechint_cache' });
   */
  constructor(model: tf.LayersModel | null, config: MechIntConfigInput = {}, options: EvalRunnerOptions = {}) {
    this.model = model;
    this.config = MechIntConfig.from(config);
    this.options = options;
    this.logger = createLogger(this.config.verbose);
  }

  /** Opens the shards at a path (the guide's `_load_activations`). */
  async loadActivations(path: string): Promise<ShardReader> {
    return ShardReader.open(path, this.options.shards);
  }

  /** Where analyses write files (SAE weights) until exportResults copies them. */
  private async outputDir(): Promise<string> {
    this.workDir ??= await mkdtemp(join(tmpdir(), 'mechint-eval-'));
    return this.workDir;
  }

  private rowsOf(acts: ShardReader, layer: string): RowSource {
    return acts.rows(layer, { blockRows: this.options.blockRows ?? 8192 });
  }

  /**
   * Runs one analysis on layers of the loaded activations; returns layer → result (or `{ error }`).
   * Options merge over the config's `analysisOptions[name]`.
   */
  async runAnalysis(name: string, acts: ShardReader, options: { layers?: string[]; evalData?: EvalData | null; previous?: AnalysisResults; analysisOptions?: Record<string, unknown> } = {}): Promise<Record<string, unknown>> {
    const def = getAnalysis(name);
    if (!def) return { error: `No analysis named \`${name}\`` };
    const evalData = options.evalData ?? null;
    if (def.needsModel && !this.model) return { error: `The ${name} analysis needs the model: pass it to EvalMechIntRunner` };
    if (def.needsEvalData && !evalData) return { error: `The ${name} analysis needs eval data: pass evalData to runMechintEval` };
    const layers = options.layers ?? this.layersFor(acts);
    const out: Record<string, unknown> = {};
    const analysisOptions = { ...this.config.optionsFor(name), ...options.analysisOptions };
    for (const layer of layers) {
      const progress = (p: AnalysisProgress) => this.options.onProgress?.(p);
      progress({ analysis: name, layer, stage: 'start' });
      try {
        const rows = this.rowsOf(acts, layer);
        acts.layer(layer); // a layer missing from the shards is an error of this layer only
        const ctx: AnalysisContext = {
          layer,
          config: this.config,
          outputDir: await this.outputDir(),
          model: this.model,
          evalData,
          previous: options.previous ?? this.results?.analyses ?? {},
          layers,
          rowsOf: (l) => this.rowsOf(acts, l),
          onProgress: progress,
        };
        out[layer] = await def.run(rows, analysisOptions, ctx);
        progress({ analysis: name, layer, stage: 'done' });
      } catch (err) {
        out[layer] = errorResult(err);
        progress({ analysis: name, layer, stage: 'error', message: (err as Error).message });
        this.logger.warn(`${name} on ${layer} failed: ${(err as Error).message}`);
      }
    }
    return out;
  }

  /** The guide's `_run_neuron_analysis`. */
  runNeuronAnalysis(acts: ShardReader, options: Record<string, unknown> = {}) {
    return this.runAnalysis('neuron', acts, { analysisOptions: options });
  }

  runFeatureAnalysis(acts: ShardReader, options: Record<string, unknown> = {}) {
    return this.runAnalysis('feature', acts, { analysisOptions: options });
  }

  runSaeAnalysis(acts: ShardReader, options: Record<string, unknown> = {}) {
    return this.runAnalysis('sae', acts, { analysisOptions: options });
  }

  /** The configured layers that the shards hold, or all their layers when sampleLayers is null. */
  private layersFor(acts: ShardReader): string[] {
    return this.config.sampleLayers ?? acts.layers().map((l) => l.name);
  }

  /** Loads a checkpoint into the runner's model (or makes it the model when there is none). */
  private async applyCheckpoint(path: string): Promise<void> {
    const load = this.options.loadCheckpoint;
    if (!load) throw new CheckpointError(`Cannot load checkpoint ${path}: no checkpoint loader was given to EvalMechIntRunner`);
    const loaded = await load(path);
    if (!this.model) {
      this.model = loaded;
      return;
    }
    const target = this.model.getWeights();
    const source = loaded.getWeights();
    if (target.length !== source.length || target.some((w, i) => w.shape.join() !== source[i]!.shape.join())) {
      throw new CheckpointError(`Checkpoint ${path} does not fit the model: ${source.length} weight tensors against the model's ${target.length}, or their shapes differ`);
    }
    this.model.setWeights(source);
    loaded.dispose();
  }

  /** Runs every analysis of the config on the shards; returns (and keeps) `{ config, analyses }`. */
  async runMechintEval(args: RunMechintEvalArgs): Promise<EvalResults> {
    await initBackend(this.options.backend);
    const started = new Date();
    if (args.checkpointPath) await this.applyCheckpoint(args.checkpointPath);
    const acts = await this.loadActivations(args.hiddenShardsPath);
    const layers = args.layers ?? this.layersFor(acts);
    const analyses: AnalysisResults = {};
    this.results = { config: this.config.toJSON(), analyses };
    const names = analysesFor(this.config);
    for (const name of names) {
      this.logger.info(`Running ${name} analysis on ${layers.join(', ')}`);
      analyses[name] = await this.runAnalysis(name, acts, { layers, evalData: args.evalData ?? null, previous: analyses });
    }
    this.summary = { shards_path: acts.path, layers, started: started.toISOString(), seconds: (Date.now() - started.getTime()) / 1000 };
    const isDir = await stat(acts.path).then((s) => s.isDirectory(), () => false);
    if (isDir) {
      await appendAnalysisHistory(acts.path, { timestamp: started.toISOString(), analyses: names, layers }).catch(() => false);
    }
    return this.results;
  }

  /** Removes the runner's temporary files (exportResults copies what it needs first). */
  async dispose(): Promise<void> {
    if (this.workDir) await rm(this.workDir, { recursive: true, force: true });
    this.workDir = null;
  }

  /** Where analyses put their files (for exportResults). */
  get filesDir(): string | null {
    return this.workDir;
  }
}
