/**
 * Circuit discovery between one sampled layer and the next (or the model's outputs after the
 * last): edge attributions by gradient × activation through the model, the top-K edges kept,
 * and each kept edge checked by removing its upstream feature and measuring the downstream one.
 *
 * Features are raw units, or SAE latents where an earlier `sae` analysis left weights for the
 * layer. The upstream layer's output is rewritten as C + X·P (P: one-hot rows for units,
 * decoder rows for latents; C the rest, held constant), so d(downstream)/dX is the gradient per
 * feature and X₀ its activation. An edge i → j has
 *   attribution     = E_samples[ Σ_positions ∂ȳ_j/∂x_i · x_i ]   (ȳ_j: j averaged over positions)
 *   ablation_effect = E[ȳ_j] − E[ȳ_j | feature i removed]   (removing = x_i set to 0)
 * which is the first-order estimate and the measured value of the same quantity, so they agree
 * in sign when the edge is real.
 */
import { tf } from '../backend.js';
import { executionOrder, recordActivations, tileBatch, watchLayer, withInterventionSync } from '../model/interventions.js';
import { InsufficientDataError } from '../errors.js';
import { bool, boolean, defineOptions, int, orLiteral, type OptionInput, type OptionValues } from '../options.js';
import { downstreamFeatures, upstreamFeatures, type Downstream, type Upstream } from './circuit-features.js';
import { disposeInputs, firstSamples, round, topIndices, type ModelInputs } from '../model/model-runs.js';
import { previousSae } from './sae-lookup.js';
import type { AnalysisContext } from './types.js';
import { defineAnalysis } from './definition.js';

export const circuitOptions = defineOptions('circuit option', {
  topK: int({ min: 1, default: 20, doc: 'Edges kept (by |attribution|).' }),
  maxFeatures: int({ min: 1, default: 32, doc: 'Most features per side (the most active ones).' }),
  maxSamples: int({ min: 1, default: 256, doc: 'Eval samples used (the first ones).' }),
  useSae: orLiteral(boolean, 'auto', { default: 'auto', doc: "Use SAE latents where the sae analysis left weights ('auto'), always (true: fail without), or never." }),
  toOutput: bool({ default: true, doc: "After the last sampled layer, attribute to the model's output units." }),
  rowsPerPass: int({ min: 1, default: 1024, doc: 'Samples × features per pass (memory bound).' }),
});
export type CircuitOptions = OptionInput<typeof circuitOptions.fields>;
type Resolved = OptionValues<typeof circuitOptions.fields>;

export function resolveCircuitOptions(options: Record<string, unknown>): Resolved {
  return circuitOptions.resolve(options);
}

export interface CircuitNode {
  layer: string;
  unit: number;
  kind: 'unit' | 'sae_latent' | 'output';
  mean_activation: number | null;
}

export interface CircuitEdge {
  source_layer: string;
  source_unit: number;
  target_layer: string;
  target_unit: number;
  attribution: number | null;
  ablation_effect: number | null;
  sign: 1 | -1;
  /** The ablation effect has the attribution's sign. */
  agrees: boolean;
}

export interface CircuitResult {
  upstream: string;
  /** The next sampled layer, or 'output' after the last one. */
  downstream: string | null;
  basis: { upstream: 'units' | 'sae_latents'; downstream: 'units' | 'sae_latents' | 'output_units' } | null;
  n_samples: number;
  n_candidate_edges: number;
  top_k: number;
  nodes: CircuitNode[];
  edges: CircuitEdge[];
  /** Fraction of kept edges whose ablation effect has the attribution's sign. */
  agreement_fraction: number | null;
  note?: string;
}

/**
 * Runs the model on `copies` tiled copies of the inputs with the upstream output set to
 * C + X·P, and returns the downstream features per sample [copies·N, F]. Synchronous, so it can
 * be differentiated with respect to X.
 */
function forwardFeatures(model: tf.LayersModel, upstream: string, downstream: string | null, up: Upstream, down: Downstream, inputs: ModelInputs, copies: number, X: tf.Tensor, grad: boolean): tf.Tensor {
  let read: tf.Tensor | null = null;
  const pick = (t: tf.Tensor | tf.Tensor[]) => (grad ? down.readGrad(t, copies) : down.readTrue(t));
  const undo = downstream ? watchLayer(model, downstream, (t) => (read = tf.keep(pick(t)))) : () => {};
  try {
    const D = up.shape.at(-1)!;
    const C = tf.tile(tf.tensor(up.C, up.shape), [copies, ...up.shape.slice(1).map(() => 1)]);
    const set = () => tf.add(C, tf.reshape(tf.matMul(X, tf.tensor2d(up.P, [up.ids.length, D])), C.shape));
    const y = withInterventionSync(model, { [upstream]: set }, () => model.apply(tileBatch(inputs, copies), { training: false }) as tf.Tensor | tf.Tensor[]);
    if (!downstream) return pick(y);
    if (!read) throw new InsufficientDataError(`Layer \`${downstream}\` did not run after \`${upstream}\``);
    const out = tf.clone(read as tf.Tensor);
    (read as tf.Tensor).dispose();
    return out;
  } finally {
    undo();
  }
}

/** Circuit analysis from `ctx.layer` to the next sampled layer (the registry calls this with the context). */
export async function runCircuitAnalysis(options: Record<string, unknown>, ctx: Pick<AnalysisContext, 'layer' | 'layers' | 'model' | 'evalData' | 'previous' | 'outputDir'>): Promise<CircuitResult> {
  const o = resolveCircuitOptions(options);
  const model = ctx.model;
  if (!model) throw new InsufficientDataError('The circuit analysis needs the model');
  if (!ctx.evalData) throw new InsufficientDataError('The circuit analysis needs inputs to run the model on: pass evalData (its inputs) to runMechintEval');
  const upstream = ctx.layer;
  // "Consecutive" in the order the model runs the layers, whatever order the config lists them in.
  const ordered = executionOrder(model, ctx.layers.includes(upstream) ? ctx.layers : [...ctx.layers, upstream], ctx.evalData.inputs);
  const at = ordered.indexOf(upstream);
  const next = at >= 0 && at + 1 < ordered.length ? ordered[at + 1]! : null;
  if (!next && !o.toOutput) {
    return { upstream, downstream: null, basis: null, n_samples: 0, n_candidate_edges: 0, top_k: o.topK, nodes: [], edges: [], agreement_fraction: null, note: 'The last sampled layer has no downstream layer (to_output is off).' };
  }
  const saeFor = async (layer: string) => {
    if (o.useSae === false) return null;
    const sae = await previousSae(ctx, layer);
    if (!sae && o.useSae === true) throw new InsufficientDataError(`use_sae is true but the sae analysis left no weights for \`${layer}\``);
    return sae;
  };
  const inputs = firstSamples(ctx.evalData.inputs, o.maxSamples);
  try {
    const n = (Array.isArray(inputs) ? inputs[0]! : inputs).shape[0]!;
    const rec = await recordActivations(model, next ? [upstream, next] : [upstream], inputs);
    const up = await upstreamFeatures(rec[upstream]!, await saeFor(upstream), o.maxFeatures);
    const down = await downstreamFeatures(model, next, next ? rec[next]! : null, next ? await saeFor(next) : null, inputs, o.maxFeatures);
    const m = up.ids.length;
    const F = down.ids.length;
    const rowsU = up.x0.length / Math.max(m, 1);
    const perPass = Math.max(1, Math.floor(o.rowsPerPass / n));

    // Attributions: one gradient per downstream feature, `perPass` of them in one tiled pass.
    const attr = new Float32Array(F * m);
    for (let first = 0; first < F && m > 0; first += perPass) {
      const count = Math.min(perPass, F - first);
      const block = tf.tidy(() => {
        const x0 = tf.tile(tf.tensor2d(up.x0, [rowsU, m]), [count, 1]);
        const sel = new Float32Array(count * n * F);
        for (let g = 0; g < count; g++) for (let b = 0; b < n; b++) sel[(g * n + b) * F + first + g] = 1;
        const selector = tf.tensor2d(sel, [count * n, F]);
        const f = (x: tf.Tensor) => tf.div(tf.sum(tf.mul(forwardFeatures(model, upstream, next, up, down, inputs, count, x, true), selector)), n);
        const g = tf.grad(f)(x0);
        return tf.sum(tf.reshape(tf.mul(g, x0), [count, rowsU, m]), 1);
      });
      attr.set(block.dataSync(), first * m);
      block.dispose();
    }

    // Keep the top-K edges, then remove each kept edge's upstream feature and measure the downstream ones.
    const order = topIndices(Array.from(attr, Math.abs), Math.min(o.topK, F * m)).filter((e) => attr[e] !== 0);
    const sources = [...new Set(order.map((e) => e % m))];
    const variants = [-1, ...sources];
    const means = new Float64Array(variants.length * F);
    for (let first = 0; first < variants.length; first += perPass) {
      const count = Math.min(perPass, variants.length - first);
      const block = tf.tidy(() => {
        const keep = new Float32Array(count * rowsU * m).fill(1);
        for (let g = 0; g < count; g++) {
          const i = variants[first + g]!;
          if (i >= 0) for (let r = 0; r < rowsU; r++) keep[(g * rowsU + r) * m + i] = 0;
        }
        const X = tf.mul(tf.tile(tf.tensor2d(up.x0, [rowsU, m]), [count, 1]), tf.tensor2d(keep, [count * rowsU, m]));
        const feats = forwardFeatures(model, upstream, next, up, down, inputs, count, X, false);
        return tf.mean(tf.reshape(feats, [count, n, F]), 1);
      });
      means.set(block.dataSync(), first * F);
      block.dispose();
    }
    const effect = (i: number, j: number) => means[j]! - means[(variants.indexOf(i)) * F + j]!;
    const edges: CircuitEdge[] = order.map((e) => {
      const j = Math.floor(e / m);
      const i = e % m;
      const a = attr[e]!;
      const eff = effect(i, j);
      return {
        source_layer: upstream, source_unit: up.ids[i]!, target_layer: down.layers[j]!, target_unit: down.ids[j]!,
        attribution: round(a), ablation_effect: round(eff), sign: a >= 0 ? 1 : -1, agrees: eff !== 0 && Math.sign(eff) === Math.sign(a),
      };
    });
    const nodes: CircuitNode[] = [];
    const seen = new Set<string>();
    const kindUp = up.kind === 'units' ? 'unit' : 'sae_latent';
    const kindDown = down.kind === 'units' ? 'unit' : down.kind === 'sae_latents' ? 'sae_latent' : 'output';
    for (const e of order) {
      const j = Math.floor(e / m);
      const i = e % m;
      for (const [layer, unit, kind, mean] of [[upstream, up.ids[i]!, kindUp, up.means[i]!], [down.layers[j]!, down.ids[j]!, kindDown, down.means[j]!]] as const) {
        const key = `${layer}\u0000${unit}\u0000${kind}`;
        if (seen.has(key)) continue;
        seen.add(key);
        nodes.push({ layer, unit, kind, mean_activation: round(mean) });
      }
    }
    return {
      upstream,
      downstream: next ?? 'output',
      basis: { upstream: up.kind, downstream: down.kind },
      n_samples: n,
      n_candidate_edges: F * m,
      top_k: o.topK,
      nodes,
      edges,
      agreement_fraction: edges.length ? round(edges.filter((e) => e.agrees).length / edges.length) : null,
    };
  } finally {
    disposeInputs(inputs);
  }
}

export const circuitAnalysis = defineAnalysis({
  name: 'circuit',
  title: 'Circuits',
  description: 'gradient × activation edges from each sampled layer to the next (units or SAE latents), top-K checked by ablation',
  options: circuitOptions,
  needs: { model: true, evalData: ['inputs'], optional: ['sae'], contextLayers: true },
  usesTf: true,
  readsRows: false,
  run: (_rows, options, ctx) => runCircuitAnalysis(options, ctx),
});
