/**
 * AnalysisRunner, the core of the guide's EvalMechIntRunner (report/eval-runner.ts adds export).
 * It hands the config's analyses and the sampled layers to the executor, which streams each
 * layer's rows from the shards; an analysis that fails, or cannot run without a model or eval
 * data, records `{ error }` for its layers and the others still run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend, type BackendName, type tf } from '../backend.js';
import { MechIntConfig, type MechIntConfigInput } from '../config.js';
import { CheckpointError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { loadModelFrom } from '../model/registry.js';
import { checkKeys } from '../options.js';
import { ShardReader, type OpenShardsOptions } from '../storage/shard-reader.js';
import { executeAnalyses, type ExecutedResult, type ExecuteOutcome } from './executor.js';
import type { AnalysisResults } from './results.js';
import { readerSource } from './sources.js';
import type { AnalysisProgress, EvalData } from './types.js';

export interface EvalRunnerOptions {
  /** TensorFlow.js backend. @default 'wasm' (or 'tensorflow' when tfjs-node is loaded) */
  backend?: BackendName;
  /** Rows per block read from the shards: the memory bound of streaming. @default 8192 */
  blockRows?: number;
  /** Called as analyses start, progress and finish (the CLI draws its progress bar from it). */
  onProgress?: (p: AnalysisProgress) => void;
  /** How shards are opened (S3 endpoint and path style for `s3://` paths, checksum verification). */
  shards?: OpenShardsOptions;
  /** Loads a checkpoint for `runMechintEval({ checkpointPath })`. @default a tfjs model.json directory, with registered custom layers */
  loadCheckpoint?: (path: string) => Promise<tf.LayersModel>;
}
const RUNNER_OPTION_KEYS = Object.keys({ backend: 1, blockRows: 1, onProgress: 1, shards: 1, loadCheckpoint: 1 } satisfies Record<keyof EvalRunnerOptions, 1>);

export interface RunMechintEvalArgs {
  /** A checkpoint (model.json directory) loaded into the runner's model before the analyses. */
  checkpointPath?: string;
  /** A shard directory, a shard file, or `s3://bucket/prefix`. */
  hiddenShardsPath: string;
  /** Inputs (and targets) for analyses that run the model. */
  evalData?: EvalData | null;
  /** Layers to analyse; default: the config's sampleLayers when given, else every layer in the shards. */
  layers?: string[];
}
const EVAL_ARG_KEYS = Object.keys({ checkpointPath: 1, hiddenShardsPath: 1, evalData: 1, layers: 1 } satisfies Record<keyof RunMechintEvalArgs, 1>);

/** The guide's result structure: `{ config, analyses }`. */
export interface EvalResults {
  config: Record<string, unknown>;
  analyses: AnalysisResults;
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
  summary: { shards_path: string; layers: string[]; started: string; seconds: number; missing_shards: string[] } | null = null;
  /** Every result of the last evaluation with its results key (what exportResults records in the manifest). */
  executed: ExecutedResult[] = [];
  protected readonly options: EvalRunnerOptions;
  protected readonly logger: Logger;
  private workDir: string | null = null;

  /**
   * @example
   * const runner = new AnalysisRunner(model, new MechIntConfig({ analysesToRun: ['sae', 'neuron', 'feature'] }));
   * const results = await runner.runMechintEval({ hiddenShardsPath: './mechint_cache' });
   */
  constructor(model: tf.LayersModel | null, config: MechIntConfigInput = {}, options: EvalRunnerOptions = {}) {
    checkKeys('EvalMechIntRunner option', options, RUNNER_OPTION_KEYS);
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

  private async execute(analyses: string[], acts: ShardReader, layers: string[], evalData: EvalData | null, extra: { previous?: AnalysisResults; analysisOptions?: Record<string, unknown>; name?: string } = {}): Promise<ExecuteOutcome> {
    return executeAnalyses(
      { analyses, layers, config: this.config, ...(extra.analysisOptions && extra.name ? { options: { [extra.name]: extra.analysisOptions } } : {}) },
      {
        source: readerSource(acts, this.options.blockRows ?? 8192),
        model: this.model,
        evalData,
        outputDir: await this.outputDir(),
        ...(extra.previous ? { previous: extra.previous as Record<string, Record<string, unknown>> } : {}),
        onProgress: (p) => {
          if (p.stage === 'error') this.logger.warn(`${p.analysis} on ${p.layer} failed: ${p.message}`);
          this.options.onProgress?.(p);
        },
      },
    );
  }

  /**
   * Runs one analysis on layers of the loaded activations; returns layer → result (or `{ error }`).
   * Options merge over the config's `analysisOptions[name]`.
   */
  async runAnalysis(name: string, acts: ShardReader, options: { layers?: string[]; evalData?: EvalData | null; previous?: AnalysisResults; analysisOptions?: Record<string, unknown> } = {}): Promise<Record<string, unknown>> {
    const out = await this.execute([name], acts, options.layers ?? this.layersFor(acts), options.evalData ?? null, { ...options, name });
    return out.analyses[name] ?? {};
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

  /** The config's sampleLayers when the user named them, else every layer in the shards (as the original does). */
  private layersFor(acts: ShardReader): string[] {
    return this.config.isDefault('sampleLayers') || this.config.sampleLayers === null ? acts.layers().map((l) => l.name) : this.config.sampleLayers;
  }

  /** Loads a checkpoint into the runner's model (or makes it the model when there is none). */
  private async applyCheckpoint(path: string): Promise<void> {
    const loaded = await (this.options.loadCheckpoint ?? loadModelFrom)(path);
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
    checkKeys('runMechintEval argument', args, EVAL_ARG_KEYS);
    await initBackend(this.options.backend);
    const started = new Date();
    if (args.checkpointPath) await this.applyCheckpoint(args.checkpointPath);
    const acts = await this.loadActivations(args.hiddenShardsPath);
    const layers = args.layers ?? this.layersFor(acts);
    const names = analysesFor(this.config);
    this.logger.info(`Running ${names.join(', ')} on ${layers.join(', ')}`);
    const out = await this.execute(names, acts, layers, args.evalData ?? null);
    this.executed = out.results;
    this.results = { config: this.config.toJSON(), analyses: out.analyses };
    this.summary = { shards_path: acts.path, layers, started: started.toISOString(), seconds: (Date.now() - started.getTime()) / 1000, missing_shards: [...acts.missingShards] };
    if (acts.missingShards.length > 0) this.logger.warn(`${acts.missingShards.length} listed shard(s) are missing and were not read (allowMissing): ${acts.missingShards.join(', ')}`);
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
