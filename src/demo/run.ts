/**
 * The embedded default: synthetic neural data with known latents → NeuroFMX-mini trained with
 * MechIntCallback and ModelCheckpoint → every analysis (with the model and held-out data) →
 * results and report. `mechint demo` runs this with nothing to configure.
 */
import { join, resolve } from 'node:path';
import { initBackend, tf } from '../backend.js';
import { MechIntCallback } from '../capture/callback.js';
import { MechIntConfig, type AnalysisName, type MechIntOptions } from '../config.js';
import { ConfigError } from '../errors.js';
import { ModelCheckpoint } from '../model/checkpoint.js';
import { analysisNames } from '../analysis/registry.js';
import type { AnalysisProgress, EvalData } from '../analysis/types.js';
import { writeEvalDataFile } from '../report/eval-data-file.js';
import { EvalMechIntRunner, type ExportedFiles } from '../report/eval-runner.js';
import type { EvalResults } from '../analysis/runner.js';
import { generateSyntheticNeuralData, splitTrials, type SyntheticNeuralData } from './synthetic.js';
import { buildFitData, compileNeuroFMXMini, createNeuroFMXMini, evaluateBehaviorR2, loadNeuroFMXMini, NEUROFMX_MINI_DEMO_DEFAULTS } from './neurofmx-mini.js';

/** The layers the demo captures: the guide's defaults plus the perceiver, in forward order. */
export const DEMO_LAYERS = ['mamba_backbone.blocks.3', 'perceiver', 'popt'];

/** Cards per SAE layer: each card runs the model twice more (removal, steering), so the demo keeps half the default to stay quick. */
const DEMO_CARDS = 12;

export interface DemoOptions {
  /** Output directory. @default './mechint_demo' */
  out?: string;
  /** Training epochs. @default 10 */
  epochs?: number;
  /** Seed of the data, the model and the analyses. @default 0 */
  seed?: number;
  /** Synthetic trials (a fifth is held out). @default 400 */
  trials?: number;
  /** SAE training epochs per layer. @default 5 */
  saeEpochs?: number;
  /** Save a shard every N global steps. @default 50 */
  saveEvery?: number;
  /** Storage options for the shards (storageBackend, s3Bucket, s3Prefix, s3Endpoint, ...). @default local */
  storage?: Partial<MechIntOptions>;
  /** Progress events, for a progress display. */
  onProgress?: (p: DemoProgress) => void;
}

export type DemoProgress =
  | { stage: 'train'; epoch: number; epochs: number; loss?: number; valLoss?: number }
  | { stage: 'analysis'; event: AnalysisProgress };

export interface DemoSummary {
  out: string;
  /** The trained model (the best checkpoint's weights). */
  model: tf.LayersModel;
  /** The held-out trials the analyses ran on. */
  heldOut: SyntheticNeuralData;
  cacheDir: string;
  checkpointsDir: string;
  resultsDir: string;
  /** The held-out trials (inputs, targets, probe targets) for `mechint serve --eval-data`. */
  evalDataFile: string;
  files: ExportedFiles;
  results: EvalResults;
  trainSeconds: number;
  analysisSeconds: number;
  heldOutBehaviorR2: number;
  bestEpoch: number | null;
  shardsWritten: string[];
}

/**
 * What the cards analysis relates latents to: each true latent and behaviour dimension per time
 * bin (`latent_0`…, `behavior_0`…, [N, T]), the time bin itself, and the condition (categorical, [N]).
 */
export function demoCovariates(d: SyntheticNeuralData): NonNullable<EvalData['covariates']> {
  const N = d.nTrials;
  const T = d.nBins;
  const column = (src: Float32Array, width: number, j: number) => Float32Array.from({ length: N * T }, (_, r) => src[r * width + j]!);
  const out: NonNullable<EvalData['covariates']> = {};
  for (let j = 0; j < d.nLatents; j++) out[`latent_${j}`] = { data: column(d.latents, d.nLatents, j), shape: [N, T] };
  for (let j = 0; j < d.behaviorDims; j++) out[`behavior_${j}`] = { data: column(d.behavior, d.behaviorDims, j), shape: [N, T] };
  out.time_bin = { data: Float32Array.from({ length: N * T }, (_, r) => r % T), shape: [N, T] };
  out.condition = { data: Float32Array.from(d.conditions), shape: [N], categorical: true };
  return out;
}

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < min) throw new ConfigError(`Expected \`${name}\` to be an integer >= ${min}; got \`${String(value)}\``);
  return v;
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoSummary> {
  await initBackend();
  const out = resolve(options.out ?? './mechint_demo');
  const epochs = positiveInt('epochs', options.epochs, NEUROFMX_MINI_DEMO_DEFAULTS.epochs);
  const seed = positiveInt('seed', options.seed, 0, 0);
  const trials = positiveInt('trials', options.trials, NEUROFMX_MINI_DEMO_DEFAULTS.nTrials, 10);
  const saeEpochs = positiveInt('sae-epochs', options.saeEpochs, 5);
  const saveEvery = positiveInt('save-every', options.saveEvery, 50);
  const cacheDir = join(out, 'mechint_cache');
  const checkpointsDir = join(out, 'checkpoints');
  const resultsDir = join(out, 'mechint_results');
  const progress = options.onProgress ?? (() => {});

  const data = generateSyntheticNeuralData({ nTrials: trials, seed });
  const { train, heldOut } = splitTrials(data, { heldOutFraction: NEUROFMX_MINI_DEMO_DEFAULTS.heldOutFraction, seed });
  const model = createNeuroFMXMini({ nNeurons: data.nNeurons, nBins: data.nBins, behaviorDims: data.behaviorDims, seed });
  compileNeuroFMXMini(model, { learningRate: NEUROFMX_MINI_DEMO_DEFAULTS.learningRate });
  const fit = buildFitData(train, { seed });
  const val = buildFitData(heldOut, { seed: seed + 1 });

  const available = new Set(analysisNames());
  // cards after probe: its section sets each true latent's best card beside the probe's R².
  const analyses = (['neuron', 'feature', 'dynamics', 'sae', 'probe', 'cards', 'causal', 'circuit'] as AnalysisName[]).filter((a) => available.has(a));
  const config = new MechIntConfig({
    sampleLayers: DEMO_LAYERS,
    saveHiddenEveryNSteps: saveEvery,
    analysesToRun: analyses,
    storagePath: cacheDir,
    enableFeatureSteering: available.has('steering'),
    verbose: false,
    analysisOptions: { sae: { epochs: saeEpochs, k: 8, seed }, feature: { seed }, probe: { seed }, cards: { seed, maxCards: DEMO_CARDS } },
    ...options.storage,
  });
  const mechint = new MechIntCallback(config);
  const checkpoint = new ModelCheckpoint({ dir: checkpointsDir, monitor: 'val_loss', saveBestOnly: true });
  const reporter = new tf.CustomCallback({
    onEpochEnd: async (epoch, logs) => progress({ stage: 'train', epoch: epoch + 1, epochs, loss: logs?.loss as number | undefined, valLoss: logs?.val_loss as number | undefined }),
  });

  const t0 = performance.now();
  try {
    await model.fit(fit.inputs, [fit.targets.behavior_head, fit.targets.reconstruction_head], {
      epochs,
      batchSize: NEUROFMX_MINI_DEMO_DEFAULTS.batchSize,
      validationData: [val.inputs, [val.targets.behavior_head, val.targets.reconstruction_head]],
      callbacks: [mechint, checkpoint, reporter],
      verbose: 0,
      shuffle: true,
    });
  } finally {
    fit.dispose();
  }
  const trainSeconds = (performance.now() - t0) / 1000;

  const t1 = performance.now();
  // With storageBackend 's3' the local copies are gone once uploaded: analyse the bucket.
  const s3Only = config.storageBackend === 's3' && config.s3Bucket !== null;
  const shardsPath = s3Only ? `s3://${config.s3Bucket}/${config.s3Prefix}` : cacheDir;
  const runner = new EvalMechIntRunner(model, config, {
    ...(s3Only ? { shards: { s3: { endpoint: config.s3Endpoint, forcePathStyle: config.s3ForcePathStyle } } } : {}),
    loadCheckpoint: (path) => loadNeuroFMXMini(path),
    onProgress: (event) => progress({ stage: 'analysis', event }),
  });
  try {
    const evalData: EvalData = {
      inputs: val.inputs,
      targets: [val.targets.behavior_head, val.targets.reconstruction_head],
      probeTargets: {
        latents: { data: heldOut.latents, shape: heldOut.shapes.latents },
        behavior: { data: heldOut.behavior, shape: heldOut.shapes.behavior },
      },
      covariates: demoCovariates(heldOut),
    };
    const results = await runner.runMechintEval({
      checkpointPath: checkpoint.bestEpoch === null ? undefined : join(checkpointsDir, 'best'),
      hiddenShardsPath: shardsPath,
      evalData,
    });
    const files = await runner.exportResults(resultsDir);
    // The same held-out trials for `mechint serve --eval-data`, so the dashboard can run the model analyses.
    const evalDataFile = join(out, 'eval_data.safetensors');
    await writeEvalDataFile(evalDataFile, evalData);
    const heldOutBehaviorR2 = (await evaluateBehaviorR2(runner.model!, heldOut)).r2;
    return {
      out,
      model: runner.model!,
      heldOut,
      cacheDir,
      checkpointsDir,
      resultsDir,
      evalDataFile,
      files,
      results,
      trainSeconds,
      analysisSeconds: (performance.now() - t1) / 1000,
      heldOutBehaviorR2,
      bestEpoch: checkpoint.bestEpoch,
      shardsWritten: mechint.hooks.savedShards,
    };
  } finally {
    val.dispose();
    await runner.dispose();
  }
}
