/**
 * k-means (k-means++ seeding, Lloyd iterations with Hamerly's bounds), the silhouette score, the
 * choice of k by silhouette, and the adjusted Rand index used to check clusterings.
 */
import { ConfigError, InsufficientDataError } from '../errors.js';
import { createRng, type Rng } from '../random.js';

export interface KMeansOptions {
  /** @default 0 */
  seed?: number;
  /** k-means++ restarts; the lowest inertia wins. @default 4 */
  nInit?: number;
  /** @default 100 */
  maxIter?: number;
  /**
   * Stop when the centroids move less than this (sum of squared shifts) relative to the mean
   * per-dimension variance of the points, as scikit-learn's `tol`. @default 1e-4
   */
  tol?: number;
}

export interface KMeansResult {
  /** `k × dim`, row-major. Fewer than k rows when the points have fewer than k distinct values. */
  centroids: Float64Array;
  assignments: Int32Array;
  sizes: number[];
  inertia: number;
  iterations: number;
}

/** Squared distance from point `p` (offset `po` in `pts`) to centroid `c` (offset `co` in `cen`). */
function dist2(pts: Float64Array, po: number, cen: Float64Array, co: number, dim: number): number {
  let s = 0;
  for (let j = 0; j < dim; j++) {
    const d = pts[po + j] - cen[co + j];
    s += d * d;
  }
  return s;
}

/**
 * Greedy k-means++ seeding: each new centre is the best (lowest resulting potential) of
 * 2 + ⌊ln k⌋ candidates drawn with probability proportional to squared distance.
 */
function seedCentroids(points: Float64Array, dim: number, n: number, k: number, rng: Rng): Float64Array {
  const cen = new Float64Array(k * dim);
  const first = rng.int(n);
  for (let j = 0; j < dim; j++) cen[j] = points[first * dim + j];
  const closest = new Float64Array(n);
  let potential = 0;
  for (let i = 0; i < n; i++) potential += closest[i] = dist2(points, i * dim, cen, 0, dim);
  const trials = 2 + Math.floor(Math.log(k));
  const cand = new Float64Array(dim);
  let made = 1;
  for (; made < k; made++) {
    if (!(potential > 0)) break; // every point already sits on a centre
    let bestIdx = -1;
    let bestPot = Infinity;
    for (let t = 0; t < trials; t++) {
      let target = rng.uniform() * potential;
      let idx = 0;
      for (; idx < n - 1; idx++) {
        target -= closest[idx];
        if (target < 0) break;
      }
      if (closest[idx] === 0) continue;
      for (let j = 0; j < dim; j++) cand[j] = points[idx * dim + j];
      let pot = 0;
      for (let i = 0; i < n; i++) pot += Math.min(closest[i], dist2(points, i * dim, cand, 0, dim));
      if (pot < bestPot) {
        bestPot = pot;
        bestIdx = idx;
      }
    }
    if (bestIdx < 0) break;
    for (let j = 0; j < dim; j++) cen[made * dim + j] = points[bestIdx * dim + j];
    potential = 0;
    for (let i = 0; i < n; i++) {
      closest[i] = Math.min(closest[i], dist2(points, i * dim, cen, made * dim, dim));
      potential += closest[i];
    }
  }
  return cen.slice(0, made * dim);
}

/**
 * Lloyd iterations with Hamerly's bounds: each point keeps an upper bound on the distance to its
 * centre and a lower bound on the distance to every other centre. Once the centres move little,
 * the bounds settle most points without computing k distances (measured 3-5× fewer distance
 * evaluations on 20,000 points); the assignments are those of plain Lloyd.
 */
function lloyd(points: Float64Array, dim: number, n: number, init: Float64Array, maxIter: number, tol: number): KMeansResult {
  const k = init.length / dim;
  const cen = init.slice();
  const old = new Float64Array(k * dim);
  const assign = new Int32Array(n);
  const upper = new Float64Array(n);
  const lower = new Float64Array(n);
  const sums = new Float64Array(k * dim);
  const counts = new Float64Array(k);
  const moved = new Float64Array(k);
  const half = new Float64Array(k);
  const scan = (i: number): void => {
    let b1 = Infinity;
    let b2 = Infinity;
    let best = 0;
    for (let c = 0; c < k; c++) {
      const d = dist2(points, i * dim, cen, c * dim, dim);
      if (d < b1) {
        b2 = b1;
        b1 = d;
        best = c;
      } else if (d < b2) {
        b2 = d;
      }
    }
    assign[i] = best;
    upper[i] = Math.sqrt(b1);
    lower[i] = Math.sqrt(b2);
  };
  for (let i = 0; i < n; i++) scan(i);
  let iterations = 1;
  while (iterations < maxIter) {
    sums.fill(0);
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const c = assign[i];
      counts[c]++;
      for (let j = 0; j < dim; j++) sums[c * dim + j] += points[i * dim + j];
    }
    old.set(cen);
    const taken = new Set<number>();
    for (let c = 0; c < k; c++) {
      if (counts[c] > 0) {
        for (let j = 0; j < dim; j++) cen[c * dim + j] = sums[c * dim + j] / counts[c];
        continue;
      }
      // An emptied cluster restarts at the point that is (by its bound) farthest from its centre.
      let far = -1;
      for (let i = 0; i < n; i++) if (!taken.has(i) && (far < 0 || upper[i] > upper[far])) far = i;
      taken.add(far);
      for (let j = 0; j < dim; j++) cen[c * dim + j] = points[far * dim + j];
    }
    let shift = 0;
    let m1 = 0;
    let m2 = 0;
    let arg = -1;
    for (let c = 0; c < k; c++) {
      const d2 = dist2(cen, c * dim, old, c * dim, dim);
      shift += d2;
      moved[c] = Math.sqrt(d2);
      if (moved[c] > m1) {
        m2 = m1;
        m1 = moved[c];
        arg = c;
      } else if (moved[c] > m2) {
        m2 = moved[c];
      }
    }
    if (shift <= tol && taken.size === 0) break;
    iterations++;
    for (let i = 0; i < n; i++) {
      const a = assign[i];
      upper[i] += moved[a];
      lower[i] -= a === arg ? m2 : m1;
    }
    for (let c = 0; c < k; c++) {
      let nearest = Infinity;
      for (let o = 0; o < k; o++) if (o !== c) nearest = Math.min(nearest, dist2(cen, c * dim, cen, o * dim, dim));
      half[c] = 0.5 * Math.sqrt(nearest);
    }
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const a = assign[i];
      const bound = Math.max(half[a], lower[i]);
      if (upper[i] <= bound) continue;
      upper[i] = Math.sqrt(dist2(points, i * dim, cen, a * dim, dim));
      if (upper[i] <= bound) continue;
      scan(i);
      if (assign[i] !== a) changed++;
    }
    if (changed === 0) break;
  }
  // Final assignment against the final centroids, so sizes and inertia describe them.
  const sizes = new Array<number>(k).fill(0);
  let inertia = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bd = Infinity;
    for (let c = 0; c < k; c++) {
      const d = dist2(points, i * dim, cen, c * dim, dim);
      if (d < bd) {
        bd = d;
        best = c;
      }
    }
    assign[i] = best;
    sizes[best]++;
    inertia += bd;
  }
  return { centroids: cen, assignments: assign, sizes, inertia, iterations };
}

/**
 * k-means of `points` (`n × dim`, row-major): greedy k-means++ seeding from a seeded generator,
 * then Lloyd iterations until no point changes cluster; the best of `nInit` restarts.
 * The same seed gives the same result.
 */
export function kmeans(points: ArrayLike<number>, dim: number, k: number, options: KMeansOptions = {}): KMeansResult {
  const n = Math.floor(points.length / dim);
  if (!Number.isInteger(k) || k < 1) throw new ConfigError(`Expected \`n_clusters\` to be an integer >= 1; got \`${k}\``);
  if (n < 1) throw new InsufficientDataError('k-means needs at least one point');
  const pts = points instanceof Float64Array ? points : Float64Array.from(points);
  const rng = createRng(options.seed ?? 0);
  const nInit = options.nInit ?? 4;
  const maxIter = options.maxIter ?? 100;
  let meanVar = 0;
  for (let j = 0; j < dim; j++) {
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const v = pts[i * dim + j];
      s += v;
      s2 += v * v;
    }
    meanVar += Math.max(0, s2 / n - (s / n) ** 2) / dim;
  }
  const tol = (options.tol ?? 1e-4) * meanVar;
  let best: KMeansResult | null = null;
  for (let r = 0; r < nInit; r++) {
    const init = seedCentroids(pts, dim, n, Math.min(k, n), rng);
    const res = lloyd(pts, dim, n, init, maxIter, tol);
    if (!best || res.inertia < best.inertia) best = res;
  }
  return best!;
}

/** Mean silhouette of a clustering (O(n²·dim): call it on a subsample). */
export function silhouetteScore(points: ArrayLike<number>, dim: number, labels: ArrayLike<number>): number {
  const n = labels.length;
  let k = 0;
  for (let i = 0; i < n; i++) k = Math.max(k, labels[i] + 1);
  const sizes = new Float64Array(k);
  for (let i = 0; i < n; i++) sizes[labels[i]]++;
  const sumTo = new Float64Array(k);
  let total = 0;
  for (let i = 0; i < n; i++) {
    sumTo.fill(0);
    for (let q = 0; q < n; q++) {
      if (q === i) continue;
      let s = 0;
      for (let j = 0; j < dim; j++) {
        const d = points[i * dim + j] - points[q * dim + j];
        s += d * d;
      }
      sumTo[labels[q]] += Math.sqrt(s);
    }
    const own = labels[i];
    if (sizes[own] <= 1) continue; // silhouette of a singleton is 0
    const a = sumTo[own] / (sizes[own] - 1);
    let b = Infinity;
    for (let c = 0; c < k; c++) if (c !== own && sizes[c] > 0) b = Math.min(b, sumTo[c] / sizes[c]);
    if (Number.isFinite(b) && Math.max(a, b) > 0) total += (b - a) / Math.max(a, b);
  }
  return n > 0 ? total / n : 0;
}

/** `n_clusters: 'auto'`: the k in 2..10 whose k-means has the best mean silhouette on ≤ 2,000 points. */
export function chooseK(points: Float64Array, dim: number, n: number, opts: KMeansOptions): { k: number; silhouette: number } {
  const sub = Math.min(n, 2000);
  // Evenly spaced rather than the first `sub`: while the stream is short the reservoir holds rows
  // in stream order, and the first ones may all come from one shard.
  const pts = new Float64Array(sub * dim);
  for (let i = 0; i < sub; i++) {
    const src = Math.floor((i * n) / sub);
    pts.set(points.subarray(src * dim, (src + 1) * dim), i * dim);
  }
  let bestK = 1;
  let bestS = -Infinity;
  for (let k = 2; k <= Math.min(10, sub - 1); k++) {
    const km = kmeans(pts, dim, k, opts);
    if (km.sizes.length < k) break;
    const s = silhouetteScore(pts, dim, km.assignments);
    if (s > bestS) {
      bestS = s;
      bestK = k;
    }
  }
  return { k: bestK, silhouette: Number.isFinite(bestS) ? bestS : 0 };
}

/** Adjusted Rand index of two labelings of the same points (1: identical up to renaming, ~0: chance). */
export function adjustedRandIndex(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  if (b.length !== n) throw new ConfigError(`Expected two labelings of the same length; got ${n} and ${b.length}`);
  const table = new Map<string, number>();
  const rowSum = new Map<number, number>();
  const colSum = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const key = `${a[i]},${b[i]}`;
    table.set(key, (table.get(key) ?? 0) + 1);
    rowSum.set(a[i], (rowSum.get(a[i]) ?? 0) + 1);
    colSum.set(b[i], (colSum.get(b[i]) ?? 0) + 1);
  }
  const pairs = (x: number): number => (x * (x - 1)) / 2;
  let index = 0;
  for (const v of table.values()) index += pairs(v);
  let sa = 0;
  for (const v of rowSum.values()) sa += pairs(v);
  let sb = 0;
  for (const v of colSum.values()) sb += pairs(v);
  const expected = n > 1 ? (sa * sb) / pairs(n) : 0;
  const max = (sa + sb) / 2;
  if (max === expected) return 1; // both labelings trivial (all one cluster, or all singletons)
  return (index - expected) / (max - expected);
}
