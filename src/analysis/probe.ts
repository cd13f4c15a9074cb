/**
 * Linear probes: how well each layer's activations predict known quantities (the ground-truth
 * latents of synthetic data, behaviour, or any arrays given as `evalData.probeTargets`), as
 * cross-validated ridge R², with a shuffled-trial control that should stay near zero.
 * The model is run on the eval inputs, so activations and targets line up trial by trial.
 */
import { recordActivations, type RecordedActivation } from '../model/interventions.js';
import { defineOptions, int, num, orLiteral, strings, type OptionInput } from '../options.js';
import { ConfigError, InsufficientDataError } from '../errors.js';
import { createRng } from '../random.js';
import { crossValidatedR2 } from './ridge.js';
import type { AnalysisContext } from './types.js';
import { defineAnalysis } from './definition.js';

export const probeOptions = defineOptions('probe option', {
  folds: int({ min: 2, default: 5, aliases: ['n_folds'], doc: 'Cross-validation folds (over trials).' }),
  ridge: orLiteral(num({ min: 0, minExclusive: true, default: 1, doc: '' }), 'auto', { default: 'auto', aliases: ['alpha'], doc: "Ridge strength relative to the mean feature variance, or 'auto' (nested cross-validation over a grid)." }),
  seed: int({ min: 0, default: 0, doc: 'Seed of the fold split and the shuffled control.' }),
  targets: strings({ default: null, defaultDoc: 'all', doc: 'Probe only these targets.' }),
});
export type ProbeOptions = OptionInput<typeof probeOptions.fields>;

export interface ProbeTargetResult {
  /** Cross-validated R² (variance-weighted over target dimensions). */
  r2: number;
  r2_per_dim: number[];
  /** Ridge strength chosen in each fold. */
  ridge_chosen: number[];
  /** The same probe with targets shuffled across trials: the chance level. */
  control_r2_shuffled: number;
  n_rows: number;
  n_features: number;
  n_target_dims: number;
  /** How activations and targets were aligned. */
  alignment: 'per_time_bin' | 'per_trial' | 'per_trial_flattened_target' | 'per_trial_mean_pooled';
}

export interface ProbeResult {
  targets: Record<string, ProbeTargetResult>;
  folds: number;
}

/** Lines up a layer's activations with a target: both become row matrices with a trial index per row. */
export function alignForProbe(act: RecordedActivation, target: { data: Float32Array; shape: number[] }): { X: Float32Array; Y: Float32Array; rows: number; d: number; k: number; groups: Int32Array; alignment: ProbeTargetResult['alignment'] } {
  const n = act.shape[0]!;
  if (target.shape[0] !== n) throw new ConfigError(`Probe target has ${target.shape[0]} trials but the eval inputs have ${n}`);
  const d = act.shape.at(-1)!;
  const aPer = act.data.length / n;
  const tPer = target.data.length / n;
  const seqAct = act.shape.length === 3;
  const seqTarget = target.shape.length === 3;
  if (seqAct && seqTarget && act.shape[1] === target.shape[1]) {
    const T = act.shape[1]!;
    const k = target.shape[2]!;
    return { X: act.data, Y: target.data, rows: n * T, d, k, groups: Int32Array.from({ length: n * T }, (_, r) => Math.floor(r / T)), alignment: 'per_time_bin' };
  }
  const groups = Int32Array.from({ length: n }, (_, i) => i);
  let X = act.data;
  let alignment: ProbeTargetResult['alignment'] = seqTarget ? 'per_trial_flattened_target' : 'per_trial';
  if (seqAct) {
    // One embedding per trial: average the layer over time.
    const T = act.shape[1]!;
    X = new Float32Array(n * d);
    for (let i = 0; i < n; i++) for (let t = 0; t < T; t++) for (let j = 0; j < d; j++) X[i * d + j]! += act.data[i * aPer + t * d + j]! / T;
    alignment = 'per_trial_mean_pooled';
  } else if (aPer !== d) {
    throw new ConfigError(`Cannot probe an activation of shape [${act.shape}]`);
  }
  return { X, Y: target.data, rows: n, d, k: tPer, groups, alignment };
}

function shuffleTrials(Y: Float32Array, rows: number, k: number, groups: Int32Array, seed: number): Float32Array {
  const nGroups = groups[rows - 1]! + 1;
  const per = rows / nGroups;
  const perm = Array.from({ length: nGroups }, (_, i) => i);
  const rng = createRng(seed + 7919);
  for (let i = nGroups - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const out = new Float32Array(Y.length);
  for (let g = 0; g < nGroups; g++) out.set(Y.subarray(perm[g]! * per * k, (perm[g]! + 1) * per * k), g * per * k);
  return out;
}

/** Runs the probes for one layer (the registry calls this with the analysis context). */
export async function runProbeAnalysis(options: Record<string, unknown>, ctx: Pick<AnalysisContext, 'layer' | 'model' | 'evalData'>): Promise<ProbeResult> {
  const o = probeOptions.resolve(options);
  const targets = ctx.evalData?.probeTargets;
  if (!ctx.model || !ctx.evalData) throw new InsufficientDataError('The probe analysis needs the model and eval data');
  if (!targets || Object.keys(targets).length === 0) throw new InsufficientDataError('The probe analysis needs `evalData.probeTargets` (name → array with trials first)');
  const names = o.targets ?? Object.keys(targets);
  const acts = await recordActivations(ctx.model, [ctx.layer], ctx.evalData.inputs);
  const act = acts[ctx.layer]!;
  const out: Record<string, ProbeTargetResult> = {};
  for (const name of names) {
    const target = targets[name];
    if (!target) throw new ConfigError(`No probe target \`${name}\`; the targets are ${Object.keys(targets).join(', ')}`);
    const a = alignForProbe(act, target);
    const cv = crossValidatedR2(a.X, a.Y, a.rows, a.d, a.k, a.groups, o);
    const control = crossValidatedR2(a.X, shuffleTrials(a.Y, a.rows, a.k, a.groups, o.seed), a.rows, a.d, a.k, a.groups, o);
    out[name] = { r2: cv.r2, r2_per_dim: cv.r2_per_dim, ridge_chosen: cv.ridge_chosen, control_r2_shuffled: control.r2, n_rows: a.rows, n_features: a.d, n_target_dims: a.k, alignment: a.alignment };
  }
  return { targets: out, folds: o.folds };
}

export const probeAnalysis = defineAnalysis({
  name: 'probe',
  title: 'Linear probes',
  description: 'cross-validated linear-probe R² of known targets (e.g. ground-truth latents) from each layer',
  options: probeOptions,
  needs: { model: true, evalData: ['inputs', 'probeTargets'] },
  usesTf: true,
  readsRows: false,
  run: (_rows, options, ctx) => runProbeAnalysis(options, ctx),
});
