/** `mechint analyze PATH --out DIR`: runs the analyses on a shard directory or file and exports the results. */
import type { Command } from 'commander';
import { MechIntConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { EvalMechIntRunner } from '../report/eval-runner.js';
import { createProgress } from './progress.js';
import { addS3Options, shardSourceFromFlags, type S3Flags } from './s3-flags.js';

export interface AnalyzeFlags extends S3Flags {
  out: string;
  analyses?: string;
  layers?: string;
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

export function analyzeConfig(flags: AnalyzeFlags): MechIntConfig {
  const sae: Record<string, unknown> = {};
  if (flags.saeArch !== undefined) sae.architecture = flags.saeArch;
  const latents = intFlag('sae-latents', flags.saeLatents);
  if (latents !== undefined) sae.n_latents = latents;
  const k = intFlag('sae-k', flags.saeK);
  if (k !== undefined) sae.k = k;
  const epochs = intFlag('sae-epochs', flags.saeEpochs);
  if (epochs !== undefined) sae.epochs = epochs;
  const seed = intFlag('seed', flags.seed, 0);
  const analysisOptions: Record<string, Record<string, unknown>> = { sae: { ...sae, ...(seed === undefined ? {} : { seed }) } };
  if (seed !== undefined) analysisOptions.feature = { seed };
  return new MechIntConfig({
    // Analyse every layer in the shards unless --layers names some.
    sampleLayers: list(flags.layers) ?? null,
    ...(flags.analyses === undefined ? {} : { analysesToRun: list(flags.analyses) as never }),
    analysisOptions,
    verbose: false,
  });
}

export async function runAnalyze(path: string, flags: AnalyzeFlags): Promise<void> {
  const config = analyzeConfig(flags);
  const source = shardSourceFromFlags(path, flags);
  const progress = createProgress();
  const runner = new EvalMechIntRunner(null, config, {
    shards: source.options,
    ...(flags.blockRows === undefined ? {} : { blockRows: intFlag('block-rows', flags.blockRows)! }),
    onProgress: (p) => {
      const epoch = p.epochs ? ` epoch ${p.epoch}/${p.epochs}` : '';
      progress.update(`${p.analysis} ${p.layer}${epoch}`, p.epochs ? (p.epoch ?? 0) / p.epochs : undefined);
    },
  });
  try {
    progress.update(`loading ${source.path}`);
    const results = await runner.runMechintEval({ hiddenShardsPath: source.path });
    const files = await runner.exportResults(flags.out);
    progress.done();
    const failed = Object.entries(results.analyses).flatMap(([name, byLayer]) =>
      typeof byLayer.error === 'string' ? [`${name}: ${byLayer.error}`] : Object.entries(byLayer).filter(([, r]) => typeof (r as { error?: unknown }).error === 'string').map(([layer, r]) => `${name} ${layer}: ${(r as { error: string }).error}`),
    );
    if (flags.json) {
      console.log(JSON.stringify({ results: files.json, report: files.markdown, files: files.files, layers: runner.summary?.layers ?? [], errors: failed }, null, 2));
    } else {
      console.log(`Analysed ${runner.summary?.layers.join(', ')} with ${config.analysesToRun.join(', ')} in ${runner.summary?.seconds.toFixed(1)} s`);
      console.log(`Results: ${files.json}`);
      console.log(`Report:  ${files.markdown}`);
      for (const f of failed) console.log(`Failed: ${f}`);
    }
    if (failed.length > 0) process.exitCode = 1;
  } finally {
    progress.done();
    await runner.dispose();
  }
}

export function registerAnalyzeCommand(program: Command): Command {
  const cmd = program
    .command('analyze')
    .description('Run analyses (sae, neuron, feature, ...) on a shard directory or file and write mechint_results.json and mechint_report.md')
    .argument('<path>', 'shard directory, shard file, or s3://bucket/prefix')
    .requiredOption('--out <dir>', 'directory for the results')
    .option('--analyses <list>', 'comma-separated analyses (default: sae,neuron,feature)')
    .option('--layers <list>', 'comma-separated layer paths (default: every layer in the shards)')
    .option('--sae-arch <arch>', 'SAE architecture: topk or relu')
    .option('--sae-latents <n>', 'SAE latents (default 4 × the layer width)')
    .option('--sae-k <k>', 'active latents per row of the TopK SAE')
    .option('--sae-epochs <n>', 'SAE training epochs')
    .option('--seed <n>', 'seed for SAE and clustering')
    .option('--block-rows <n>', 'rows read per block (the memory bound)')
    .option('--json', 'print a JSON summary');
  return addS3Options(cmd).action((path: string, flags: AnalyzeFlags) => runAnalyze(path, flags));
}
