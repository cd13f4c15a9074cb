/**
 * Feature analysis: PCA from a streamed covariance and a symmetric eigendecomposition, the
 * participation ratio (effective dimensionality), and k-means clusters of rows projected onto
 * the top principal components. One pass over the rows; memory is a D×D covariance plus a
 * bounded reservoir sample of rows for clustering.
 */
import { FormatError, InsufficientDataError } from '../errors.js';
import { bool, defineOptions, int, integer, oneOf, orLiteral, type OptionInput, type OptionValues } from '../options.js';
import { CovarianceAccumulator, symmetricEigen } from './linalg.js';
import { createRng, type Rng } from '../random.js';
import { chooseK, kmeans } from './kmeans.js';
import type { RowSource } from '../storage/rows.js';
import { defineAnalysis } from './definition.js';

export const featureOptions = defineOptions('feature option', {
  nComponents: orLiteral(integer(1), null, { default: null, defaultDoc: 'min(50, D)', doc: 'Principal components reported (at most D).' }),
  nClusters: orLiteral(integer(1), 'auto', { default: 8, doc: "k-means clusters, or 'auto': the k in 2..10 with the best mean silhouette on up to 2,000 sampled rows." }),
  clusterComponents: orLiteral(integer(1), null, { default: null, defaultDoc: 'min(10, n_components)', doc: 'Top PCs the rows are projected onto before clustering.' }),
  maxRowsForClustering: int({ min: 1, default: 20000, doc: 'Rows kept (uniform reservoir sample of the stream) for clustering.' }),
  nInit: int({ min: 1, default: 4, doc: 'k-means++ restarts; the lowest inertia wins.' }),
  maxIter: int({ min: 1, default: 100, doc: 'Lloyd iterations per restart at most.' }),
  seed: int({ min: 0, default: 0, doc: 'Seed of the reservoir sample and of k-means.' }),
  returnComponents: orLiteral(integer(0), null, { default: null, defaultDoc: 'min(10, n_components)', doc: 'Principal axes (unit vectors of D values) included in the result, top first.' }),
  returnAssignments: bool({ default: false, doc: "Include each sampled row's cluster and its row index in the stream." }),
  covarianceKernel: oneOf(['auto', 'tf', 'js'] as const, { default: 'auto', doc: "How the covariance's Xᵀ X is formed (see CovarianceAccumulator)." }),
});
export type FeatureAnalysisOptions = OptionInput<typeof featureOptions.fields>;

export interface ClusterResult {
  n_clusters: number;
  /** How `n_clusters` was chosen: `'fixed'` (the option) or `'silhouette'` (`n_clusters: 'auto'`). */
  selection: 'fixed' | 'silhouette';
  /** Mean silhouette of the chosen k on the silhouette subsample (only with `n_clusters: 'auto'`). */
  silhouette?: number;
  /** Dimensions clustered in: the top PCs. */
  n_dims: number;
  /** Rows clustered (the reservoir sample). */
  n_rows_sampled: number;
  /** Sampled rows per cluster, in centroid order. */
  sizes: number[];
  /** Sum of squared distances of sampled rows to their centroid, in PC coordinates. */
  inertia: number;
  /** Centroids in PC coordinates (`n_clusters × n_dims`). */
  centroids: number[][];
  iterations: number;
  assignments?: number[];
  sample_row_indices?: number[];
}

export interface FeatureAnalysisResult {
  n_rows: number;
  n_units: number;
  n_components: number;
  /** Fraction of the total variance along each of the top `n_components` PCs (sklearn's explained_variance_ratio_). */
  explained_variance: number[];
  cumulative_explained_variance: number[];
  /** Variance along each top PC: the covariance's eigenvalues (sklearn's explained_variance_). */
  eigenvalues: number[];
  /** Trace of the covariance: the sum of all eigenvalues. */
  total_variance: number;
  /** (Σλ)² / Σλ² over all eigenvalues: 1 for one direction, D for isotropic variance. */
  participation_ratio: number;
  /** Top principal axes, each D values; `return_components` of them. */
  components: number[][];
  clusters: ClusterResult;
}

type Resolved = OptionValues<typeof featureOptions.fields>;

/** Merges camelCase and snake_case keys over the defaults; unknown keys and bad values throw ConfigError. */
export function resolveFeatureOptions(options: Record<string, unknown> = {}): Resolved {
  return featureOptions.resolve(options);
}

/**
 * A uniform sample of at most `capacity` rows of a stream (reservoir sampling, Li's
 * "Algorithm L": it draws random numbers only for the rows it keeps, so long streams cost
 * almost nothing beyond the copy).
 */
class RowReservoir {
  rows: Float32Array;
  readonly index: number[] = [];
  private seen = 0;
  private next = 0;
  private w = 0;
  constructor(private readonly dim: number, private readonly capacity: number, private readonly rng: Rng) {
    this.rows = new Float32Array(Math.min(capacity, 1024) * dim);
  }
  get size(): number {
    return this.index.length;
  }
  private open(): number {
    // In (0, 1): logs stay finite.
    return (this.rng.nextUint32() + 0.5) / 4294967296;
  }
  private skip(): number {
    return Math.floor(Math.log(this.open()) / Math.log(1 - this.w)) + 1;
  }
  add(block: Float32Array, nRows: number): void {
    const D = this.dim;
    let r = 0;
    while (r < nRows && this.index.length < this.capacity) {
      const k = this.index.length;
      if ((k + 1) * D > this.rows.length) {
        const grown = new Float32Array(Math.min(this.capacity, 2 * (k + 1)) * D);
        grown.set(this.rows);
        this.rows = grown;
      }
      this.rows.set(block.subarray(r * D, (r + 1) * D), k * D);
      this.index.push(this.seen);
      this.seen++;
      r++;
      if (this.index.length === this.capacity) {
        this.w = Math.exp(Math.log(this.open()) / this.capacity);
        this.next = this.seen - 1 + this.skip();
      }
    }
    const end = this.seen + (nRows - r);
    while (this.index.length === this.capacity && this.next < end) {
      const src = this.next - this.seen + r;
      const slot = this.rng.int(this.capacity);
      this.rows.set(block.subarray(src * D, (src + 1) * D), slot * D);
      this.index[slot] = this.next;
      this.w *= Math.exp(Math.log(this.open()) / this.capacity);
      this.next += this.skip();
    }
    this.seen = end;
  }
}

/**
 * PCA, participation ratio and k-means clusters of one layer's rows.
 *
 * @example
 * const res = await runFeatureAnalysis(rowsFromMatrix(acts, 512), { n_components: 20, n_clusters: 5, seed: 1 });
 * console.log(res.explained_variance.slice(0, 10), res.clusters.sizes);
 */
export async function runFeatureAnalysis(source: RowSource, options: FeatureAnalysisOptions | Record<string, unknown> = {}): Promise<FeatureAnalysisResult> {
  const opts = resolveFeatureOptions(options as Record<string, unknown>);
  const rng = createRng(opts.seed);
  let acc: CovarianceAccumulator | null = null;
  let reservoir: RowReservoir | null = null;
  let D = -1;
  for await (const batch of source()) {
    if (batch.nRows === 0) continue;
    if (D < 0) {
      D = batch.dim;
      acc = new CovarianceAccumulator(D, { kernel: opts.covarianceKernel });
      reservoir = new RowReservoir(D, opts.maxRowsForClustering, rng);
    } else if (batch.dim !== D) {
      throw new FormatError(`Row blocks of one layer must all have the same width; got ${batch.dim} after ${D}${batch.shard ? ` (in ${batch.shard})` : ''}`);
    }
    if (batch.rows.length < batch.nRows * D) throw new FormatError(`A row block claims ${batch.nRows} rows of ${D} but holds ${batch.rows.length} values`);
    reservoir!.add(batch.rows, batch.nRows);
    await acc!.add(batch.rows, batch.nRows);
  }
  if (!acc || !reservoir || acc.count < 2) {
    throw new InsufficientDataError(`The feature analysis needs at least 2 rows of activations; the layer has ${acc ? acc.count : 0}`);
  }
  const cov = await acc.finish();
  const bad = cov.mean.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) throw new FormatError(`The feature analysis needs finite activations; unit ${bad} has NaN or infinite values`);
  const nComp = Math.min(opts.nComponents ?? 50, D);
  const nReturn = Math.min(opts.returnComponents ?? Math.min(10, nComp), nComp);
  const dims = Math.min(opts.clusterComponents ?? Math.min(10, nComp), D);
  // Ratios need every eigenvalue (for the total) but only these axes need vectors.
  const nAxes = Math.max(nReturn, dims);
  const { values, vectors: eig } = symmetricEigen(cov.covariance, D, { vectors: nAxes });
  const vectors = eig!;
  // An eigenvector's sign is arbitrary: fix it so the largest-magnitude entry is positive, which
  // makes axes (and cluster coordinates) comparable between runs and with scikit-learn's svd_flip.
  for (let c = 0; c < nAxes; c++) {
    let big = 0;
    for (let j = 1; j < D; j++) if (Math.abs(vectors[c * D + j]) > Math.abs(vectors[c * D + big])) big = j;
    if (vectors[c * D + big] < 0) for (let j = 0; j < D; j++) vectors[c * D + j] = -vectors[c * D + j];
  }
  const lambda = Array.from(values, (v) => Math.max(0, v));
  const total = lambda.reduce((s, v) => s + v, 0);
  const sumSq = lambda.reduce((s, v) => s + v * v, 0);
  const top = lambda.slice(0, nComp);
  const ratios = top.map((v) => (total > 0 ? v / total : 0));
  const cumulative: number[] = [];
  let running = 0;
  for (const v of ratios) cumulative.push((running += v));
  const components = Array.from({ length: nReturn }, (_, i) => Array.from(vectors.subarray(i * D, (i + 1) * D)));

  // Cluster the reservoir sample in the coordinates of the top PCs.
  const m = reservoir.size;
  const proj = project(reservoir.rows, m, D, cov.mean, vectors, dims);
  const kmOpts = { seed: opts.seed, nInit: opts.nInit, maxIter: opts.maxIter };
  let k: number;
  let selection: ClusterResult['selection'] = 'fixed';
  let silhouette: number | undefined;
  if (opts.nClusters === 'auto') {
    const chosen = chooseK(proj, dims, m, kmOpts);
    k = chosen.k;
    silhouette = chosen.silhouette;
    selection = 'silhouette';
  } else {
    k = opts.nClusters;
  }
  const km = kmeans(proj, dims, Math.min(k, m), kmOpts);
  const clusters: ClusterResult = {
    n_clusters: km.sizes.length,
    selection,
    ...(silhouette === undefined ? {} : { silhouette }),
    n_dims: dims,
    n_rows_sampled: m,
    sizes: km.sizes,
    inertia: km.inertia,
    centroids: Array.from({ length: km.sizes.length }, (_, c) => Array.from(km.centroids.subarray(c * dims, (c + 1) * dims))),
    iterations: km.iterations,
  };
  if (opts.returnAssignments) {
    clusters.assignments = Array.from(km.assignments);
    clusters.sample_row_indices = reservoir.index.slice();
  }
  return {
    n_rows: cov.nRows,
    n_units: D,
    n_components: nComp,
    explained_variance: ratios,
    cumulative_explained_variance: cumulative,
    eigenvalues: top,
    total_variance: total,
    participation_ratio: sumSq > 0 ? (total * total) / sumSq : 0,
    components,
    clusters,
  };
}

/** Centred rows (`m × D`) in the coordinates of the first `dims` rows of `axes`: `m × dims`. */
function project(rows: Float32Array, m: number, D: number, mean: Float64Array, axes: Float64Array, dims: number): Float64Array {
  const out = new Float64Array(m * dims);
  const centred = new Float64Array(D);
  for (let r = 0; r < m; r++) {
    for (let j = 0; j < D; j++) centred[j] = rows[r * D + j] - mean[j];
    for (let c = 0; c < dims; c++) {
      let s = 0;
      const off = c * D;
      for (let j = 0; j < D; j++) s += centred[j] * axes[off + j];
      out[r * dims + c] = s;
    }
  }
  return out;
}

export { kmeans, silhouetteScore, adjustedRandIndex, type KMeansOptions, type KMeansResult } from './kmeans.js';

export const featureAnalysis = defineAnalysis({
  name: 'feature',
  title: 'Features: PCA and clusters',
  description: 'PCA explained variance, participation ratio and k-means clusters on the top PCs',
  options: featureOptions,
  run: (rows, options) => runFeatureAnalysis(rows, options),
});
