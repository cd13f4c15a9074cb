import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFeatureAnalysis, kmeans, adjustedRandIndex } from '../src/analysis/feature.js';
import { CovarianceAccumulator, symmetricEigen } from '../src/analysis/linalg.js';
import { createRng } from '../src/random.js';
import { rowsFromMatrix } from '../src/storage/rows.js';
import { ConfigError, FormatError, InsufficientDataError } from '../src/errors.js';

/** Cyclic Jacobi rotations: slow but simple, and independent of the Householder + QR solver. */
function jacobiEigenvalues(matrix: Float64Array, n: number): number[] {
  const a = Float64Array.from(matrix);
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q] ** 2;
    if (off < 1e-26) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        // Rotation angle that zeroes a[p][q]: tan(2θ) = 2 a_pq / (a_qq − a_pp).
        const theta = 0.5 * Math.atan2(2 * apq, a[q * n + q] - a[p * n + p]);
        const c = Math.cos(theta);
        const s = Math.sin(theta);
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  return Array.from({ length: n }, (_, i) => a[i * n + i]).sort((x, y) => y - x);
}

function randomSymmetric(n: number, seed: number): Float64Array {
  const rng = createRng(seed);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const v = rng.normal();
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  return a;
}

function checkDecomposition(a: Float64Array, n: number, k = n): void {
  const { values, vectors } = symmetricEigen(a, n, { vectors: k === n ? true : k });
  assert.ok(vectors);
  assert.equal(vectors.length, k * n);
  const scale = Math.max(1, ...Array.from(values, Math.abs));
  const want = jacobiEigenvalues(a, n);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(values[i] - want[i]) < 1e-10 * scale, `λ${i}: ${values[i]} vs ${want[i]}`);
  const kk = k;
  for (let i = 1; i < n; i++) assert.ok(values[i] <= values[i - 1], 'sorted largest first');
  for (let k = 0; k < kk; k++) {
    for (let i = 0; i < n; i++) {
      let av = 0;
      for (let j = 0; j < n; j++) av += a[i * n + j] * vectors[k * n + j];
      assert.ok(Math.abs(av - values[k] * vectors[k * n + i]) < 1e-10 * scale, `residual of A v = λ v, vector ${k}`);
    }
    for (let l = k; l < kk; l++) {
      let d = 0;
      for (let j = 0; j < n; j++) d += vectors[k * n + j] * vectors[l * n + j];
      assert.ok(Math.abs(d - (k === l ? 1 : 0)) < 1e-10, `orthonormal ${k},${l}`);
    }
  }
}

test('the symmetric eigendecomposition matches Jacobi rotations and satisfies A v = λ v', () => {
  for (const n of [1, 2, 3, 10, 41]) checkDecomposition(randomSymmetric(n, n), n);
  // Repeated eigenvalues and an already diagonal matrix.
  const n = 12;
  const rank1 = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) rank1[i * n + j] = (i === j ? 2 : 0) + (i + 1) * (j + 1) * 0.01;
  checkDecomposition(rank1, n);
  const diag = new Float64Array(n * n);
  for (let i = 0; i < n; i++) diag[i * n + i] = (i * 7) % 5;
  checkDecomposition(diag, n);
});

test('the top-k eigenvectors (inverse iteration) are right even for near-equal eigenvalues', () => {
  checkDecomposition(randomSymmetric(60, 4), 60, 7);
  // Wilkinson's W21+: its top eigenvalues come in pairs equal to ~1e-14.
  const n = 21;
  const w = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    w[i * n + i] = Math.abs(i - 10);
    if (i + 1 < n) w[i * n + i + 1] = w[(i + 1) * n + i] = 1;
  }
  checkDecomposition(w, n, 5);
  // Exactly repeated eigenvalues, and a matrix that is already split (diagonal).
  const rep = new Float64Array(40 * 40);
  for (let i = 0; i < 40; i++) rep[i * 40 + i] = i % 4 === 0 ? 3 : 1;
  checkDecomposition(rep, 40, 9);
});

function directCovariance(rows: Float32Array, n: number, d: number): { mean: number[]; cov: Float64Array } {
  const mean = new Array<number>(d).fill(0);
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) mean[j] += rows[r * d + j] / n;
  const cov = new Float64Array(d * d);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < d; i++) {
      const xi = rows[r * d + i] - mean[i];
      for (let j = 0; j < d; j++) cov[i * d + j] += (xi * (rows[r * d + j] - mean[j])) / (n - 1);
    }
  }
  return { mean, cov };
}

test('the streamed covariance equals a two-pass computation, with both kernels and a large mean', async () => {
  const n = 1500;
  const d = 9;
  const rng = createRng(3);
  const rows = new Float32Array(n * d);
  for (let i = 0; i < rows.length; i++) rows[i] = 1000 + rng.normal() * (1 + (i % d));
  const want = directCovariance(rows, n, d);
  for (const [kernel, tol] of [['js', 1e-9], ['tf', 2e-5]] as const) {
    const acc = new CovarianceAccumulator(d, { kernel, chunkRows: 256 });
    for (let s = 0; s < n; s += 97) await acc.add(rows.subarray(s * d, Math.min(n, s + 97) * d), Math.min(97, n - s));
    const got = await acc.finish();
    assert.equal(got.nRows, n);
    for (let j = 0; j < d; j++) assert.ok(Math.abs(got.mean[j] - want.mean[j]) < 1e-9 * 1000, `${kernel} mean ${j}`);
    for (let i = 0; i < d * d; i++) {
      const scale = Math.sqrt(want.cov[Math.floor(i / d) * (d + 1)] * want.cov[(i % d) * (d + 1)]);
      assert.ok(Math.abs(got.covariance[i] - want.cov[i]) < tol * scale, `${kernel} cov[${i}]: ${got.covariance[i]} vs ${want.cov[i]}`);
    }
  }
});

/** n rows of rank-`rank` data in d dims (plus tiny noise and an offset); returns the planted row space too. */
function lowRank(n: number, d: number, rank: number, seed: number) {
  const rng = createRng(seed);
  const basis = new Float64Array(rank * d).map(() => rng.normal());
  const rows = new Float32Array(n * d);
  for (let r = 0; r < n; r++) {
    const z = Array.from({ length: rank }, (_, k) => rng.normal() * (rank - k));
    for (let j = 0; j < d; j++) {
      let v = 3 + 1e-3 * rng.normal();
      for (let k = 0; k < rank; k++) v += z[k] * basis[k * d + j];
      rows[r * d + j] = v;
    }
  }
  return { rows, basis };
}

test('on rank-5 data the top 5 explained-variance ratios sum above 0.99 and match a dense eigendecomposition', async () => {
  const n = 4000;
  const d = 64;
  const { rows, basis } = lowRank(n, d, 5, 11);
  const res = await runFeatureAnalysis(rowsFromMatrix(rows, d, 512), { return_components: 5 });
  assert.equal(res.n_components, 50);
  assert.equal(res.explained_variance.length, 50);
  assert.equal(res.n_rows, n);
  const top5 = res.explained_variance.slice(0, 5).reduce((s, v) => s + v, 0);
  assert.ok(top5 > 0.99, `top 5 explain ${top5}`);

  const dense = jacobiEigenvalues(directCovariance(rows, n, d).cov, d).map((v) => Math.max(0, v));
  const total = dense.reduce((s, v) => s + v, 0);
  for (let i = 0; i < 5; i++) {
    assert.ok(Math.abs(res.explained_variance[i] - dense[i] / total) < 1e-4, `ratio ${i}: ${res.explained_variance[i]} vs ${dense[i] / total}`);
    assert.ok(Math.abs(res.eigenvalues[i] - dense[i]) < 1e-4 * dense[i], `eigenvalue ${i}`);
  }
  const pr = (total * total) / dense.reduce((s, v) => s + v * v, 0);
  assert.ok(Math.abs(res.participation_ratio - pr) < 1e-3 * pr, `participation ratio ${res.participation_ratio} vs ${pr}`);
  assert.ok(res.participation_ratio > 1 && res.participation_ratio < 5);
  assert.ok(Math.abs(res.cumulative_explained_variance[4] - top5) < 1e-12);

  // Each reported axis lies in the planted row space: its residual after projecting onto it is ~0.
  const { vectors: rowSpace } = symmetricEigen(gram(basis, 5, d), d);
  for (const comp of res.components) {
    let inside = 0;
    for (let k = 0; k < 5; k++) {
      let dp = 0;
      for (let j = 0; j < d; j++) dp += comp[j] * rowSpace![k * d + j];
      inside += dp * dp;
    }
    assert.ok(inside > 0.999, `component inside the planted subspace: ${inside}`);
  }
});

/** Bᵀ B (d × d) of a k × d basis: its top-k eigenvectors span the basis rows. */
function gram(basis: Float64Array, k: number, d: number): Float64Array {
  const g = new Float64Array(d * d);
  for (let r = 0; r < k; r++) for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) g[i * d + j] += basis[r * d + i] * basis[r * d + j];
  return g;
}

/** n rows around `k` well-separated centres in d dims; label of each row. */
function blobs(n: number, d: number, k: number, seed: number) {
  const rng = createRng(seed);
  const centres = Array.from({ length: k }, () => Array.from({ length: d }, () => rng.normal() * 4));
  const rows = new Float32Array(n * d);
  const labels = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    const c = rng.int(k);
    labels[r] = c;
    for (let j = 0; j < d; j++) rows[r * d + j] = centres[c][j] + rng.normal();
  }
  return { rows, labels };
}

test('k-means recovers planted clusters (adjusted Rand index >= 0.9)', async () => {
  const n = 3000;
  const d = 32;
  const { rows, labels } = blobs(n, d, 6, 5);
  const res = await runFeatureAnalysis(rowsFromMatrix(rows, d, 700), { n_clusters: 6, seed: 2, return_assignments: true, max_rows_for_clustering: 1000 });
  const c = res.clusters;
  assert.equal(c.n_clusters, 6);
  assert.equal(c.n_rows_sampled, 1000);
  assert.equal(c.sizes.reduce((s, v) => s + v, 0), 1000);
  assert.equal(c.centroids.length, 6);
  assert.ok(c.inertia > 0);
  const truth = c.sample_row_indices!.map((i) => labels[i]);
  const ari = adjustedRandIndex(truth, c.assignments!);
  assert.ok(ari >= 0.9, `ARI ${ari}`);

  // The exported kmeans on raw points, with overlapping 2-D clusters.
  const small = blobs(600, 2, 3, 9);
  const pts = Float64Array.from(small.rows);
  const km = kmeans(pts, 2, 3, { seed: 4 });
  assert.ok(adjustedRandIndex(small.labels, km.assignments) >= 0.9);
  assert.deepEqual(kmeans(pts, 2, 3, { seed: 4 }), km);
});

test('the same seed gives the same result, and the reservoir sample is uniform over the stream', async () => {
  const n = 6000;
  const d = 16;
  const { rows } = blobs(n, d, 4, 8);
  const opts = { n_clusters: 4, seed: 17, max_rows_for_clustering: 500, return_assignments: true };
  const a = await runFeatureAnalysis(rowsFromMatrix(rows, d, 333), opts);
  const b = await runFeatureAnalysis(rowsFromMatrix(rows, d, 333), opts);
  assert.deepEqual(a, b);
  assert.deepEqual(JSON.parse(JSON.stringify(a)), a);
  const idx = a.clusters.sample_row_indices!;
  assert.equal(new Set(idx).size, 500);
  assert.ok(idx.every((i) => Number.isInteger(i) && i >= 0 && i < n));
  const meanIdx = idx.reduce((s, v) => s + v, 0) / idx.length;
  // A uniform sample's mean index is n/2 ± n/sqrt(12·500) ≈ ±77: allow 4 standard deviations.
  assert.ok(Math.abs(meanIdx - n / 2) < 310, `mean sampled index ${meanIdx}`);
});

test('n_clusters: "auto" picks the planted number of clusters by silhouette', async () => {
  const { rows } = blobs(1500, 8, 4, 21);
  const res = await runFeatureAnalysis(rowsFromMatrix(rows, 8), { nClusters: 'auto', nComponents: 8, seed: 1 });
  assert.equal(res.clusters.selection, 'silhouette');
  assert.equal(res.clusters.n_clusters, 4);
  assert.ok(res.clusters.silhouette! > 0.5);
  assert.equal(res.n_components, 8);
});

test('adjusted Rand index: 1 for the same partition under other names, about 0 for chance', () => {
  assert.equal(adjustedRandIndex([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 9, 9]), 1);
  const rng = createRng(1);
  const a = Array.from({ length: 5000 }, () => rng.int(4));
  const b = Array.from({ length: 5000 }, () => rng.int(4));
  assert.ok(Math.abs(adjustedRandIndex(a, b)) < 0.02);
});

test('rejects bad options and too few rows, naming what is wrong', async () => {
  const src = rowsFromMatrix(new Float32Array(40).map((_, i) => i % 7), 4);
  await assert.rejects(runFeatureAnalysis(src, { n_components: 0 }), (e: unknown) => e instanceof ConfigError && /n_components/.test(e.message) && /`0`/.test(e.message));
  await assert.rejects(runFeatureAnalysis(src, { n_clusters: 'many' }), (e: unknown) => e instanceof ConfigError && /n_clusters/.test(e.message));
  await assert.rejects(runFeatureAnalysis(src, { components: 3 }), (e: unknown) => e instanceof ConfigError && /components/.test(e.message));
  await assert.rejects(runFeatureAnalysis(rowsFromMatrix(new Float32Array(4), 4)), InsufficientDataError);
  // Constant rows: no variance, still a JSON-safe answer.
  const flat = await runFeatureAnalysis(rowsFromMatrix(new Float32Array(400).fill(2), 4), { n_clusters: 3 });
  assert.equal(flat.total_variance, 0);
  assert.equal(flat.participation_ratio, 0);
  assert.equal(flat.clusters.n_clusters, 1);
  assert.deepEqual(JSON.parse(JSON.stringify(flat)), flat);
});

test('activations with NaN are refused with the unit named, not looped on', async () => {
  const rows = new Float32Array(40).map((_, i) => i % 5);
  rows[6] = NaN;
  await assert.rejects(runFeatureAnalysis(rowsFromMatrix(rows, 4)), (e: unknown) => e instanceof FormatError && /unit 2/.test(e.message));
});
