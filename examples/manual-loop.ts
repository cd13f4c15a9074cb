/**
 * Guide: "Manual integration". MechIntHooks in a custom loop built on `optimizer.minimize`
 * (no model.fit): register the hooks, call onTrainingStep after each step, onTrainEnd at the end.
 *
 *   npx tsx examples/manual-loop.ts
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend, MechIntHooks, readManifest, type Manifest, type SamplerStatistics } from 'mechint';
import { isMain, tinyData, tinyModel } from './tiny-model.js';

export interface ManualLoopOptions {
  /** Shard directory. @default a fresh temporary directory */
  dir?: string;
  /** @default 3 */
  epochs?: number;
  /** @default false */
  verbose?: boolean;
}

export interface ManualLoopResult {
  dir: string;
  registered: string[];
  shards: string[];
  manifest: Manifest;
  statistics: SamplerStatistics;
  finalLoss: number;
}

export async function main(options: ManualLoopOptions = {}): Promise<ManualLoopResult> {
  await initBackend();
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'mechint-manual-')));
  const model = tinyModel();

  // The guide's snake_case keys work as they are (a config pasted from Python).
  const hooks = new MechIntHooks({
    sample_layers: ['mamba_backbone.blocks.3', 'popt'],
    save_hidden_every_n_steps: 5,
    storage_path: dir,
    verbose: options.verbose ?? false,
  });
  const registered = hooks.registerHooks(model); // before the first forward pass

  const { xs, ys } = tinyData(128);
  const batchSize = 16;
  const batches = xs.shape[0] / batchSize;
  const optimizer = tf.train.adam(0.01);
  let finalLoss = NaN;
  for (let epoch = 0; epoch < (options.epochs ?? 3); epoch++) {
    for (let batchIdx = 0; batchIdx < batches; batchIdx++) {
      const globalStep = epoch * batches + batchIdx;
      const loss = tf.tidy(() => {
        const xb = xs.slice([batchIdx * batchSize, 0], [batchSize, -1]);
        const yb = ys.slice([batchIdx * batchSize, 0], [batchSize, -1]);
        // Forward pass: the hooked layers' outputs are captured as they run.
        return optimizer.minimize(() => tf.losses.meanSquaredError(yb, model.apply(xb, { training: true }) as tf.Tensor) as tf.Scalar, true)!;
      });
      finalLoss = (await loss.data())[0]!;
      loss.dispose();
      // Saves a shard when globalStep is a multiple of save_hidden_every_n_steps (no manual save needed).
      await hooks.onTrainingStep({ globalStep, epoch, batchIdx });
    }
    hooks.onEpochEnd(epoch); // logs the sampler's statistics when verbose
  }
  const statistics = hooks.sampler!.getStatistics();
  // Saves what is still cached, completes the manifest, removes the hooks.
  await hooks.onTrainEnd();
  tf.dispose([xs, ys]);
  model.dispose();
  return { dir, registered, shards: hooks.savedShards, manifest: (await readManifest(dir))!, statistics, finalLoss };
}

if (isMain(import.meta.url)) {
  const r = await main({ verbose: true });
  console.log(`Hooked ${r.registered.join(', ')}; ${r.shards.length} shard(s) in ${r.dir}; final loss ${r.finalLoss.toFixed(4)}`);
}
