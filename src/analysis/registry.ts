/** The analyses, registered by name in one place (nothing registers itself on import). */
import { runCausalAnalysis } from './causal.js';
import { runCircuitAnalysis } from './circuit.js';
import { runDynamicsAnalysis } from './dynamics.js';
import { runFeatureAnalysis } from './feature.js';
import { runNeuronAnalysis } from './neuron.js';
import { runProbeAnalysis } from './probe.js';
import { runSaeAnalysis } from './sae.js';
import { runSteeringAnalysis } from './steering.js';
import type { AnalysisDefinition } from './types.js';

const builtins: AnalysisDefinition[] = [
  {
    name: 'neuron',
    description: 'per-unit mean, max, std, activation frequency and dead units',
    run: (rows, options) => runNeuronAnalysis(rows, options),
  },
  {
    name: 'feature',
    description: 'PCA explained variance, participation ratio and k-means clusters on the top PCs',
    run: (rows, options) => runFeatureAnalysis(rows, options),
  },
  {
    name: 'sae',
    description: 'a sparse autoencoder (TopK or ReLU+L1) trained on the layer\'s rows',
    run: (rows, options, ctx) =>
      runSaeAnalysis(rows, options, {
        layer: ctx.layer,
        ...(ctx.outputDir === undefined ? {} : { outputDir: ctx.outputDir }),
        onEpoch: (e) => ctx.onProgress?.({ analysis: 'sae', layer: ctx.layer, stage: 'epoch', epoch: e.epoch, epochs: e.epochs }),
      }),
  },
  {
    name: 'dynamics',
    description: 'per training step (shard global step): activation frequency and magnitude, dead units, variance in the top PCs',
    run: (rows, options) => runDynamicsAnalysis(rows, options),
  },
  {
    name: 'probe',
    description: 'cross-validated linear-probe R² of known targets (e.g. ground-truth latents) from each layer',
    needsModel: true,
    needsEvalData: true,
    run: (_rows, options, ctx) => runProbeAnalysis(options, ctx),
  },
  {
    name: 'causal',
    description: 'unit and layer ablation effects on the eval loss (or outputs), and activation patching from clean into corrupted inputs',
    needsModel: true,
    needsEvalData: true,
    run: (_rows, options, ctx) => runCausalAnalysis(options, ctx),
  },
  {
    name: 'circuit',
    description: 'gradient × activation edges from each sampled layer to the next (units or SAE latents), top-K checked by ablation',
    needsModel: true,
    run: (_rows, options, ctx) => runCircuitAnalysis(options, ctx),
  },
  {
    name: 'steering',
    description: 'output changes when adding α × a top SAE latent\'s decoder direction at the layer (enableFeatureSteering)',
    needsModel: true,
    needsEvalData: true,
    run: (_rows, options, ctx) => runSteeringAnalysis(options, ctx),
  },
];

const registry = new Map<string, AnalysisDefinition>(builtins.map((a) => [a.name, a]));

export function getAnalysis(name: string): AnalysisDefinition | undefined {
  return registry.get(name);
}

export function analysisNames(): string[] {
  return [...registry.keys()];
}

/** Adds (or replaces) an analysis under its name. */
export function registerAnalysis(def: AnalysisDefinition): void {
  registry.set(def.name, def);
}
