/**
 * Guide: "Evaluation and analysis". Capture during a short fit, then EvalMechIntRunner runs the
 * analyses on the shards (neuron, feature, sae, dynamics from the rows alone; causal and circuit
 * with the model and eval data) and exports mechint_results.json, mechint_report.md and report.html.
 *
 *   npx tsx examples/evaluation.ts
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  EvalMechIntRunner, initBackend, MechIntCallback, MechIntConfig,
  type CausalResult, type CircuitResult, type EvalResults, type ExportedFiles, type FeatureAnalysisResult, type NeuronAnalysisResult, type SaeResult,
} from 'mechint';
import { isMain, tinyData, tinyModel } from './tiny-model.js';

export interface EvaluationOptions {
  /** @default a fresh temporary directory */
  dir?: string;
  /** SAE epochs per layer. @default 3 */
  saeEpochs?: number;
}

export interface EvaluationResult {
  results: EvalResults;
  files: ExportedFiles;
  /** Lines a reader would print, one per analysis and layer. */
  summary: string[];
}

export async function main(options: EvaluationOptions = {}): Promise<EvaluationResult> {
  await initBackend();
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'mechint-eval-')));
  const layers = ['mamba_backbone.blocks.3', 'popt'];
  const config = new MechIntConfig({
    sampleLayers: layers,
    saveHiddenEveryNSteps: 5,
    storagePath: join(dir, 'mechint_cache'),
    analysesToRun: ['neuron', 'feature', 'sae', 'dynamics', 'causal', 'circuit'],
    // Per-analysis options (snake_case or camelCase), merged over each analysis' defaults.
    analysisOptions: {
      sae: { n_latents: 16, k: 2, epochs: options.saeEpochs ?? 3, seed: 0 },
      feature: { n_components: 4, n_clusters: 'auto' },
      causal: { max_units: 8, patch_units: 2 },
      circuit: { top_k: 5, max_features: 8 },
    },
    verbose: false,
  });

  // 1. Train with capture on.
  const model = tinyModel();
  const train = tinyData(160, 1);
  model.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
  await model.fit(train.xs, train.ys, { epochs: 3, batchSize: 16, callbacks: [new MechIntCallback(config)], verbose: 0 });
  tf.dispose([train.xs, train.ys]);

  // 2. Analyse. Eval data is needed only by analyses that run the model (causal, circuit, probe, steering).
  const evalSet = tinyData(64, 2);
  const runner = new EvalMechIntRunner(model, config);
  try {
    const results = await runner.runMechintEval({
      hiddenShardsPath: config.storagePath,
      evalData: { inputs: evalSet.xs, targets: evalSet.ys },
    });

    // 3. Read the results: analysis → layer → result (or { error, code }).
    const summary: string[] = [];
    for (const layer of layers) {
      const neuron = results.analyses.neuron![layer] as NeuronAnalysisResult;
      summary.push(`${layer} neuron: ${neuron.n_dead_units}/${neuron.n_units} dead units, mean activation ${avg(neuron.mean_activation).toFixed(3)}`);
      const feature = results.analyses.feature![layer] as FeatureAnalysisResult;
      summary.push(`${layer} feature: top 2 PCs explain ${(100 * (feature.cumulative_explained_variance[1] ?? 1)).toFixed(0)}%, participation ratio ${feature.participation_ratio.toFixed(2)}, ${feature.clusters.n_clusters} clusters`);
      const sae = results.analyses.sae![layer] as SaeResult;
      summary.push(`${layer} sae: L0 ${sae.final_l0.toFixed(2)}, explained variance ${sae.explained_variance?.toFixed(3)}, ${sae.n_dead} dead latents`);
      const causal = results.analyses.causal![layer] as CausalResult;
      summary.push(`${layer} causal: ablating the layer changes the loss by ${causal.layer_effect?.toFixed(4)}; top units ${causal.top_units.join(', ')}`);
      const circuit = results.analyses.circuit![layer] as CircuitResult;
      summary.push(`${layer} circuit: ${circuit.edges.length} edges to ${circuit.downstream}, sign agreement ${circuit.agreement_fraction}`);
    }

    // 4. Export: mechint_results.json, mechint_report.md, report.html, charts/ and sae/<layer>.safetensors.
    const files = await runner.exportResults(join(dir, 'mechint_results'));
    return { results, files, summary };
  } finally {
    await runner.dispose();
    tf.dispose([evalSet.xs, evalSet.ys]);
    model.dispose();
  }
}

const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

if (isMain(import.meta.url)) {
  const r = await main();
  for (const line of r.summary) console.log(line);
  console.log(`Report: ${r.files.markdown}`);
}
