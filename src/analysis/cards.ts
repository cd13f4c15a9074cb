/**
 * Latent cards: "what does this latent mean?" for the most active SAE latents of a layer. The
 * model runs on the eval inputs, the layer's activations are encoded with the layer's SAE, and
 * each card gathers the facts: how often the latent fires and how strongly (a histogram), how it
 * relates to every covariate (Pearson r, or η for categorical ones) against a shuffled-sample
 * chance level, its top examples with their context, what removing its contribution or steering
 * along its decoder row does to the outputs and the loss, its nearest latents by decoder cosine,
 * and one sentence that says it.
 */
import { ConfigError, InsufficientDataError } from '../errors.js';
import { recordActivations } from '../model/interventions.js';
import { disposeInputs, firstSamples, headNames, round, targetsByHead } from '../model/model-runs.js';
import { defineOptions, int, numbers, oneOf, type OptionInput } from '../options.js';
import type { tf } from '../backend.js';
import { InputContext, type InputWindow } from './cards-context.js';
import { compareRuns, runModel, subtractContribution, type RemovalEffect } from './cards-effects.js';
import { activationHistogram, alignCovariate, covariateStatistic, shuffledAcrossSamples, type ActivationHistogram, type AlignedCovariate, type CovariateAlignment } from './cards-stats.js';
import { defineAnalysis } from './definition.js';
import { saeBasis, unitBasis } from './cards-basis.js';
import { previousSae } from './sae-lookup.js';
import { steer } from './steering.js';
import type { AnalysisContext, Covariate } from './types.js';

export const cardsOptions = defineOptions('cards option', {
  source: oneOf(['sae', 'units'] as const, { default: 'sae', doc: "'sae': a card per SAE latent of the layer (the sae analysis runs first); 'units': a card per unit of the layer itself, no SAE (removal sets the unit to 0)." }),
  maxCards: int({ min: 1, default: 32, doc: 'Cards made per layer: the latents active on the most eval rows.' }),
  maxSamples: int({ min: 1, default: 512, doc: 'Eval samples used (the first ones).' }),
  topExamples: int({ min: 0, default: 5, doc: 'Top-activating (sample, position) examples per card.' }),
  contextWindow: int({ min: 0, max: 1000, default: 8, doc: "Positions each side of a top example's position kept as its input context (sequence inputs)." }),
  histogramBins: int({ min: 1, max: 1000, default: 20, doc: "Bins of each card's activation histogram (over its non-zero values)." }),
  controlShuffles: int({ min: 1, max: 1000, default: 20, doc: 'Shuffles of each covariate across samples; `control_r` is the largest |statistic| among them (the chance level).' }),
  alphas: numbers({ minLength: 2, default: [-0.5, 0, 0.5], doc: "Steering α (small), in units of the latent's mean active value; the slope is reported per unit of added activation." }),
  batchSize: int({ min: 1, default: 256, doc: 'Samples per forward pass when removing a latent.' }),
  seed: int({ min: 0, default: 0, doc: 'Seed of the shuffled control.' }),
});
export type CardsOptions = OptionInput<typeof cardsOptions.fields>;

export interface BestCovariate {
  name: string;
  /** Pearson r (continuous) or η (categorical) with the latent; the best covariate is the one whose |r| exceeds its chance level the most. */
  r: number | null;
  /** The largest |statistic| against the covariate shuffled across samples (`control_shuffles` times): chance. */
  control_r: number | null;
  statistic: 'pearson' | 'eta';
}

export interface TopExample {
  sample: number;
  position: number;
  value: number | null;
  /** The sample's covariate values at that position (per-sample covariates: the sample's value). */
  context: Record<string, number | null>;
  /** The latent at every position of the sample (layers with positions, at most 256). */
  values?: (number | null)[];
  /** The model input around the position (a sequence input's window; a flat input's values). */
  input?: InputWindow;
  /** The per-position covariates over the positions of `input`. */
  traces?: Record<string, (number | null)[]>;
}

export interface SteeringEffect {
  /** α actually added (absolute: multiples of the decoder row). */
  alphas: number[];
  heads: { head: string; slope: (number | null)[]; top_units: number[] }[];
}

export interface LatentCard {
  index: number;
  /** Fraction of eval rows (samples × positions) where the latent is active. */
  density: number | null;
  mean_activation: number | null;
  mean_active_activation: number | null;
  max_activation: number | null;
  histogram: ActivationHistogram;
  best_covariate: BestCovariate | null;
  /** r (or η) with every covariate. */
  covariates: Record<string, number | null>;
  /** Chance level of each covariate's statistic. */
  covariate_controls: Record<string, number | null>;
  top_examples: TopExample[];
  output_effects: { removal: RemovalEffect; steering: SteeringEffect };
  /** The 3 latents whose decoder rows are closest in direction (units: whose activations correlate most). */
  neighbours: { index: number; cosine: number | null }[];
  description: string;
}

export interface CardsResult {
  /** What a card describes: an SAE latent, or a unit of the layer. */
  source: 'sae' | 'units';
  n_latents: number;
  n_samples: number;
  n_rows: number;
  positions: number;
  /** How each covariate was lined up with the latents. */
  covariate_alignment: Record<string, CovariateAlignment>;
  categorical: string[];
  cards: LatentCard[];
}

/** Covariates from `evalData.covariates`, else the probe targets split into one covariate per last dimension. */
export function cardCovariates(e: AnalysisContext['evalData']): Record<string, Covariate> {
  if (e?.covariates && Object.keys(e.covariates).length > 0) return e.covariates;
  const out: Record<string, Covariate> = {};
  for (const [name, t] of Object.entries(e?.probeTargets ?? {})) {
    const N = t.shape[0]!;
    const k = t.shape.length > 1 ? t.shape.at(-1)! : 1;
    const mid = t.shape.length > 2 ? t.shape.slice(1, -1) : [];
    const per = t.data.length / N / k;
    for (let j = 0; j < k; j++) {
      const data = new Float32Array(N * per);
      for (let r = 0; r < N * per; r++) data[r] = t.data[r * k + j]!;
      out[k === 1 ? name : `${name}_${j}`] = { data, shape: [N, ...mid] };
    }
  }
  return out;
}

function describe(c: Omit<LatentCard, 'description'>, what: 'Latent' | 'Unit'): string {
  const parts = [`${what} ${c.index} is active on ${((c.density ?? 0) * 100).toFixed(1)}% of rows (up to ${c.max_activation?.toPrecision(3)})`];
  const b = c.best_covariate;
  if (b && b.r !== null && Math.abs(b.r) > (b.control_r ?? 0) && Math.abs(b.r) >= 0.1) {
    parts.push(`it tracks \`${b.name}\` (${b.statistic === 'eta' ? 'η' : 'r'} = ${b.r.toFixed(2)}, chance ${(b.control_r ?? 0).toFixed(2)})`);
  } else {
    parts.push(b ? `no covariate explains it beyond chance (best \`${b.name}\`, ${b.statistic === 'eta' ? 'η' : 'r'} = ${(b.r ?? 0).toFixed(2)}, chance ${(b.control_r ?? 0).toFixed(2)})` : 'there are no covariates to relate it to');
  }
  const removal = c.output_effects.removal;
  const top = [...removal.heads].sort((x, y) => (y.rms_change ?? 0) - (x.rms_change ?? 0))[0];
  if (top) parts.push(`removing it moves \`${top.head}\` by RMS ${(top.rms_change ?? 0).toPrecision(3)}${removal.loss_change === null ? '' : ` and changes the loss by ${removal.loss_change >= 0 ? '+' : ''}${removal.loss_change.toPrecision(3)}`}`);
  const n = c.neighbours[0];
  if (n) parts.push(what === 'Unit' ? `it correlates most with unit ${n.index} (r ${(n.cosine ?? 0).toFixed(2)})` : `its nearest latent is ${n.index} (cosine ${(n.cosine ?? 0).toFixed(2)})`);
  return `${parts.join('; ')}.`;
}

/** Cards for the most active SAE latents (or the most variable units) of `ctx.layer`. */
export async function runCardsAnalysis(options: Record<string, unknown>, ctx: Pick<AnalysisContext, 'layer' | 'model' | 'evalData' | 'previous' | 'outputDir'>): Promise<CardsResult> {
  const o = cardsOptions.resolve(options);
  if (!ctx.model || !ctx.evalData) throw new InsufficientDataError('The cards analysis needs the model and eval data (evalData.inputs)');
  const sae = o.source === 'sae' ? await previousSae(ctx, ctx.layer) : null;
  if (o.source === 'sae' && !sae) throw new InsufficientDataError(`The cards analysis needs SAE weights for \`${ctx.layer}\`: run the sae analysis first (analysesToRun with 'sae'), or give source: 'units'`);
  const model = ctx.model;
  const inputs = firstSamples(ctx.evalData.inputs, o.maxSamples);
  let targets: tf.Tensor[] | null = null;
  try {
    const n = (Array.isArray(inputs) ? inputs[0]! : inputs).shape[0]!;
    const act = (await recordActivations(model, [ctx.layer], inputs))[ctx.layer]!;
    const D = act.shape.at(-1)!;
    if (sae && sae.dim !== D) throw new ConfigError(`The SAE for \`${ctx.layer}\` has dim ${sae.dim} but the layer has ${D} units`);
    const rows = act.data.length / D;
    const P = rows / n;
    const basis = sae ? await saeBasis(sae, act.data, rows) : unitBasis(act.data, rows, D);
    const { z, size: L } = basis;
    const fires = new Float64Array(L);
    const sum = new Float64Array(L);
    const sumActive = new Float64Array(L);
    const sumSq = new Float64Array(L);
    const max = new Float64Array(L);
    for (let r = 0; r < rows; r++) {
      for (let l = 0; l < L; l++) {
        const v = z[r * L + l]!;
        if (v > 0) (fires[l]!++, (sumActive[l]! += v), (max[l] = Math.max(max[l]!, v)));
        sum[l]! += v;
        sumSq[l]! += v * v;
      }
    }
    // SAE latents: the ones active on the most rows. Units (signed, often always on): the most variable.
    const score = (l: number) => (basis.kind === 'sae' ? fires[l]! : sumSq[l]! / rows - (sum[l]! / rows) ** 2);
    const chosen = Array.from({ length: L }, (_, l) => l).filter((l) => (basis.kind === 'sae' ? fires[l]! > 0 : score(l) > 0)).sort((a, b) => score(b) - score(a) || a - b).slice(0, o.maxCards);

    const covs: AlignedCovariate[] = Object.entries(cardCovariates(ctx.evalData)).map(([name, c]) => alignCovariate(name, c, n, P));
    const controls = covs.map((c) => shuffledAcrossSamples(c.values, n, o.controlShuffles, o.seed));

    if (ctx.evalData.targets) {
      const all = targetsByHead(model, ctx.evalData.targets);
      targets = all.map((t) => t.slice(0, Math.min(n, t.shape[0]!)));
    }
    const heads = headNames(model);
    const firstInput = Array.isArray(inputs) ? inputs[0]! : inputs;
    const context = new InputContext(model.inputNames[0] ?? 'input', firstInput.dataSync(), firstInput.shape, P, o.contextWindow);
    const clean = await runModel(model, ctx.layer, inputs, targets, o.batchSize);
    const lossKind = targets ? (((model as { lossFunctions?: unknown[] }).lossFunctions?.length ?? 0) === model.outputs.length ? 'compiled' : 'mse') : null;

    const cards: LatentCard[] = [];
    const perSample = new Float64Array(n);
    const perRow = new Float64Array(rows);
    for (const l of chosen) {
      for (let r = 0; r < rows; r++) perRow[r] = z[r * L + l]!;
      perSample.fill(0);
      for (let r = 0; r < rows; r++) perSample[Math.floor(r / P)]! += perRow[r]! / P;
      const covariates: Record<string, number | null> = {};
      const covariateControls: Record<string, number | null> = {};
      let best = null as BestCovariate | null;
      let bestExcess = -Infinity;
      for (const [ci, c] of covs.entries()) {
        const latent = c.alignment === 'per_position' ? perRow : perSample;
        const r = covariateStatistic(c, latent);
        let chance = 0;
        for (const shuffled of controls[ci]!) chance = Math.max(chance, Math.abs(covariateStatistic({ ...c, values: shuffled }, latent)) || 0);
        covariates[c.name] = round(r);
        covariateControls[c.name] = round(chance);
        // The best is the furthest beyond its own chance level, so η over many classes (high by chance) does not win by default.
        const excess = Math.abs(r) - chance;
        if (Number.isFinite(r) && (best === null || excess > bestExcess)) {
          best = { name: c.name, r: round(r), control_r: round(chance), statistic: c.categorical ? 'eta' : 'pearson' };
          bestExcess = excess;
        }
      }

      const order = Array.from({ length: rows }, (_, r) => r).filter((r) => perRow[r]! > 0).sort((a, b) => perRow[b]! - perRow[a]! || a - b).slice(0, o.topExamples);
      const top_examples: TopExample[] = order.map((r) => {
        const sample = Math.floor(r / P);
        const position = r % P;
        const ex: TopExample = { sample, position, value: round(perRow[r]!), context: Object.fromEntries(covs.map((c) => [c.name, round(c.at(sample, position))])) };
        if (P > 1 && P <= 256) ex.values = Array.from(perRow.subarray(sample * P, (sample + 1) * P), (v) => round(v));
        ex.input = context.window(sample, position);
        const traces = context.traces(covs, sample, ex.input);
        if (traces) ex.traces = traces;
        return ex;
      });

      const direction = basis.direction(l);
      const changed = await runModel(model, ctx.layer, inputs, targets, o.batchSize, subtractContribution(z, L, l, direction, P));
      const removal = { ...compareRuns(heads, clean, changed), loss_kind: lossKind } as RemovalEffect;
      const meanActive = fires[l]! > 0 ? sumActive[l]! / fires[l]! : Math.sqrt(sumSq[l]! / rows);
      const alphas = o.alphas.map((a) => a * meanActive);
      const curve = await steer(model, ctx.layer, direction, alphas, inputs, { maxSamples: n });
      const steering: SteeringEffect = { alphas: alphas.map((a) => round(a) ?? 0), heads: curve.heads.map((h) => ({ head: h.head, slope: h.slope, top_units: h.top_units })) };

      const neighbours = basis.neighbours(l);

      const card: Omit<LatentCard, 'description'> = {
        index: l,
        density: round(fires[l]! / rows),
        mean_activation: round(sum[l]! / rows),
        mean_active_activation: round(meanActive),
        max_activation: round(max[l]!),
        histogram: activationHistogram(perRow, o.histogramBins),
        best_covariate: best,
        covariates,
        covariate_controls: covariateControls,
        top_examples,
        output_effects: { removal, steering },
        neighbours,
      };
      cards.push({ ...card, description: describe(card, basis.kind === 'sae' ? 'Latent' : 'Unit') });
    }
    return {
      source: basis.kind,
      n_latents: L,
      n_samples: n,
      n_rows: rows,
      positions: P,
      covariate_alignment: Object.fromEntries(covs.map((c) => [c.name, c.alignment])),
      categorical: covs.filter((c) => c.categorical).map((c) => c.name),
      cards,
    };
  } finally {
    disposeInputs(inputs);
    if (targets) for (const t of targets) t.dispose();
  }
}

export const cardsAnalysis = defineAnalysis({
  name: 'cards',
  title: 'Latent cards',
  description: 'one card per active SAE latent (or unit): density, histogram, covariate correlations against chance, top examples, output effects, neighbours',
  options: cardsOptions,
  needs: { model: true, evalData: ['inputs', 'targets', 'probeTargets', 'covariates'], analyses: (o) => (o.source === 'units' ? [] : ['sae']) },
  usesTf: true,
  readsRows: false,
  run: (_rows, options, ctx) => runCardsAnalysis(options, ctx),
});
