/**
 * `mechint analyze PATH --out DIR [--model DIR --eval-data FILE] [--config FILE] [--plugin MODULE]`:
 * runs the analyses on a shard directory or file and exports the results. With the model and the
 * eval data (the files `mechint demo` writes) causal, circuit, steering and probe run too.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { tf } from '../backend.js';
import { MechIntConfig, SNAKE_CASE_KEYS } from '../config.js';
import { ConfigError, LayerNotFoundError } from '../errors.js';
import { loadPlugin } from '../analysis/plugins.js';
import { analysisNames, getAnalysis } from '../analysis/registry.js';
import { isAnalysisError } from '../analysis/results.js';
import { loadModelFrom } from '../model/registry.js';
import { EvalMechIntRunner } from '../report/eval-runner.js';
import { closest } from '../suggest.js';
import { registerBuiltinLayerModules } from './layers.js';
import { createProgress } from './progress.js';
import { addS3Options, shardSourceFromFlags, type S3Flags } from './s3-flags.js';

export interface AnalyzeFlags extends S3Flags {
  out: string;
  analyses?: string;
  layers?: string;
  model?: string;
  evalData?: string;
  config?: string;
  plugin?: string[];
  allowMissing?: boolean;
  steps?: string;
  saeArch?: string;
  saeLatents?: string;
  saeK?: string;
  saeEpochs?: string;
  seed?: string;
  blockRows?: string;
  json?: boolean;
}

function intFlag(name: string, value: string | undefined, min = 1): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(`Expected \`--${name}\` to be an integer >= ${min}; got \`${value}\``);
  return n;
}

const list = (v: string | undefined) => (v === undefined ? undefined : v.split(',').map((s) => s.trim()).filter(Boolean));

/** A config file's options (MechIntConfig keys, camelCase or snake_case). */
async function configFile(path: string): Promise<Record<string, unknown>> {
  let v: unknown;
  try {
    v = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`Cannot read \`--config ${path}\`: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`Expected \`--config ${path}\` to hold a JSON object of MechIntConfig options`);
  return v as Record<string, unknown>;
}

/** `--steps all|last|FROM-TO`: the training steps every row-reading analysis reads. */
function stepsFlag(value: string | undefined): 'all' | 'last' | [number, number] | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (v === 'all' || v === 'last') return v;
  const m = /^(\d+)\s*[-:]\s*(\d+)$/.exec(v);
  if (m && Number(m[1]) <= Number(m[2])) return [Number(m[1]), Number(m[2])];
  throw new ConfigError(`Expected \`--steps\` to be all, last, or FROM-TO (global steps, FROM <= TO, e.g. 200-600); got \`${value}\``);
}

/** Analyses named by --analyses, checked in the flag's own terms. */
function analysesFlag(value: string | undefined): string[] | undefined {
  const names = list(value);
  for (const n of names ?? []) {
    if (!getAnalysis(n)) {
      const near = closest(n, analysisNames());
      throw new ConfigError(`Unknown analysis \`${n}\` in --analyses${near ? `; did you mean \`${near}\`?` : ''} The analyses are ${analysisNames().join(', ')} (a --plugin adds its own)`);
    }
  }
  return names;
}

export async function analyzeConfig(flags: AnalyzeFlags): Promise<MechIntConfig> {
  const file = flags.config ? await configFile(flags.config) : {};
  const camel = (k: string) => Object.entries(SNAKE_CASE_KEYS).find(([, s]) => s === k)?.[0] ?? k;
  const base = Object.fromEntries(Object.entries(file).map(([k, v]) => [camel(k), v]));
  const fileOptions = (base.analysisOptions ?? {}) as Record<string, Record<string, unknown>>;
  const sae: Record<string, unknown> = { ...fileOptions.sae };
  if (flags.saeArch !== undefined) sae.architecture = flags.saeArch;
  const latents = intFlag('sae-latents', flags.saeLatents);
  if (latents !== undefined) sae.n_latents = latents;
  const k = intFlag('sae-k', flags.saeK);
  if (k !== undefined) sae.k = k;
  const epochs = intFlag('sae-epochs', flags.saeEpochs);
  if (epochs !== undefined) sae.epochs = epochs;
  const seed = intFlag('seed', flags.seed, 0);
  const analysisOptions: Record<string, Record<string, unknown>> = { ...fileOptions };
  if (Object.keys(sae).length > 0 || seed !== undefined) analysisOptions.sae = { ...sae, ...(seed === undefined ? {} : { seed }) };
  if (seed !== undefined) analysisOptions.feature = { ...fileOptions.feature, seed };
  const analyses = analysesFlag(flags.analyses);
  const selection = stepsFlag(flags.steps);
  if (selection !== undefined) {
    const names = analyses ?? (base.analysesToRun as string[] | undefined) ?? ['sae', 'neuron', 'feature'];
    for (const n of names) if (getAnalysis(n)?.readsRows !== false) analysisOptions[n] = { ...analysisOptions[n], steps: selection };
  }
  return new MechIntConfig({
    verbose: false,
    ...base,
    // Every layer in the shards unless --layers (or the config file) names some.
    sampleLayers: list(flags.layers) ?? (base.sampleLayers as string[] | undefined) ?? null,
    ...(analyses === undefined ? {} : { analysesToRun: analyses }),
    analysisOptions,
  });
}

export async function runAnalyze(path: string, flags: AnalyzeFlags): Promise<void> {
  for (const p of flags.plugin ?? []) await loadPlugin(p);
  const config = await analyzeConfig(flags);
  const source = shardSourceFromFlags(path, flags);
  registerBuiltinLayerModules();
  let model: tf.LayersModel | null = null;
  if (flags.model) model = await loadModelFrom(flags.model);
  const evalData = flags.evalData ? await (await import('../report/eval-data-file.js')).readEvalDataFile(flags.evalData) : null;
  const progress = createProgress();
  const runner = new EvalMechIntRunner(model, config, {
    shards: { ...source.options, ...(flags.allowMissing ? { allowMissing: true } : {}) },
    ...(flags.blockRows === undefined ? {} : { blockRows: intFlag('block-rows', flags.blockRows)! }),
    onProgress: (p) => {
      const epoch = p.epochs ? ` epoch ${p.epoch}/${p.epochs}` : '';
      progress.update(`${p.analysis} ${p.layer}${epoch}`, p.epochs ? (p.epoch ?? 0) / p.epochs : undefined);
    },
  });
  try {
    progress.update(`loading ${source.path}`);
    const acts = await runner.loadActivations(source.path);
    const held = acts.layers().map((l) => l.name);
    for (const l of list(flags.layers) ?? []) {
      if (!held.includes(l)) {
        const near = closest(l, held);
        throw new LayerNotFoundError(`Unknown layer \`${l}\` in --layers${near ? `; did you mean \`${near}\`?` : ''} The shards at ${source.path} hold ${held.join(', ')}`);
      }
    }
    const results = await runner.runMechintEval({ hiddenShardsPath: source.path, evalData });
    const files = await runner.exportResults(flags.out);
    progress.done();
    const failed = Object.entries(results.analyses).flatMap(([name, byLayer]) =>
      Object.entries(byLayer ?? {}).filter(([, r]) => isAnalysisError(r)).map(([layer, r]) => `${name} ${layer}: ${(r as { error: string }).error}`),
    );
    if (flags.json) {
      console.log(JSON.stringify({ results: files.json, report: files.markdown, files: files.files, layers: runner.summary?.layers ?? [], errors: failed, missing_shards: runner.summary?.missing_shards ?? [] }, null, 2));
    } else {
      console.log(`Analysed ${runner.summary?.layers.join(', ')} with ${config.analysesToRun.join(', ')} in ${runner.summary?.seconds.toFixed(1)} s`);
      console.log(`Results: ${files.json}`);
      console.log(`Report:  ${files.markdown}`);
      for (const f of failed) console.log(`Failed: ${f}`);
      const missing = runner.summary?.missing_shards ?? [];
      if (missing.length > 0) console.log(`Missing (--allow-missing): ${missing.length} listed shard(s) not read: ${missing.join(', ')}`);
    }
    if (failed.length > 0) process.exitCode = 1;
  } finally {
    progress.done();
    await runner.dispose();
    model?.dispose();
  }
}

export function registerAnalyzeCommand(program: Command): Command {
  const cmd = program
    .command('analyze')
    .description('Run analyses (sae, neuron, feature, ...; with --model and --eval-data also causal, circuit, steering, probe) on a shard directory or file and write mechint_results.json and the reports')
    .argument('<path>', 'shard directory, shard file, or s3://bucket/prefix')
    .requiredOption('--out <dir>', 'directory for the results')
    .option('--analyses <list>', 'comma-separated analyses (default: the config\'s analyses_to_run, sae,neuron,feature)')
    .option('--layers <list>', 'comma-separated layer paths (default: every layer in the shards)')
    .option('--model <dir>', 'tfjs model.json directory (e.g. mechint demo\'s checkpoints/best), for causal, circuit, steering and probe')
    .option('--eval-data <file>', 'eval inputs, targets and probe targets: a safetensors file as `mechint demo` writes (eval_data.safetensors)')
    .option('--config <file>', 'JSON file of MechIntConfig options (analyses_to_run, analysis_options, sample_layers, ...), under the flags')
    .option('--plugin <module>', 'module exporting custom analyses (`analyses` or a default definition) and/or registerLayers(); repeatable', (v: string, prev: string[] = []) => [...prev, v])
    .option('--sae-arch <arch>', 'SAE architecture: topk or relu')
    .option('--sae-latents <n>', 'SAE latents (default 4 × the layer width)')
    .option('--sae-k <k>', 'active latents per row of the TopK SAE')
    .option('--sae-epochs <n>', 'SAE training epochs')
    .option('--seed <n>', 'seed for SAE and clustering')
    .option('--block-rows <n>', 'rows read per block (the memory bound)')
    .option('--steps <steps>', 'training steps the analyses read: all (default), last (the trained model), or FROM-TO global steps')
    .option('--allow-missing', 'analyse the shards that are there when the manifest lists some that are not (the results name the missing ones)')
    .option('--json', 'print a JSON summary');
  return addS3Options(cmd).action((path: string, flags: AnalyzeFlags) => runAnalyze(path, flags));
}
