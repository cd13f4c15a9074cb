/**
 * The `sae` analysis: trains a sparse autoencoder (TopK by default, or ReLU+L1) on the rows of
 * one layer, streamed block by block and shuffled through a bounded buffer, then measures it in
 * a final pass (L0, MSE, explained variance, dead latents, top-activating rows) and saves its
 * weights. Memory is bounded by the shuffle buffer and the SAE, never by the data.
 *
 * Passes over the source: one for the mean and variance, `epochs` for training, one final.
 */
import { initBackend } from '../backend.js';
import { FormatError } from '../errors.js';
import { createRng } from '../random.js';
import type { RowSource } from '../storage/rows.js';
import { createParams, disposeParams, readParams, type LatentCode, type SaeArchitectureName, type SaeHyper, type SaeTrainer } from './sae-common.js';
import { resolveSaeOptions, saeOptions, type ResolvedSaeOptions, type SaeOptions } from './sae-options.js';
import { getSaeArchitecture } from './sae-registry.js';
import { shuffledBatches } from './sae-shuffle.js';
import { attachOrigins, LatentTracker, type TopLatent } from './sae-top-rows.js';
import { saeWeightsPath, saveSae, toRawSpace, type SaeWeights } from './sae-weights.js';
import { defineAnalysis } from './definition.js';

export interface SaeEpochInfo {
  epoch: number;
  epochs: number;
  loss: number;
  l0: number;
  rows: number;
  /** Wall time of the epoch's training steps. */
  seconds: number;
}

export interface SaeContext {
  /** Layer name for result keys and the weights file; wins over `options.layer`. */
  layer?: string;
  /** When given, weights go to `${outputDir}/sae/<layer>.safetensors`. */
  outputDir?: string;
  /** Called after each epoch (for progress bars). */
  onEpoch?: (info: SaeEpochInfo) => void;
}

/** What the analysis returns for one layer (JSON-safe, the guide's snake_case keys). */
export interface SaeResult {
  analysis_type: 'sae';
  layer_name: string;
  architecture: SaeArchitectureName;
  n_latents: number;
  /** Active latents per row for TopK; null for ReLU. */
  k: number | null;
  dim: number;
  n_rows: number;
  epochs: number;
  batch_size: number;
  lr: number;
  seed: number;
  normalize: ResolvedSaeOptions['normalize'];
  l1_coefficient: number | null;
  /** Per epoch: `${layer}/loss` (mean training loss, normalised rows) and `${layer}/l0_sparsity` (mean active latents per row). */
  training_stats: Record<string, number[]>;
  /** Mean number of active latents per row in the final pass (a count). */
  final_l0: number;
  /** Mean training loss of the last epoch. */
  final_loss: number;
  /** Mean squared error per element on raw rows, final pass. */
  mse: number;
  /** 1 − Σ‖x − x̂‖² / Σ‖x − mean‖², final pass; null when the rows have no variance. */
  explained_variance: number | null;
  /** Fraction of latents never active in the final pass. */
  dead_fraction: number;
  n_dead: number;
  /** Per latent, the fraction of rows on which it is active (final pass). */
  latent_frequencies: number[];
  /** The most frequently active latents with their top-activating rows. */
  top_latents: TopLatent[];
  /** Path of the saved weights, when an output directory was given. */
  weights_file?: string;
}

interface DataStats {
  nRows: number;
  dim: number;
  mean: Float64Array;
  /** Σ‖x − mean‖² over all rows. */
  sqDev: number;
}

async function dataStats(source: RowSource): Promise<DataStats> {
  let dim = -1;
  let n = 0;
  let pivot = new Float64Array(0);
  let sum = new Float64Array(0);
  let sq = 0;
  for await (const block of source()) {
    if (block.nRows === 0) continue;
    if (dim < 0) {
      dim = block.dim;
      // Sums relative to the first row, so a large common offset does not eat the precision.
      pivot = Float64Array.from(block.rows.subarray(0, dim));
      sum = new Float64Array(dim);
    } else if (block.dim !== dim) {
      throw new FormatError(`Row block from \`${block.shard ?? 'source'}\` has ${block.dim} values per row; earlier blocks had ${dim}`);
    }
    const { rows } = block;
    for (let r = 0; r < block.nRows; r++) {
      const base = r * dim;
      for (let j = 0; j < dim; j++) {
        const v = rows[base + j]! - pivot[j]!;
        sum[j]! += v;
        sq += v * v;
      }
    }
    n += block.nRows;
  }
  if (n === 0) throw new FormatError('The SAE analysis got no rows to train on');
  const mean = new Float64Array(dim);
  let shiftSq = 0;
  for (let j = 0; j < dim; j++) {
    const s = sum[j]! / n;
    mean[j] = pivot[j]! + s;
    shiftSq += s * s;
  }
  return { nRows: n, dim, mean, sqDev: Math.max(0, sq - n * shiftSq) };
}

/**
 * Trains and evaluates an SAE on the rows of one layer.
 * @example
 * const result = await runSaeAnalysis(rowsFromMatrix(acts, 64), { k: 4, n_latents: 256 }, { layer: 'blocks.3', outputDir: 'out' });
 * console.log(result.final_l0, result.explained_variance, result.weights_file);
 */
export async function runSaeAnalysis(source: RowSource, options: SaeOptions | Record<string, unknown> = {}, context: SaeContext = {}): Promise<SaeResult> {
  await initBackend();
  const stats = await dataStats(source);
  const o = resolveSaeOptions(options, stats.dim);
  const layer = context.layer ?? o.layer;
  const d = stats.dim;
  const arch = getSaeArchitecture(o.architecture);
  const hp: SaeHyper = {
    dim: d, nLatents: o.nLatents, k: o.k, l1Coefficient: o.l1Coefficient, lr: o.lr,
    auxK: o.architecture === 'topk' ? o.auxK : 0, auxCoefficient: o.auxCoefficient, deadStepsThreshold: o.deadStepsThreshold,
    workers: o.workers, maxRows: Math.max(o.batchSize, EVAL_CHUNK_ROWS),
  };
  const shift = o.normalize === 'none' ? new Float64Array(d) : stats.mean;
  const scale = o.normalize === 'scale' && stats.sqDev > 0 ? Math.sqrt(stats.sqDev / (stats.nRows * d)) : 1;
  const rng = createRng(o.seed);
  const init = arch.init(hp, rng);
  // The pre-encoder bias starts at the data mean, wherever that lies after normalisation.
  for (let j = 0; j < d; j++) init.b_dec[j] = (stats.mean[j]! - shift[j]!) / scale;
  const params = createParams(init, hp);
  let trainer: SaeTrainer;
  try {
    trainer = await arch.createTrainer(params, hp);
  } catch (err) {
    disposeParams(params);
    throw err;
  }
  const lossKey = `${layer}/loss`;
  const l0Key = `${layer}/l0_sparsity`;
  const training_stats: Record<string, number[]> = { [lossKey]: [], [l0Key]: [] };
  try {
    for (let epoch = 0; epoch < o.epochs; epoch++) {
      const t0 = performance.now();
      for await (const b of shuffledBatches(source, { dim: d, batchSize: o.batchSize, bufferRows: o.shuffleBufferRows, rng, shift, invScale: 1 / scale })) {
        trainer.step(b.rows, b.nRows);
      }
      // Metrics wait for the last step, so the epoch's time includes it.
      const m = trainer.takeMetrics();
      const seconds = (performance.now() - t0) / 1000;
      const loss = m.loss / Math.max(1, m.rows);
      const l0 = m.l0 / Math.max(1, m.rows);
      training_stats[lossKey]!.push(loss);
      training_stats[l0Key]!.push(l0);
      context.onEpoch?.({ epoch: epoch + 1, epochs: o.epochs, loss, l0, rows: m.rows, seconds });
    }
    const encode = trainer.encode?.bind(trainer) ?? ((rows: Float32Array, n: number) => arch.encode(params, hp, rows, n));
    const evaluation = await finalPass(source, encode, hp, o, shift, scale, stats);
    const raw = toRawSpace(trainer.values?.() ?? readParams(params), shift, scale);
    const weights: SaeWeights = { ...raw, architecture: o.architecture, dim: d, nLatents: o.nLatents, k: o.architecture === 'topk' ? o.k : o.nLatents, layer };
    const result: SaeResult = {
      analysis_type: 'sae',
      layer_name: layer,
      architecture: o.architecture,
      n_latents: o.nLatents,
      k: o.architecture === 'topk' ? o.k : null,
      dim: d,
      n_rows: stats.nRows,
      epochs: o.epochs,
      batch_size: o.batchSize,
      lr: o.lr,
      seed: o.seed,
      normalize: o.normalize,
      l1_coefficient: o.architecture === 'relu' ? o.l1Coefficient : null,
      training_stats,
      final_loss: training_stats[lossKey]!.at(-1)!,
      ...evaluation,
    };
    if (context.outputDir !== undefined) {
      result.weights_file = saeWeightsPath(context.outputDir, layer);
      await saveSae(result.weights_file, weights, { normalize: o.normalize, input_scale: String(scale), n_rows: String(stats.nRows) });
    }
    return result;
  } finally {
    await trainer.dispose();
    disposeParams(params);
  }
}

const EVAL_CHUNK_ROWS = 4096;

type Encode = (rows: Float32Array, nRows: number) => { code: LatentCode; sqErr: number };

async function finalPass(
  source: RowSource, encode: Encode, hp: SaeHyper,
  o: ResolvedSaeOptions, shift: Float64Array, scale: number, stats: DataStats,
): Promise<Pick<SaeResult, 'final_l0' | 'mse' | 'explained_variance' | 'dead_fraction' | 'n_dead' | 'latent_frequencies' | 'top_latents'>> {
  const { dim: d, nLatents: L } = hp;
  const tracker = new LatentTracker(L, o.topRowsPerLatent);
  const chunk = new Float32Array(EVAL_CHUNK_ROWS * d);
  let sqErr = 0;
  let sqDev = 0;
  const inv = 1 / scale;
  for await (const block of source()) {
    const ref = tracker.source(block.shard, block.globalStep);
    const offset = block.rowOffset ?? 0;
    for (let start = 0; start < block.nRows; start += EVAL_CHUNK_ROWS) {
      const n = Math.min(EVAL_CHUNK_ROWS, block.nRows - start);
      for (let i = 0; i < n * d; i++) {
        const j = i % d;
        const raw = block.rows[start * d + i]!;
        chunk[i] = (raw - shift[j]!) * inv;
        const dev = raw - stats.mean[j]!;
        sqDev += dev * dev;
      }
      const { code, sqErr: e } = encode(chunk, n);
      sqErr += e;
      tracker.rows += n;
      const per = code.kind === 'sparse' ? code.perRow : L;
      for (let r = 0; r < n; r++) {
        const row = offset + start + r;
        for (let j = 0; j < per; j++) {
          const v = code.values[r * per + j]!;
          if (v > 0) tracker.add(code.kind === 'sparse' ? code.indices[r * per + j]! : j, v * scale, ref, row);
        }
      }
    }
  }
  const rawSqErr = sqErr * scale * scale;
  const frequencies = tracker.frequencies();
  const nDead = frequencies.filter((f) => f === 0).length;
  return {
    final_l0: tracker.active / stats.nRows,
    mse: rawSqErr / (stats.nRows * d),
    explained_variance: sqDev > 0 ? 1 - rawSqErr / sqDev : null,
    dead_fraction: nDead / L,
    n_dead: nDead,
    latent_frequencies: frequencies,
    top_latents: tracker.top(o.nTopLatents),
  };
}

export const saeAnalysis = defineAnalysis({
  name: 'sae',
  title: 'Sparse autoencoders',
  description: "a sparse autoencoder (TopK or ReLU+L1) trained on the layer's rows",
  options: saeOptions,
  usesTf: true,
  run: async (rows, options, ctx) => {
    const result = await runSaeAnalysis(rows, options, {
      layer: ctx.layer,
      ...(ctx.outputDir === undefined ? {} : { outputDir: ctx.outputDir }),
      onEpoch: (e) => ctx.onProgress?.({ analysis: 'sae', layer: ctx.layer, stage: 'epoch', epoch: e.epoch, epochs: e.epochs }),
    });
    // Each top row says where it came from (step, epoch, batch, row, position) and, when captured, its input.
    if (ctx.origins) await attachOrigins(result.top_latents, ctx.origins);
    return result;
  },
});
