/**
 * Benchmark of the feature (PCA) and neuron analyses. Prints one JSON object:
 * - PCA with 50 components of 100,000 × 512 rows (streamed covariance + eigendecomposition), and
 *   the whole feature analysis (PCA + k-means of a 20,000-row sample);
 * - neuron statistics throughput in MB/s over the same rows, streamed 4 times (~820 MB);
 * - where /usr/bin/python3 has numpy and scikit-learn: the same work there on the same data
 *   (PCA(svd_solver='full'), numpy mean/std/min/max/(x > 0).mean) and the ratios.
 * Run: npx tsx bench/analysis-feature.ts [--rows N] [--dim D] [--no-python]
 * bench/analysis.ts can import `benchFeatureAndNeuron` and merge its figures into its own JSON.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../src/backend.js';
import { CovarianceAccumulator, symmetricEigen } from '../src/analysis/linalg.js';
import { runFeatureAnalysis } from '../src/analysis/feature.js';
import { runNeuronAnalysis } from '../src/analysis/neuron.js';
import { createRng } from '../src/random.js';
import { rowsFromMatrix, type RowSource } from '../src/storage/rows.js';

const BLOCK = 4096;
const NEURON_PASSES = 4;

/** Rows with a decaying spectrum (per-unit scales plus 8 shared factors), half the units rectified. */
function makeRows(N: number, D: number): Float32Array {
  const rng = createRng(42);
  const factors = 8;
  const w = new Float64Array(factors * D).map(() => rng.normal());
  const scale = Float64Array.from({ length: D }, (_, j) => 1 / (1 + j / 32));
  const rows = new Float32Array(N * D);
  const z = new Float64Array(factors);
  for (let r = 0; r < N; r++) {
    for (let k = 0; k < factors; k++) z[k] = rng.normal() * (factors - k);
    const off = r * D;
    for (let j = 0; j < D; j++) {
      let v = scale[j] * rng.normal();
      for (let k = 0; k < factors; k++) v += z[k] * w[k * D + j];
      rows[off + j] = j % 2 === 0 && v < 0 ? 0 : v;
    }
  }
  return rows;
}

interface PcaTiming {
  seconds: number;
  covarianceSeconds: number;
  eigenSeconds: number;
  ratios: number[];
}

async function pca(source: RowSource, D: number, nComponents: number): Promise<PcaTiming> {
  const t0 = performance.now();
  const acc = new CovarianceAccumulator(D);
  for await (const b of source()) await acc.add(b.rows, b.nRows);
  const cov = await acc.finish();
  const t1 = performance.now();
  const { values } = symmetricEigen(cov.covariance, D, { vectors: 50 });
  const t2 = performance.now();
  const total = values.reduce((s, v) => s + Math.max(0, v), 0);
  const ratios = Array.from(values.subarray(0, nComponents), (v) => Math.max(0, v) / total);
  return { seconds: (t2 - t0) / 1000, covarianceSeconds: (t1 - t0) / 1000, eigenSeconds: (t2 - t1) / 1000, ratios };
}

const PY = String.raw`
import json, sys, time, os
import numpy as np
from sklearn.decomposition import PCA
path, n, d, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = np.fromfile(path, dtype='<f4').reshape(n, d)
out = {'numpy': np.__version__}
import sklearn; out['sklearn'] = sklearn.__version__
t0 = time.perf_counter()
p = PCA(n_components=50, svd_solver='full').fit(x)
out['pca_seconds'] = time.perf_counter() - t0
out['ratios'] = p.explained_variance_ratio_.tolist()
t0 = time.perf_counter()
for _ in range(passes):
    stats = (x.mean(0), x.max(0), x.min(0), x.std(0, ddof=1), (x > 0).mean(0))
out['neuron_seconds'] = time.perf_counter() - t0
print(json.dumps(out))
`;

function python(rows: Float32Array, N: number, D: number): Record<string, unknown> {
  const probe = spawnSync('/usr/bin/python3', ['-c', 'import numpy, sklearn'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return { available: false, reason: 'no /usr/bin/python3 with numpy and scikit-learn' };
  const dir = mkdtempSync(join(tmpdir(), 'mechint-bench-'));
  try {
    const file = join(dir, 'rows.f32');
    writeFileSync(file, new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength));
    const script = join(dir, 'bench.py');
    writeFileSync(script, PY);
    const res = spawnSync('/usr/bin/python3', [script, file, String(N), String(D), String(NEURON_PASSES)], { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (res.status !== 0) return { available: false, reason: res.stderr.slice(-500) };
    return { available: true, ...JSON.parse(res.stdout) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the benchmark and returns its figures (plain JSON). */
export async function benchFeatureAndNeuron(options: { rows?: number; dim?: number; python?: boolean } = {}): Promise<Record<string, unknown>> {
  const N = options.rows ?? 100_000;
  const D = options.dim ?? 512;
  const load0 = loadavg()[0];
  const backend = await initBackend();
  const tGen = performance.now();
  const rows = makeRows(N, D);
  const genSeconds = (performance.now() - tGen) / 1000;
  const source = rowsFromMatrix(rows, D, BLOCK);
  const mb = rows.byteLength / 1e6;

  await pca(rowsFromMatrix(rows.subarray(0, Math.min(N, 8192) * D), D, BLOCK), D, 50); // warm-up: JIT and wasm
  const ours = await pca(source, D, 50);

  const tFeat = performance.now();
  const feature = await runFeatureAnalysis(source, { n_components: 50, seed: 0 });
  const featureSeconds = (performance.now() - tFeat) / 1000;

  await runNeuronAnalysis(rowsFromMatrix(rows.subarray(0, Math.min(N, 8192) * D), D, BLOCK)); // warm-up
  const repeated: RowSource = async function* () {
    for (let p = 0; p < NEURON_PASSES; p++) yield* source();
  };
  const tNeuron = performance.now();
  const neuron = await runNeuronAnalysis(repeated);
  const neuronSeconds = (performance.now() - tNeuron) / 1000;
  const neuronMBs = (NEURON_PASSES * mb) / neuronSeconds;

  const py: Record<string, unknown> = options.python === false ? { available: false, reason: 'skipped (--no-python)' } : python(rows, N, D);
  const out: Record<string, unknown> = {
    machine: { node: process.version, tfjs_backend: backend, load_average_1m_start: Number(load0.toFixed(2)), load_average_1m_end: Number(loadavg()[0].toFixed(2)) },
    data: { rows: N, dim: D, mb: Number(mb.toFixed(1)), generate_seconds: Number(genSeconds.toFixed(2)) },
    pca: {
      n_components: 50,
      seconds: Number(ours.seconds.toFixed(3)),
      covariance_seconds: Number(ours.covarianceSeconds.toFixed(3)),
      eigen_seconds: Number(ours.eigenSeconds.toFixed(3)),
      top10_explained: Number(ours.ratios.slice(0, 10).reduce((s, v) => s + v, 0).toFixed(6)),
    },
    feature_analysis: {
      seconds_with_kmeans: Number(featureSeconds.toFixed(3)),
      n_clusters: feature.clusters.n_clusters,
      participation_ratio: Number(feature.participation_ratio.toFixed(3)),
    },
    neuron: {
      mb_processed: Number((NEURON_PASSES * mb).toFixed(1)),
      seconds: Number(neuronSeconds.toFixed(3)),
      mb_per_s: Math.round(neuronMBs),
      n_dead_units: neuron.n_dead_units,
    },
    python: py,
  };
  if (py.available) {
    const skRatios = py.ratios as number[];
    out.comparison = {
      pca_speedup_vs_sklearn_full: Number(((py.pca_seconds as number) / ours.seconds).toFixed(2)),
      pca_max_abs_ratio_diff_vs_sklearn: Number(Math.max(...skRatios.map((v, i) => Math.abs(v - ours.ratios[i]))).toExponential(2)),
      neuron_speedup_vs_numpy: Number(((py.neuron_seconds as number) / neuronSeconds).toFixed(2)),
      numpy_neuron_mb_per_s: Math.round((NEURON_PASSES * mb) / (py.neuron_seconds as number)),
    };
    delete py.ratios;
  }
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name: string): number | undefined => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const figures = await benchFeatureAndNeuron({ rows: arg('rows'), dim: arg('dim'), python: !process.argv.includes('--no-python') });
  console.log(JSON.stringify(figures, null, 2));
}
