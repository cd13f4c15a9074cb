/**
 * Dense linear algebra the analyses need and TensorFlow.js lacks: a symmetric eigendecomposition
 * (Householder tridiagonalisation, implicit QR steps with a Wilkinson shift, inverse iteration
 * for a few top vectors) and a streamed mean/covariance over row blocks. Matrices are row-major
 * Float64Arrays.
 */
import { tf, initBackend } from '../backend.js';
import { ConfigError, FormatError } from '../errors.js';

/** Dot product of the first `n` entries. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>, n = a.length): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/** Euclidean norm. */
export function norm2(a: ArrayLike<number>): number {
  return Math.sqrt(dot(a, a));
}

export interface SymmetricEigen {
  /** Eigenvalues, largest first. */
  values: Float64Array;
  /** `k × n` (k = the vectors asked for), row `i` the unit eigenvector of `values[i]`; null when none were asked for. */
  vectors: Float64Array | null;
}

interface Tridiagonal {
  d: Float64Array;
  /** `e[i]` couples i and i+1; `e[n-1]` is 0. */
  e: Float64Array;
  /** Unit reflector k in row k (entries k+1..n-1; a zero row is the identity), if kept. */
  v: Float64Array | null;
}

/**
 * Reduces symmetric `a` (overwritten) to tridiagonal form `T = Qᵀ A Q`, `Q = H_0 … H_{n-3}`,
 * with Householder reflections `H_k = I − 2 v_k v_kᵀ`.
 */
function tridiagonalize(a: Float64Array, n: number, keepReflectors: boolean): Tridiagonal {
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  const v = keepReflectors ? new Float64Array(n * n) : null;
  const vk = new Float64Array(n);
  const w = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    const rowK = k * n;
    d[k] = a[rowK + k];
    let sigma2 = 0;
    for (let i = k + 1; i < n; i++) sigma2 += a[rowK + i] * a[rowK + i];
    const x0 = a[rowK + k + 1];
    const tail2 = sigma2 - x0 * x0;
    if (tail2 <= 1e-300 * Math.max(1, sigma2)) {
      // Column already tridiagonal: the reflector is the identity.
      e[k] = x0;
      continue;
    }
    const sigma = Math.sqrt(sigma2);
    const alpha = x0 >= 0 ? -sigma : sigma;
    e[k] = alpha;
    // v = x - alpha e1, normalised; |v|² = 2σ² + 2|x0|σ, so no cancellation by the choice of sign.
    const vnorm = Math.sqrt(2 * sigma2 + 2 * Math.abs(x0) * sigma);
    for (let i = k + 1; i < n; i++) vk[i] = a[rowK + i] / vnorm;
    vk[k + 1] = (x0 - alpha) / vnorm;
    if (v) for (let i = k + 1; i < n; i++) v[rowK + i] = vk[i];
    // Trailing block B ← H B H = B − v wᵀ − w vᵀ, with p = B v and w = 2p − 2(vᵀp) v. Only the
    // upper triangle of B is read and written (half the flops); rows stay contiguous.
    w.fill(0, k + 1);
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = vk[i];
      let s = a[row + i] * vi;
      for (let j = i + 1; j < n; j++) {
        const bij = a[row + j];
        s += bij * vk[j];
        w[j] += bij * vi;
      }
      w[i] += s;
    }
    let vp = 0;
    for (let i = k + 1; i < n; i++) vp += vk[i] * w[i];
    for (let i = k + 1; i < n; i++) w[i] = 2 * w[i] - 2 * vp * vk[i];
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = vk[i];
      const wi = w[i];
      for (let j = i; j < n; j++) a[row + j] -= vi * w[j] + wi * vk[j];
    }
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2];
    e[n - 2] = a[(n - 2) * n + n - 1];
  }
  d[n - 1] = a[n * n - 1];
  e[n - 1] = 0;
  return { d, e, v };
}

/**
 * Qᵀ (row-major) from the reflectors. Q = H_0 H_1 … H_{n-3} is accumulated from the right end,
 * so each product touches only the trailing block that is not yet the identity; it is returned
 * transposed so that the QR sweeps rotate contiguous rows.
 */
function formQt(v: Float64Array, n: number): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  const u = new Float64Array(n);
  for (let k = n - 3; k >= 0; k--) {
    const rowK = k * n;
    let any = false;
    for (let i = k + 1; i < n; i++) if (v[rowK + i] !== 0) { any = true; break; }
    if (!any) continue;
    // Q ← H_k Q = Q − 2 v (vᵀ Q), on rows and columns k+1..n-1.
    u.fill(0, k + 1);
    for (let i = k + 1; i < n; i++) {
      const vi = v[rowK + i];
      if (vi === 0) continue;
      const row = i * n;
      for (let j = k + 1; j < n; j++) u[j] += vi * q[row + j];
    }
    for (let i = k + 1; i < n; i++) {
      const vi2 = 2 * v[rowK + i];
      if (vi2 === 0) continue;
      const row = i * n;
      for (let j = k + 1; j < n; j++) q[row + j] -= vi2 * u[j];
    }
  }
  const qt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) qt[j * n + i] = q[i * n + j];
  return qt;
}

/**
 * Diagonalises the tridiagonal (d, e) in place by implicit symmetric QR steps with a Wilkinson
 * shift, chasing the bulge with Givens rotations; each rotation is also applied to rows k, k+1
 * of `zt` so that its rows end as eigenvectors.
 */
function tridiagonalQR(d: Float64Array, e: Float64Array, n: number, zt: Float64Array | null): void {
  const eps = Number.EPSILON;
  let q = n - 1;
  let steps = 0;
  const maxSteps = 60 * n;
  while (q > 0) {
    for (let i = 0; i < q; i++) {
      if (Math.abs(e[i]) <= eps * (Math.abs(d[i]) + Math.abs(d[i + 1]))) e[i] = 0;
    }
    while (q > 0 && e[q - 1] === 0) q--;
    if (q === 0) break;
    let p = q - 1;
    while (p > 0 && e[p - 1] !== 0) p--;
    if (++steps > maxSteps) throw new Error(`symmetric eigendecomposition did not converge after ${maxSteps} QR steps`);

    // Wilkinson shift: the eigenvalue of the trailing 2×2 closer to d[q].
    const half = (d[q - 1] - d[q]) / 2;
    const eq = e[q - 1];
    const mu = d[q] - (eq * eq) / (half + (half >= 0 ? 1 : -1) * Math.hypot(half, eq));
    let x = d[p] - mu;
    let z = e[p];
    for (let k = p; k < q; k++) {
      const r = Math.hypot(x, z);
      const c = r === 0 ? 1 : x / r;
      const s = r === 0 ? 0 : z / r;
      if (k > p) e[k - 1] = r;
      const a = d[k];
      const b = d[k + 1];
      const ek = e[k];
      const cs = c * s;
      d[k] = c * c * a + 2 * cs * ek + s * s * b;
      d[k + 1] = s * s * a - 2 * cs * ek + c * c * b;
      e[k] = cs * (b - a) + (c * c - s * s) * ek;
      if (k + 1 < q) {
        // The rotation pushes a bulge to (k, k+2); the next rotation removes it.
        x = e[k];
        z = s * e[k + 1];
        e[k + 1] = c * e[k + 1];
      }
      if (zt) {
        const r0 = k * n;
        const r1 = r0 + n;
        for (let j = 0; j < n; j++) {
          const u0 = zt[r0 + j];
          const u1 = zt[r1 + j];
          zt[r0 + j] = c * u0 + s * u1;
          zt[r1 + j] = c * u1 - s * u0;
        }
      }
    }
  }
}

/**
 * Eigenvectors of the tridiagonal (d, e) for the given eigenvalues (largest first), by inverse
 * iteration: (T − λI) is factored once per value (Gaussian elimination with partial pivoting,
 * three bands of U), and a few solves turn any start vector into the eigenvector. Vectors of
 * close eigenvalues are orthogonalised against each other (modified Gram–Schmidt), as LAPACK's
 * stein does. Returns `k × n`, row i the unit eigenvector of `lambdas[i]`.
 */
function tridiagonalInverseIteration(d: Float64Array, e: Float64Array, n: number, lambdas: Float64Array): Float64Array {
  const k = lambdas.length;
  let tnorm = 0;
  for (let i = 0; i < n; i++) tnorm = Math.max(tnorm, Math.abs(d[i]) + Math.abs(e[i]) + (i > 0 ? Math.abs(e[i - 1]) : 0));
  const tiny = Math.max(tnorm, Number.MIN_VALUE) * Number.EPSILON;
  const clusterGap = 1e-3 * tnorm;
  const out = new Float64Array(k * n);
  const u0 = new Float64Array(n);
  const u1 = new Float64Array(n);
  const u2 = new Float64Array(n);
  const mult = new Float64Array(n);
  const swapped = new Uint8Array(n);
  const x = new Float64Array(n);
  let clusterStart = 0;
  let prevShift = Infinity;
  for (let t = 0; t < k; t++) {
    if (t > 0 && lambdas[t - 1] - lambdas[t] > clusterGap) clusterStart = t;
    // Equal shifts would give equal vectors: nudge each one below the previous one.
    let shift = lambdas[t];
    if (prevShift - shift < 10 * tiny) shift = prevShift - 10 * tiny;
    prevShift = shift;
    // Factor T − shift·I. Row i of U has entries at columns i, i+1, i+2 (the third from swaps).
    let r0 = d[0] - shift;
    let r1 = e[0];
    let r2 = 0;
    for (let i = 0; i < n - 1; i++) {
      const s0 = e[i];
      const s1 = d[i + 1] - shift;
      const s2 = i + 1 < n - 1 ? e[i + 1] : 0;
      let p0: number, p1: number, p2: number, o1: number, o2: number;
      if (Math.abs(s0) > Math.abs(r0)) {
        swapped[i] = 1;
        p0 = s0; p1 = s1; p2 = s2;
        o1 = r1; o2 = r2;
        mult[i] = r0 / s0;
      } else {
        swapped[i] = 0;
        if (r0 === 0) r0 = tiny;
        p0 = r0; p1 = r1; p2 = r2;
        o1 = s1; o2 = s2;
        mult[i] = s0 / r0;
      }
      u0[i] = p0;
      u1[i] = p1;
      u2[i] = p2;
      r0 = o1 - mult[i] * p1;
      r1 = o2 - mult[i] * p2;
      r2 = 0;
    }
    u0[n - 1] = r0 === 0 ? tiny : r0;
    // A start vector with every component present (deterministic, not orthogonal to anything likely).
    for (let i = 0; i < n; i++) x[i] = 1 + ((i * 0.6180339887498949 + t * 0.3819660112501051) % 1);
    for (let iter = 0; iter < 4; iter++) {
      for (let i = 0; i < n - 1; i++) {
        if (swapped[i]) {
          const tmp = x[i];
          x[i] = x[i + 1];
          x[i + 1] = tmp;
        }
        x[i + 1] -= mult[i] * x[i];
      }
      for (let i = n - 1; i >= 0; i--) {
        let v = x[i];
        if (i + 1 < n) v -= u1[i] * x[i + 1];
        if (i + 2 < n) v -= u2[i] * x[i + 2];
        const piv = Math.abs(u0[i]) < tiny ? (u0[i] < 0 ? -tiny : tiny) : u0[i];
        x[i] = v / piv;
      }
      for (let c = clusterStart; c < t; c++) {
        const prev = out.subarray(c * n, (c + 1) * n);
        const p = dot(x, prev, n);
        for (let i = 0; i < n; i++) x[i] -= p * prev[i];
      }
      let nrm = norm2(x);
      if (!(nrm > 0) || !Number.isFinite(nrm)) {
        // Lost everything to orthogonalisation or overflow: restart from another direction.
        for (let i = 0; i < n; i++) x[i] = ((i * 7 + t * 13) % 11) - 5;
        nrm = norm2(x);
      }
      for (let i = 0; i < n; i++) x[i] /= nrm;
    }
    out.set(x, t * n);
  }
  return out;
}

/** Applies Q = H_0 … H_{n-3} to each row of `s` (`k × n`): row ← Q row. */
function applyQ(v: Float64Array, n: number, s: Float64Array, k: number): void {
  for (let r = 0; r < k; r++) {
    const x = s.subarray(r * n, (r + 1) * n);
    for (let h = n - 3; h >= 0; h--) {
      const off = h * n;
      let p = 0;
      for (let i = h + 1; i < n; i++) p += v[off + i] * x[i];
      if (p === 0) continue;
      p *= 2;
      for (let i = h + 1; i < n; i++) x[i] -= p * v[off + i];
    }
  }
}

/**
 * Eigendecomposition of a symmetric `n × n` matrix (row-major; only read, not changed).
 * Values come sorted largest first; row i of `vectors` is the eigenvector of `values[i]`.
 *
 * `vectors`: `true` (default) for all n vectors, `false` for none, or a count k for the top k
 * only. All eigenvalues come from implicit QR on the tridiagonal form either way; the top-k
 * vectors then come from inverse iteration and the reflectors (O(k·n²) instead of O(n³)), which
 * is what PCA needs: 50 of 512 axes in a fraction of the time.
 */
export function symmetricEigen(matrix: ArrayLike<number>, n: number, options: { vectors?: boolean | number } = {}): SymmetricEigen {
  if (!Number.isInteger(n) || n < 1 || matrix.length < n * n) {
    throw new ConfigError(`Expected a symmetric ${n}×${n} matrix with ${n * n} entries; got ${matrix.length}`);
  }
  const want = options.vectors ?? true;
  const nVectors = want === true ? n : want === false ? 0 : Math.max(0, Math.min(n, Math.floor(want)));
  const a = Float64Array.from(matrix as ArrayLike<number>).subarray(0, n * n);
  // NaN never deflates: fail at once instead of after 60·n fruitless QR steps.
  for (let i = 0; i < n * n; i++) {
    if (!Number.isFinite(a[i])) throw new FormatError(`Expected a finite matrix; entry (${Math.floor(i / n)}, ${i % n}) is ${a[i]}`);
  }
  // Symmetrise (use the mean of both triangles) so tiny asymmetries from float sums cannot bias.
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const m = (a[i * n + j] + a[j * n + i]) / 2;
      a[i * n + j] = m;
      a[j * n + i] = m;
    }
  }
  // Rotating all n vectors costs ~7n³ flops; inverse iteration ~2kn². Above n/4 vectors the
  // rotations' better orthogonality within clusters is worth their price.
  const full = nVectors > n / 4;
  const { d, e, v } = tridiagonalize(a, n, nVectors > 0);
  const sortDesc = (dd: Float64Array): number[] => Array.from({ length: n }, (_, i) => i).sort((i, j) => dd[j] - dd[i]);
  if (full) {
    const qt = formQt(v!, n);
    tridiagonalQR(d, e, n, qt);
    const order = sortDesc(d);
    const vectors = new Float64Array(nVectors * n);
    for (let dst = 0; dst < nVectors; dst++) vectors.set(qt.subarray(order[dst] * n, order[dst] * n + n), dst * n);
    return { values: Float64Array.from(order, (i) => d[i]), vectors };
  }
  // Inverse iteration needs the tridiagonal itself, so the QR sweeps run on copies.
  const dd = d.slice();
  tridiagonalQR(dd, e.slice(), n, null);
  const values = Float64Array.from(sortDesc(dd), (i) => dd[i]);
  if (nVectors === 0) return { values, vectors: null };
  const vectors = tridiagonalInverseIteration(d, e, n, values.subarray(0, nVectors));
  applyQ(v!, n, vectors, nVectors);
  return { values, vectors };
}

/** Which kernel forms the per-block scatter matrix Xᵀ X. */
export type CovarianceKernel = 'auto' | 'tf' | 'js';

export interface CovarianceResult {
  nRows: number;
  dim: number;
  mean: Float64Array;
  /** Sample covariance (divided by n − 1), full symmetric `dim × dim`. */
  covariance: Float64Array;
}

/**
 * Streams the mean and covariance of rows. Rows are buffered into chunks; each chunk is centred
 * on its own mean (in float64), its scatter matrix is formed, and chunks are merged with Chan et
 * al.'s pairwise update, so neither a large mean nor many rows costs precision.
 *
 * The scatter of a chunk is the hot loop (n·D² multiply-adds). The `tf` kernel hands it to the
 * active TensorFlow.js backend as `transpose(X) · X` with an explicit transpose (a transposed
 * matMul flag is many times slower on wasm); the `js` kernel computes the upper triangle with
 * 2×2-blocked dot products over a column-major copy. `auto` picks `tf` unless the active backend
 * is the pure-JS `cpu` one, where the JS loop is faster.
 */
export class CovarianceAccumulator {
  readonly dim: number;
  private kernel: CovarianceKernel;
  private readonly chunkRows: number;
  private buf: Float32Array;
  private bufRows = 0;
  private n = 0;
  private readonly mean: Float64Array;
  /** Sum of outer products of centred rows (upper triangle maintained, mirrored at the end). */
  private readonly m2: Float64Array;
  private readonly chunkMean: Float64Array;

  constructor(dim: number, options: { kernel?: CovarianceKernel; chunkRows?: number } = {}) {
    if (!Number.isInteger(dim) || dim < 1) throw new ConfigError(`Expected \`dim\` to be a positive integer; got \`${dim}\``);
    const kernel = options.kernel ?? 'auto';
    if (!['auto', 'tf', 'js'].includes(kernel)) {
      throw new ConfigError(`Expected \`covariance_kernel\` to be one of auto, tf, js; got \`${String(kernel)}\``);
    }
    this.dim = dim;
    this.kernel = kernel;
    // Chunks large enough to amortise per-op overhead and the D² merge, small enough to stay ~8 MB.
    this.chunkRows = options.chunkRows ?? Math.max(256, Math.min(4096, Math.floor((2 << 20) / dim)));
    this.buf = new Float32Array(this.chunkRows * dim);
    this.mean = new Float64Array(dim);
    this.m2 = new Float64Array(dim * dim);
    this.chunkMean = new Float64Array(dim);
  }

  /** Adds `nRows` rows (row-major, `nRows × dim`). */
  async add(rows: Float32Array, nRows: number): Promise<void> {
    const D = this.dim;
    if (rows.length < nRows * D) throw new FormatError(`A row block claims ${nRows} rows of ${D} but holds ${rows.length} values`);
    let r = 0;
    while (r < nRows) {
      const take = Math.min(nRows - r, this.chunkRows - this.bufRows);
      this.buf.set(rows.subarray(r * D, (r + take) * D), this.bufRows * D);
      this.bufRows += take;
      r += take;
      if (this.bufRows === this.chunkRows) await this.flush();
    }
  }

  /** Rows seen so far. */
  get count(): number {
    return this.n + this.bufRows;
  }

  private async flush(): Promise<void> {
    const nb = this.bufRows;
    if (nb === 0) return;
    const D = this.dim;
    const x = this.buf.subarray(0, nb * D);
    const cm = this.chunkMean;
    cm.fill(0);
    for (let r = 0; r < nb; r++) {
      const off = r * D;
      for (let j = 0; j < D; j++) cm[j] += x[off + j];
    }
    for (let j = 0; j < D; j++) cm[j] /= nb;

    // Chan merge: M2 += δδᵀ·nA·nB/n with δ = meanB − meanA (before the chunk's own scatter is added).
    const nA = this.n;
    const nTot = nA + nb;
    if (nA > 0) {
      const f = (nA * nb) / nTot;
      const delta = new Float64Array(D);
      for (let j = 0; j < D; j++) delta[j] = cm[j] - this.mean[j];
      for (let i = 0; i < D; i++) {
        const fi = f * delta[i];
        const row = i * D;
        for (let j = i; j < D; j++) this.m2[row + j] += fi * delta[j];
      }
      for (let j = 0; j < D; j++) this.mean[j] += (delta[j] * nb) / nTot;
    } else {
      this.mean.set(cm);
    }
    this.n = nTot;

    if (this.kernel !== 'js' && !tf.engine().backendName) await initBackend();
    if (this.kernel === 'auto') this.kernel = tf.getBackend() === 'cpu' ? 'js' : 'tf';
    if (this.kernel === 'tf') await this.scatterTf(x, nb);
    else this.scatterJs(x, nb);
    this.bufRows = 0;
  }

  private async scatterTf(x: Float32Array, nb: number): Promise<void> {
    const D = this.dim;
    const cm = this.chunkMean;
    // Centre in place: the buffer is ours and refilled after the flush.
    for (let r = 0; r < nb; r++) {
      const off = r * D;
      for (let j = 0; j < D; j++) x[off + j] -= cm[j];
    }
    // One full matmul beats computing only the upper triangle in bands here: narrow matMuls and
    // column slices run far below wasm's peak (measured: 4 bands were 25% slower than 1 product).
    const xr = tf.tensor2d(x, [nb, D]);
    const xt = tf.transpose(xr);
    const s = tf.matMul(xt, xr);
    const data = (await s.data()) as Float32Array;
    tf.dispose([xr, xt, s]);
    const m2 = this.m2;
    for (let i = 0; i < D; i++) {
      const row = i * D;
      for (let j = i; j < D; j++) m2[row + j] += data[row + j];
    }
  }

  private scatterJs(x: Float32Array, nb: number): void {
    const D = this.dim;
    const cm = this.chunkMean;
    // Column-major float64 copy of the centred chunk: each dot product then reads contiguous memory.
    const cols = new Float64Array(D * nb);
    for (let r = 0; r < nb; r++) {
      const off = r * D;
      for (let j = 0; j < D; j++) cols[j * nb + r] = x[off + j] - cm[j];
    }
    const m2 = this.m2;
    for (let i = 0; i < D; i += 2) {
      const i1 = Math.min(i + 1, D - 1);
      const a0 = i * nb;
      const a1 = i1 * nb;
      for (let j = i; j < D; j += 2) {
        const j1 = Math.min(j + 1, D - 1);
        const b0 = j * nb;
        const b1 = j1 * nb;
        let s00 = 0;
        let s01 = 0;
        let s10 = 0;
        let s11 = 0;
        for (let r = 0; r < nb; r++) {
          const u0 = cols[a0 + r];
          const u1 = cols[a1 + r];
          const w0 = cols[b0 + r];
          const w1 = cols[b1 + r];
          s00 += u0 * w0;
          s01 += u0 * w1;
          s10 += u1 * w0;
          s11 += u1 * w1;
        }
        m2[i * D + j] += s00;
        if (j1 !== j) m2[i * D + j1] += s01;
        if (i1 !== i) {
          if (j >= i1) m2[i1 * D + j] += s10;
          if (j1 !== j) m2[i1 * D + j1] += s11;
        }
      }
    }
  }

  /** Flushes what is buffered and returns mean and covariance. Needs at least 2 rows for a covariance. */
  async finish(): Promise<CovarianceResult> {
    await this.flush();
    const D = this.dim;
    const cov = new Float64Array(D * D);
    const denom = Math.max(1, this.n - 1);
    for (let i = 0; i < D; i++) {
      for (let j = i; j < D; j++) {
        const v = this.m2[i * D + j] / denom;
        cov[i * D + j] = v;
        cov[j * D + i] = v;
      }
    }
    return { nRows: this.n, dim: D, mean: Float64Array.from(this.mean), covariance: cov };
  }
}
