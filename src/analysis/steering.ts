/**
 * Feature steering: add α × a direction to a layer's output (at every position) and record how
 * each output head moves, for a range of α. `steer` does it for one direction (from code or the
 * server); the `steering` analysis does it for the top SAE latents of each sampled layer, with
 * α in units of the latent's typical activation so that α = 1 adds one ordinary firing.
 */
import { tf } from '../backend.js';
import { addDirectionPerVariant, predictAll, recordActivations } from '../model/interventions.js';
import { ConfigError, InsufficientDataError } from '../errors.js';
import { defineOptions, int, numbers, oneOf, type OptionInput, type OptionValues } from '../options.js';
import { disposeInputs, firstSamples, headNames, intOption, round, sumOverVariants, type ModelInputs } from '../model/model-runs.js';
import { encodeSae } from './sae-weights.js';
import { previousSae } from './sae-lookup.js';
import type { AnalysisContext } from './types.js';
import { defineAnalysis } from './definition.js';

export interface SteerOptions {
  /** Eval samples used (the first ones). @default 256 */
  maxSamples?: number;
  /** Samples × α values per forward pass (memory bound). @default 4096 */
  rowsPerPass?: number;
}

export interface SteeringHeadCurve {
  head: string;
  /** Units of the head's last dimension. */
  n_units: number;
  /** Least-squares slope of each unit's mean change against α (change per unit of α). */
  slope: (number | null)[];
  /** Units with the largest |slope|, largest first (at most 8). */
  top_units: number[];
  /** RMS change of the head's outputs at each α. */
  rms_change: (number | null)[];
  /** Mean change of each unit (averaged over samples and positions) at each α: [α][unit]; omitted for heads of more than 64 units. */
  mean_change?: (number | null)[][];
}

export interface SteeringCurve {
  layer: string;
  alphas: number[];
  direction_norm: number | null;
  n_samples: number;
  heads: SteeringHeadCurve[];
}

function slopeOf(xs: number[], ys: number[]): number {
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let sxy = 0;
  let sxx = 0;
  xs.forEach((x, i) => {
    sxy += (x - mx) * (ys[i]! - my);
    sxx += (x - mx) ** 2;
  });
  return sxx > 0 ? sxy / sxx : NaN;
}

/**
 * Adds `alpha × direction` to the output of `layer` for each α and measures every output head's
 * change against the unsteered model. The model is left exactly as it was.
 * @example
 * const curve = await steer(model, 'mamba_backbone.blocks.3', decoderRow, [-2, -1, 0, 1, 2], inputs);
 * console.log(curve.heads[0].slope);
 */
export async function steer(model: tf.LayersModel, layer: string, direction: ArrayLike<number>, alphas: readonly number[], inputs: ModelInputs, options: SteerOptions = {}): Promise<SteeringCurve> {
  if (!Array.isArray(alphas) || alphas.length === 0 || !alphas.every((a) => typeof a === 'number' && Number.isFinite(a))) {
    throw new ConfigError(`Expected \`alphas\` to be a non-empty array of finite numbers; got \`${JSON.stringify(alphas)}\``);
  }
  const maxSamples = intOption('max_samples', options.maxSamples ?? 256, 1);
  const rowsPerPass = intOption('rows_per_pass', options.rowsPerPass ?? 4096, 1);
  const x = firstSamples(inputs, maxSamples);
  try {
    const n = (Array.isArray(x) ? x[0]! : x).shape[0]!;
    const clean = predictAll(model, x);
    const widths = clean.map((h) => h.shape.at(-1) ?? 1);
    const positions = clean.map((h, k) => h.data.length / n / widths[k]!);
    const sums = sumOverVariants(model, {
      layer, inputs: x, nVariants: alphas.length, rowsPerPass,
      intervention: (first, count) => addDirectionPerVariant(direction, alphas.slice(first, first + count)),
      stat: (outs, start, size) =>
        tf.concat(outs.map((y, k) => {
          const per = clean[k]!.data.length / n;
          const base = tf.tensor(clean[k]!.data.subarray(start * per, (start + size) * per), y.shape);
          const d = tf.reshape(tf.sub(y, base), [-1, widths[k]!]);
          return tf.concat([tf.sum(d, 0), tf.reshape(tf.sum(tf.square(d)), [1])]);
        })),
    });
    const heads = headNames(model);
    let norm = 0;
    for (let i = 0; i < direction.length; i++) norm += direction[i]! ** 2;
    let offset = 0;
    const curves = heads.map((head, k) => {
      const w = widths[k]!;
      const count = n * positions[k]!;
      const mean = alphas.map((_, a) => Array.from({ length: w }, (__, u) => sums[a]![offset + u]! / count));
      const rms = alphas.map((_, a) => Math.sqrt(sums[a]![offset + w]! / (count * w)));
      offset += w + 1;
      const slope = Array.from({ length: w }, (_, u) => slopeOf([...alphas], mean.map((m) => m[u]!)));
      const order = Array.from({ length: w }, (_, u) => u).sort((a, b) => Math.abs(slope[b]! || 0) - Math.abs(slope[a]! || 0) || a - b);
      const curve: SteeringHeadCurve = {
        head, n_units: w,
        slope: slope.map((s) => round(s)),
        top_units: order.slice(0, 8),
        rms_change: rms.map((r) => round(r)),
      };
      if (w <= 64) curve.mean_change = mean.map((m) => m.map((v) => round(v)));
      return curve;
    });
    return { layer, alphas: [...alphas], direction_norm: round(Math.sqrt(norm)), n_samples: n, heads: curves };
  } finally {
    disposeInputs(x);
  }
}

export const steeringOptions = defineOptions('steering option', {
  nLatents: int({ min: 1, default: 4, doc: "SAE latents steered per layer (from the sae analysis' top latents, else the most frequent)." }),
  alphas: numbers({ minLength: 1, default: [-2, -1, -0.5, 0, 0.5, 1, 2], doc: "α values, in units of each latent's mean activation when active (`alpha_units: 'latent'`) or absolute." }),
  alphaUnits: oneOf(['latent', 'absolute'] as const, { default: 'latent', doc: "'latent': α × the latent's mean active value × its decoder row; 'absolute': α × the decoder row." }),
  maxSamples: int({ min: 1, default: 256, doc: 'Eval samples used.' }),
  rowsPerPass: int({ min: 1, default: 4096, doc: 'Samples × α values per forward pass (memory bound).' }),
});
export type SteeringOptions = OptionInput<typeof steeringOptions.fields>;

export function resolveSteeringOptions(options: Record<string, unknown>): OptionValues<typeof steeringOptions.fields> {
  return steeringOptions.resolve(options);
}

export interface SteeredLatent extends SteeringCurve {
  latent: number;
  /** Fraction of eval rows where the latent fires. */
  frequency: number | null;
  /** Its mean value where it fires (the α unit with `alpha_units: 'latent'`). */
  mean_active_activation: number | null;
  /** α as given (before scaling by the latent's activation). */
  alpha_multipliers: number[];
}

export interface SteeringResult {
  alpha_units: 'latent' | 'absolute';
  n_samples: number;
  latents: SteeredLatent[];
}

/** Steering along the top SAE latents of `ctx.layer` (the registry calls this with the context). */
export async function runSteeringAnalysis(options: Record<string, unknown>, ctx: Pick<AnalysisContext, 'layer' | 'model' | 'evalData' | 'previous' | 'outputDir'>): Promise<SteeringResult> {
  const o = resolveSteeringOptions(options);
  if (!ctx.model || !ctx.evalData) throw new InsufficientDataError('Feature steering needs the model and eval data (evalData.inputs)');
  const sae = await previousSae(ctx, ctx.layer);
  if (!sae) throw new InsufficientDataError(`Feature steering needs SAE weights for \`${ctx.layer}\`: run the sae analysis first (analysesToRun with 'sae')`);
  const inputs = firstSamples(ctx.evalData.inputs, o.maxSamples);
  try {
    const act = (await recordActivations(ctx.model, [ctx.layer], inputs))[ctx.layer]!;
    const D = act.shape.at(-1)!;
    if (sae.dim !== D) throw new ConfigError(`The SAE for \`${ctx.layer}\` has dim ${sae.dim} but the layer has ${D} units`);
    const rows = act.data.length / D;
    const z = await encodeSae(sae, act.data, rows);
    const L = sae.nLatents;
    const fires = new Float64Array(L);
    const sum = new Float64Array(L);
    for (let r = 0; r < rows; r++) {
      for (let l = 0; l < L; l++) {
        const v = z[r * L + l]!;
        if (v > 0) {
          fires[l]!++;
          sum[l]! += v;
        }
      }
    }
    const listed = ((ctx.previous.sae?.[ctx.layer] as { top_latents?: { latent: number }[] } | undefined)?.top_latents ?? []).map((t) => t.latent);
    const byFrequency = Array.from({ length: L }, (_, l) => l).sort((a, b) => fires[b]! - fires[a]! || a - b);
    const chosen = [...new Set([...listed, ...byFrequency])].filter((l) => l >= 0 && l < L && fires[l]! > 0).slice(0, o.nLatents);
    const n = (Array.isArray(inputs) ? inputs[0]! : inputs).shape[0]!;
    const latents: SteeredLatent[] = [];
    for (const l of chosen) {
      const meanActive = sum[l]! / fires[l]!;
      const scale = o.alphaUnits === 'latent' ? meanActive : 1;
      const curve = await steer(ctx.model, ctx.layer, sae.W_dec.subarray(l * D, (l + 1) * D), o.alphas.map((a) => a * scale), inputs, { maxSamples: o.maxSamples, rowsPerPass: o.rowsPerPass });
      latents.push({ latent: l, frequency: round(fires[l]! / rows), mean_active_activation: round(meanActive), alpha_multipliers: [...o.alphas], ...curve });
    }
    return { alpha_units: o.alphaUnits, n_samples: n, latents };
  } finally {
    disposeInputs(inputs);
  }
}

export const steeringAnalysis = defineAnalysis({
  name: 'steering',
  title: 'Feature steering',
  description: "output changes when adding α × a top SAE latent's decoder direction at the layer (enableFeatureSteering)",
  options: steeringOptions,
  needs: { model: true, evalData: ['inputs'], analyses: ['sae'] },
  usesTf: true,
  readsRows: false,
  run: (_rows, options, ctx) => runSteeringAnalysis(options, ctx),
});
