/**
 * Guide: "TensorFlow.js training integration". MechIntCallback captures activations during
 * `model.fit`, next to tf.callbacks.earlyStopping and mechint's ModelCheckpoint (the guide's
 * Lightning `callbacks=[MechIntCallback(...), ModelCheckpoint(...), EarlyStopping(...)]`).
 *
 *   npx tsx examples/fit-callback.ts
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend, listLayerPaths, MechIntCallback, MechIntConfig, ModelCheckpoint, readManifest, type Manifest } from 'mechint';
import { isMain, tinyData, tinyModel } from './tiny-model.js';

export interface FitCallbackOptions {
  /** Where shards and checkpoints go. @default a fresh temporary directory */
  dir?: string;
  /** @default 4 */
  epochs?: number;
  /** Log `[MechInt]` lines. @default false */
  verbose?: boolean;
}

export interface FitCallbackResult {
  dir: string;
  layerPaths: string[];
  shards: string[];
  manifest: Manifest;
  bestEpoch: number | null;
  epochsRun: number;
}

export async function main(options: FitCallbackOptions = {}): Promise<FitCallbackResult> {
  await initBackend(); // the WebAssembly backend (tfjs-node's when it is loaded)
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'mechint-fit-')));
  const model = tinyModel();
  // Dotted paths through nested models: the guide's `named_modules()` loop.
  const layerPaths = listLayerPaths(model);

  const config = new MechIntConfig({
    sampleLayers: ['mamba_backbone.blocks.3', 'popt'],
    saveHiddenEveryNSteps: 4, // a shard every 4 global steps (batches)
    storagePath: join(dir, 'mechint_cache'),
    maxActivationsPerShard: 256, // at most 256 rows per layer wait in memory
    verbose: options.verbose ?? false,
  });
  const mechint = new MechIntCallback(config);
  const checkpoint = new ModelCheckpoint({ dir: join(dir, 'checkpoints'), monitor: 'val_loss' });
  const earlyStopping = tf.callbacks.earlyStopping({ monitor: 'val_loss', patience: 2 });

  const { xs, ys } = tinyData(160);
  model.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
  const history = await model.fit(xs, ys, {
    epochs: options.epochs ?? 4,
    batchSize: 16,
    validationSplit: 0.2, // validation batches are not captured: only training steps are
    callbacks: [mechint, checkpoint, earlyStopping],
    verbose: 0,
  });
  tf.dispose([xs, ys]);

  // The callback saved the last partial interval, marked the manifest complete and removed its hooks.
  const manifest = (await readManifest(config.storagePath))!;
  model.dispose();
  return { dir, layerPaths, shards: mechint.hooks.savedShards, manifest, bestEpoch: checkpoint.bestEpoch, epochsRun: history.epoch.length };
}

if (isMain(import.meta.url)) {
  const r = await main({ verbose: true });
  console.log(`Layer paths: ${r.layerPaths.join(', ')}`);
  console.log(`${r.epochsRun} epoch(s), best epoch ${r.bestEpoch}; ${r.shards.length} shard(s), manifest ${r.manifest.status}, in ${r.dir}`);
}
