/**
 * Causal analysis of one layer on eval inputs: what the model loses when units (or the whole
 * layer) are ablated, and how much of the clean-vs-corrupted output difference comes back when
 * the layer's clean activations are patched into a corrupted run.
 *
 * - With targets the effect of an ablation is the change of the eval loss (the compiled loss, or
 *   MSE for an uncompiled model); without, it is the RMS change of the outputs.
 * - Patching runs the corrupted inputs with the layer (or one unit) set to its activations on
 *   the matching clean inputs; the restored fraction is the projection of the change onto the
 *   clean − corrupted difference: Σ(y_patched − y_corr)·(y_clean − y_corr) / Σ(y_clean − y_corr)².
 *   1 means the layer carries everything that differs; 0 means nothing reaching the output does.
 */
import { tf } from '../backend.js';
import { predictAll, recordActivations, replaceUnitsPerVariant, type RecordedActivation } from '../model/interventions.js';
import { ConfigError, InsufficientDataError } from '../errors.js';
import { defineOptions, int, num, oneOf, type OptionInput, type OptionValues } from '../options.js';
import {
  CORRUPTIONS, corruptInputs, disposeInputs, firstSamples, headNames, perSampleLoss, round, sumOverVariants,
  takeSamples, targetsByHead, topIndices, unitMeans, type Corruption, type ModelInputs,
} from '../model/model-runs.js';
import type { AnalysisContext } from './types.js';
import { defineAnalysis } from './definition.js';

export const causalOptions = defineOptions('causal option', {
  maxUnits: int({ min: 1, default: 64, doc: 'Most units ablated one by one; above it, the units with the largest mean |activation|.' }),
  maxSamples: int({ min: 1, default: 512, doc: 'Eval samples used (the first ones).' }),
  ablation: oneOf(['mean', 'zero'] as const, { default: 'mean', doc: "'mean' sets a unit to its mean over the eval inputs; 'zero' to 0." }),
  corruption: oneOf(CORRUPTIONS, { default: 'shuffle', doc: 'How corrupted inputs are made when `evalData.corruptedInputs` is absent.' }),
  noiseScale: num({ min: 0, minExclusive: true, default: 1, doc: "Noise standard deviation, relative to each input's, for `corruption: 'noise'`." }),
  patchUnits: int({ min: 0, default: 8, doc: 'Units (those with the largest ablation effect) patched one by one.' }),
  seed: int({ min: 0, default: 0, doc: 'Seed of the corruption.' }),
  rowsPerPass: int({ min: 1, default: 1024, doc: 'Samples × variants per forward pass (memory bound).' }),
});
export type CausalOptions = OptionInput<typeof causalOptions.fields>;
type Resolved = OptionValues<typeof causalOptions.fields>;

export function resolveCausalOptions(options: Record<string, unknown>): Resolved {
  return causalOptions.resolve(options);
}

export interface UnitEffect {
  unit: number;
  /** Loss change (ablated − clean) with targets; RMS output change without. */
  effect: number | null;
  mean_activation: number | null;
}

export interface PatchingResult {
  corruption: 'given' | Corruption;
  /** RMS of y_clean − y_corrupted over all outputs: how different the two runs are. */
  output_difference_rms: number | null;
  /** Fraction of the clean − corrupted output difference restored by patching the whole layer. */
  restored_fraction: number | null;
  restored_fraction_per_head: Record<string, number | null>;
  /** The units with the largest ablation effects, each patched alone. */
  units: { unit: number; restored_fraction: number | null }[];
}

export interface CausalResult {
  metric: 'loss_change' | 'output_rms_change';
  loss_kind?: 'compiled' | 'mse';
  baseline_loss?: number | null;
  ablation: 'mean' | 'zero';
  n_samples: number;
  n_units: number;
  n_units_tested: number;
  unit_selection: 'all' | 'top_mean_abs_activation';
  /** Ranked by |effect|, largest first. */
  unit_effects: UnitEffect[];
  top_units: number[];
  /** Effect of ablating every unit of the layer at once. */
  layer_effect: number | null;
  layer_effect_per_head?: Record<string, number | null>;
  patching: PatchingResult | { error: string };
}

function oneHotMasks(variants: (number[] | 'all')[], width: number): Float32Array {
  const masks = new Float32Array(variants.length * width);
  variants.forEach((v, g) => {
    if (v === 'all') masks.fill(1, g * width, (g + 1) * width);
    else for (const u of v) masks[g * width + u] = 1;
  });
  return masks;
}

/** Rows start … start+size−1 of recorded activations (per-sample blocks). */
function sliceRecorded(r: RecordedActivation, start: number, size: number): RecordedActivation {
  const per = r.data.length / r.shape[0]!;
  return { data: r.data.subarray(start * per, (start + size) * per), shape: [size, ...r.shape.slice(1)] };
}

function headTensor(h: RecordedActivation, start: number, size: number): tf.Tensor {
  const s = sliceRecorded(h, start, size);
  return tf.tensor(s.data, s.shape);
}

/** Causal analysis of `ctx.layer` (the registry calls this with the analysis context). */
export async function runCausalAnalysis(options: Record<string, unknown>, ctx: Pick<AnalysisContext, 'layer' | 'model' | 'evalData'>): Promise<CausalResult> {
  const o = resolveCausalOptions(options);
  const model = ctx.model;
  if (!model || !ctx.evalData) throw new InsufficientDataError('The causal analysis needs the model and eval data (evalData.inputs)');
  const layer = ctx.layer;
  const inputs = firstSamples(ctx.evalData.inputs, o.maxSamples);
  let corrupted: ModelInputs | null = null;
  try {
    const n = (Array.isArray(inputs) ? inputs[0]! : inputs).shape[0]!;
    const act = (await recordActivations(model, [layer], inputs))[layer]!;
    const width = act.shape.at(-1)!;
    const means = unitMeans(act.data, width);
    const meanAbs = unitMeans(act.data, width, true);
    const units = width <= o.maxUnits ? Array.from({ length: width }, (_, i) => i) : topIndices(meanAbs, o.maxUnits).sort((a, b) => a - b);
    const replacement = o.ablation === 'mean' ? Float32Array.from(means) : undefined;
    const heads = headNames(model);
    const clean = predictAll(model, inputs);

    // Ablation: variant 0 is the unchanged model, then each unit, then the whole layer.
    const variants: (number[] | 'all')[] = [[], ...units.map((u) => [u]), 'all'];
    const masks = oneHotMasks(variants, width);
    const targets = ctx.evalData.targets ? targetsByHead(model, ctx.evalData.targets as tf.Tensor | tf.Tensor[]) : null;
    const lossFn = targets ? perSampleLoss(model) : null;
    const sums = sumOverVariants(model, {
      layer, inputs, nVariants: variants.length, rowsPerPass: o.rowsPerPass,
      intervention: (first, count) => replaceUnitsPerVariant(masks.subarray(first * width, (first + count) * width), count, replacement),
      stat: (outs, start, size) => {
        if (lossFn && targets) return tf.sum(lossFn.loss(targets.map((t) => tf.slice(t, start, size)), outs)).reshape([1]);
        return tf.stack(outs.map((y, k) => tf.sum(tf.squaredDifference(y, headTensor(clean[k]!, start, size)))));
      },
    });
    const perHeadElems = clean.map((h) => h.data.length);
    const totalElems = perHeadElems.reduce((a, b) => a + b, 0);
    const effectOf = (s: Float64Array): number =>
      lossFn ? (s[0]! - sums[0]![0]!) / n : Math.sqrt(s.reduce((a, b) => a + b, 0) / totalElems);
    const unitEffects: UnitEffect[] = units.map((u, i) => ({ unit: u, effect: round(effectOf(sums[i + 1]!)), mean_activation: round(means[u]!) }));
    unitEffects.sort((a, b) => Math.abs(b.effect ?? 0) - Math.abs(a.effect ?? 0) || a.unit - b.unit);
    const layerSums = sums[variants.length - 1]!;
    const result: CausalResult = {
      metric: lossFn ? 'loss_change' : 'output_rms_change',
      ...(lossFn ? { loss_kind: lossFn.kind, baseline_loss: round(sums[0]![0]! / n) } : {}),
      ablation: o.ablation,
      n_samples: n,
      n_units: width,
      n_units_tested: units.length,
      unit_selection: units.length === width ? 'all' : 'top_mean_abs_activation',
      unit_effects: unitEffects,
      top_units: unitEffects.slice(0, 10).map((e) => e.unit),
      layer_effect: round(effectOf(layerSums)),
      ...(lossFn ? {} : { layer_effect_per_head: Object.fromEntries(heads.map((h, k) => [h, round(Math.sqrt(layerSums[k]! / perHeadElems[k]!))])) }),
      patching: { error: 'not run' },
    };

    // Patching: the corrupted run, with the layer (variant 1) or one top unit (2…) set to its clean activations.
    try {
      const given = ctx.evalData.corruptedInputs;
      if (given) {
        const m = (Array.isArray(given) ? given[0]! : given).shape[0]!;
        if (m < n) throw new ConfigError(`Expected \`evalData.corruptedInputs\` to hold at least the ${n} samples used; got ${m}`);
        corrupted = takeSamples(given, 0, n);
      } else corrupted = corruptInputs(inputs, o.corruption, o.seed, o.noiseScale);
      const corr = predictAll(model, corrupted);
      const patchUnits = unitEffects.slice(0, o.patchUnits).map((e) => e.unit);
      const pv: (number[] | 'all')[] = [[], 'all', ...patchUnits.map((u) => [u])];
      const pMasks = oneHotMasks(pv, width);
      const psums = sumOverVariants(model, {
        layer, inputs: corrupted, nVariants: pv.length, rowsPerPass: o.rowsPerPass,
        intervention: (first, count, start, size) => replaceUnitsPerVariant(pMasks.subarray(first * width, (first + count) * width), count, sliceRecorded(act, start, size)),
        stat: (outs, start, size) =>
          tf.stack(outs.map((y, k) => {
            const yc = headTensor(corr[k]!, start, size);
            return tf.sum(tf.mul(tf.sub(y, yc), tf.sub(headTensor(clean[k]!, start, size), yc)));
          })),
      });
      const den = clean.map((h, k) => {
        let s = 0;
        for (let i = 0; i < h.data.length; i++) s += (h.data[i]! - corr[k]!.data[i]!) ** 2;
        return s;
      });
      const denAll = den.reduce((a, b) => a + b, 0);
      const frac = (s: Float64Array) => (denAll > 0 ? s.reduce((a, b) => a + b, 0) / denAll : NaN);
      result.patching = {
        corruption: given ? 'given' : o.corruption,
        output_difference_rms: round(Math.sqrt(denAll / totalElems)),
        restored_fraction: round(frac(psums[1]!)),
        restored_fraction_per_head: Object.fromEntries(heads.map((h, k) => [h, den[k]! > 0 ? round(psums[1]![k]! / den[k]!) : null])),
        units: patchUnits.map((u, i) => ({ unit: u, restored_fraction: round(frac(psums[i + 2]!)) })),
      };
    } catch (err) {
      result.patching = { error: err instanceof Error ? err.message : String(err) };
    }
    return result;
  } finally {
    disposeInputs(inputs);
    disposeInputs(corrupted);
  }
}

export const causalAnalysis = defineAnalysis({
  name: 'causal',
  title: 'Causal analysis',
  description: 'unit and layer ablation effects on the eval loss (or outputs), and activation patching from clean into corrupted inputs',
  options: causalOptions,
  needs: { model: true, evalData: ['inputs', 'targets', 'corruptedInputs'] },
  usesTf: true,
  readsRows: false,
  run: (_rows, options, ctx) => runCausalAnalysis(options, ctx),
});
