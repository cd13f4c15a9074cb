/** What an analysis is given besides the rows of one layer. */
import type { tf } from '../backend.js';
import type { MechIntConfig } from '../config.js';
import type { RowOrigin, RowRef } from '../storage/provenance.js';
import type { RowSource } from '../storage/rows.js';

/** Evaluation data for analyses that run the model (probe, causal, circuit, steering). */
export interface EvalData {
  /** Model inputs, batch-first. */
  inputs: tf.Tensor | tf.Tensor[];
  /** Targets for the model's loss (causal analysis measures the change of the eval loss): one per output, or by output name. */
  targets?: tf.Tensor | tf.Tensor[] | Record<string, tf.Tensor>;
  /** Corrupted inputs for activation patching; made by a corruption option when absent. */
  corruptedInputs?: tf.Tensor | tf.Tensor[];
  /** Arrays a linear probe predicts from each layer: name → values with batch first ([N, k] or [N, T, k]). */
  probeTargets?: Record<string, { data: Float32Array; shape: number[] }>;
  /**
   * Known quantities the `cards` analysis relates each SAE latent to: name → one value per sample
   * (`shape` [N]) or per position ([N, T], lined up with a [N, T, D] layer). Continuous, or
   * categorical with `categorical: true`, whose values are class codes (integers stored as floats).
   */
  covariates?: Record<string, Covariate>;
}

/** One covariate: values with samples first, [N] or [N, T]; `categorical` marks class codes. */
export interface Covariate {
  data: Float32Array;
  shape: number[];
  /** Values are class codes (compared by equality, not magnitude). @default false */
  categorical?: boolean;
}

export interface AnalysisProgress {
  analysis: string;
  layer: string;
  stage: 'start' | 'epoch' | 'done' | 'error';
  epoch?: number;
  epochs?: number;
  message?: string;
}

export interface AnalysisContext {
  layer: string;
  config: MechIntConfig;
  /** Where weights and other files of the analysis may be written. */
  outputDir?: string;
  model: tf.LayersModel | null;
  evalData: EvalData | null;
  /**
   * Results this analysis may read, by analysis then layer: those of this run, and the stored or
   * computed results of what it needs. File paths in them (an SAE's `weights_file`) are absolute,
   * or relative to `outputDir`.
   */
  previous: Record<string, Record<string, unknown>>;
  /** All sampled layers in this evaluation, in order. */
  layers: string[];
  /** Rows of any sampled layer (for analyses that relate layers). */
  rowsOf: (layer: string) => RowSource;
  /** Where rows of this layer came from, by (shard, row) as its blocks name them; absent when the source cannot say (uploads). */
  origins?: (refs: readonly RowRef[]) => Promise<RowOrigin[]>;
  onProgress?: (p: AnalysisProgress) => void;
}
