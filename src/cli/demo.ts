/** `mechint demo`: trains NeuroFMX-mini on synthetic neural data with the hooks on, analyses it, writes the report. */
import type { Command } from 'commander';
import { relative } from 'node:path';
import { runDemo, DEMO_LAYERS, type DemoSummary } from '../demo/run.js';
import { ConfigError } from '../errors.js';
import { createProgress } from './progress.js';
import { addS3Options, s3ConfigFromFlags, type S3Flags } from './s3-flags.js';

interface DemoFlags extends S3Flags {
  out: string;
  epochs?: string;
  seed?: string;
  trials?: string;
  saeEpochs?: string;
  json?: boolean;
}

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new ConfigError(`Expected \`--${name}\` to be an integer; got \`${v}\``);
  return n;
}

const f = (v: unknown, d = 2) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '–');

/** A few lines a newcomer can read: what was trained, what the analyses found, where the files are. */
export function demoSummaryText(s: DemoSummary): string {
  const rel = (p: string) => relative(process.cwd(), p) || '.';
  const a = s.results.analyses as Record<string, Record<string, Record<string, unknown>>>;
  const lines = [
    `Trained NeuroFMX-mini for ${s.trainSeconds.toFixed(1)} s (best epoch ${s.bestEpoch ?? '–'}); held-out behaviour decoding R² ${f(s.heldOutBehaviorR2)}.`,
    `Captured ${DEMO_LAYERS.join(', ')} into ${s.shardsWritten.length} shard(s); analysed in ${s.analysisSeconds.toFixed(1)} s.`,
  ];
  for (const layer of DEMO_LAYERS) {
    const parts: string[] = [];
    const probe = a.probe?.[layer]?.targets as Record<string, { r2: number }> | undefined;
    if (probe?.latents) parts.push(`latents probe R² ${f(probe.latents.r2)}`);
    const feature = a.feature?.[layer] as { explained_variance?: number[]; participation_ratio?: number } | undefined;
    if (feature?.explained_variance) parts.push(`top-10 PCs ${(feature.explained_variance.slice(0, 10).reduce((x, y) => x + y, 0) * 100).toFixed(0)}% var`);
    const sae = a.sae?.[layer] as { final_l0?: number; explained_variance?: number } | undefined;
    if (sae?.final_l0 !== undefined) parts.push(`SAE L0 ${f(sae.final_l0, 1)}, EV ${f(sae.explained_variance)}`);
    const neuron = a.neuron?.[layer] as { n_dead_units?: number; n_units?: number } | undefined;
    if (neuron?.n_units !== undefined) parts.push(`${neuron.n_dead_units}/${neuron.n_units} dead units`);
    if (parts.length) lines.push(`  ${layer}: ${parts.join('; ')}`);
  }
  const errors = Object.entries(a).flatMap(([name, byLayer]) =>
    typeof byLayer.error === 'string' ? [`${name}: ${String(byLayer.error)}`] : Object.entries(byLayer).filter(([, r]) => r && typeof r.error === 'string').map(([l, r]) => `${name} ${l}: ${String(r.error)}`),
  );
  for (const e of errors) lines.push(`  failed: ${e}`);
  lines.push(
    '',
    `Shards and manifest: ${rel(s.cacheDir)}`,
    `Checkpoints:         ${rel(s.checkpointsDir)}`,
    `Results:             ${rel(s.files.json)}`,
    `Report:              ${rel(s.files.html)} (and ${rel(s.files.markdown)})`,
    '',
    `Browse it: npx mechint serve --cache ${rel(s.cacheDir)} --model ${rel(s.checkpointsDir)}/best --eval-data ${rel(s.evalDataFile)}`,
  );
  return lines.join('\n');
}

export function registerDemoCommand(program: Command): Command {
  const cmd = program
    .command('demo')
    .description('Train NeuroFMX-mini on synthetic neural data with activation capture on, run every analysis, and write the report')
    .option('--out <dir>', 'output directory', './mechint_demo')
    .option('--epochs <n>', 'training epochs (default 10)')
    .option('--seed <n>', 'seed of data, model and analyses (default 0)')
    .option('--trials <n>', 'synthetic trials, a fifth held out (default 400)')
    .option('--sae-epochs <n>', 'SAE training epochs per layer (default 5)')
    .option('--json', 'print a JSON summary');
  return addS3Options(cmd).action(async (flags: DemoFlags) => {
      const progress = createProgress();
      const summary = await runDemo({
        out: flags.out,
        epochs: int('epochs', flags.epochs),
        seed: int('seed', flags.seed),
        trials: int('trials', flags.trials),
        saeEpochs: int('sae-epochs', flags.saeEpochs),
        storage: s3ConfigFromFlags(flags),
        onProgress: (p) => {
          if (p.stage === 'train') progress.update(`training epoch ${p.epoch}/${p.epochs} loss ${f(p.loss, 3)} val ${f(p.valLoss, 3)}`, p.epoch / p.epochs);
          else {
            const e = p.event;
            progress.update(`${e.analysis} ${e.layer}${e.epochs ? ` epoch ${e.epoch}/${e.epochs}` : ''}`, e.epochs ? (e.epoch ?? 0) / e.epochs : undefined);
          }
        },
      }).finally(() => progress.done());
      if (flags.json) {
        console.log(JSON.stringify({
          out: summary.out, cache: summary.cacheDir, checkpoints: summary.checkpointsDir, results: summary.files.json, report: summary.files.markdown, html: summary.files.html, eval_data: summary.evalDataFile,
          train_seconds: summary.trainSeconds, analysis_seconds: summary.analysisSeconds, held_out_behavior_r2: summary.heldOutBehaviorR2,
          best_epoch: summary.bestEpoch, shards: summary.shardsWritten.length,
        }, null, 2));
      } else console.log(demoSummaryText(summary));
    });
}
