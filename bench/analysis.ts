/**
 * `npm run bench:analysis`: the analysis figures of one run, as one JSON object: TopK SAE training
 * throughput against PyTorch (bench/analysis-sae.ts, run as a child so its flags apply), PCA against
 * scikit-learn and neuron statistics against numpy (bench/analysis-feature.ts).
 */
import { spawnSync } from 'node:child_process';
import { benchFeatureAndNeuron } from './analysis-feature.js';

const sae = spawnSync(process.execPath, ['--import', 'tsx', 'bench/analysis-sae.ts', ...process.argv.slice(2)], { encoding: 'utf8', maxBuffer: 1 << 24 });
if (sae.status !== 0) {
  console.error(sae.stderr);
  process.exit(1);
}
const saeFigures = JSON.parse(sae.stdout.slice(sae.stdout.indexOf('{')));
const featureFigures = await benchFeatureAndNeuron({ python: !process.argv.includes('--no-torch') });
console.log(JSON.stringify({ sae: saeFigures, ...featureFigures }, null, 2));
