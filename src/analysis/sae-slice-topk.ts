/**
 * Top-k selection split by latent slices: each slice picks its own k best latents per row, then
 * the per-slice lists are merged. Ties go to the lower global latent index in both steps, so the
 * merged selection is the one a single slice over all latents would pick, whatever the split.
 */

/**
 * The `k` largest raw entries of each row of `pre` (`nRows × Ls`, latents `s0 … s0+Ls−1`), sorted
 * descending, written as raw values and global indices at `outV/outI[r·k + j]`. Slots beyond the
 * slice's candidates hold −∞ and index −1. With `allowed` (global flags), only flagged latents compete.
 */
export function sliceTopK(
  pre: Float32Array, nRows: number, Ls: number, s0: number, k: number,
  outV: Float32Array, outI: Int32Array, allowed?: Uint8Array,
): void {
  const topV = new Float32Array(k);
  const topI = new Int32Array(k);
  for (let r = 0; r < nRows; r++) {
    const base = r * Ls;
    let filled = 0;
    let floor = -Infinity;
    for (let i = 0; i < Ls; i++) {
      if (allowed !== undefined && allowed[s0 + i] === 0) continue;
      const v = pre[base + i]!;
      if (filled === k && !(v > floor)) continue;
      // Insertion into a short sorted list; a later equal value never passes an earlier one.
      let j = filled < k ? filled++ : k - 1;
      while (j > 0 && topV[j - 1]! < v) {
        topV[j] = topV[j - 1]!;
        topI[j] = topI[j - 1]!;
        j--;
      }
      topV[j] = v;
      topI[j] = s0 + i;
      if (filled === k) floor = topV[k - 1]!;
    }
    const out = r * k;
    for (let j = 0; j < k; j++) {
      outV[out + j] = j < filled ? topV[j]! : -Infinity;
      outI[out + j] = j < filled ? topI[j]! : -1;
    }
  }
}

/**
 * Merges `W` per-slice lists (slice `w` at `srcV/srcI[w·stride + r·k + j]`, each sorted) into the
 * `k` best per row: ReLU'd values and indices at `outV/outI[r·k + j]`. Rows with fewer than k
 * candidates are padded with value 0 and index −1. Returns the number of positive values.
 */
export function mergeTopK(
  W: number, nRows: number, k: number, stride: number, srcV: Float32Array, srcI: Int32Array,
  outV: Float32Array, outI: Int32Array,
): number {
  const at = new Int32Array(W);
  let active = 0;
  for (let r = 0; r < nRows; r++) {
    at.fill(0);
    const base = r * k;
    for (let j = 0; j < k; j++) {
      let best = -1;
      let bestV = -Infinity;
      let bestI = -1;
      for (let w = 0; w < W; w++) {
        if (at[w]! >= k) continue;
        const o = w * stride + base + at[w]!;
        const i = srcI[o]!;
        if (i < 0) continue;
        const v = srcV[o]!;
        if (best < 0 || v > bestV || (v === bestV && i < bestI)) {
          best = w;
          bestV = v;
          bestI = i;
        }
      }
      if (best < 0) {
        outV[base + j] = 0;
        outI[base + j] = -1;
        continue;
      }
      at[best]!++;
      const v = bestV > 0 ? bestV : 0;
      outV[base + j] = v;
      outI[base + j] = bestI;
      if (v > 0) active++;
    }
  }
  return active;
}

/**
 * `sliceTopK` on latent-major pre-activations: `preT` is `Ls × nRows` (row i = latent s0 + i over
 * the rows), the layout of the faster W_enc · xᵀ product. Same output and tie rule: latents are
 * scanned in increasing order and a later equal value never passes an earlier one. Rows
 * `rowOffset …` of `outV/outI` are written.
 */
export function sliceTopKT(
  preT: Float32Array, nRows: number, Ls: number, s0: number, k: number,
  outV: Float32Array, outI: Int32Array, rowOffset: number, allowed?: Uint8Array,
): void {
  const filled = new Int32Array(nRows);
  const floor = new Float32Array(nRows).fill(-Infinity);
  for (let i = 0; i < Ls; i++) {
    if (allowed !== undefined && allowed[s0 + i] === 0) continue;
    const base = i * nRows;
    const idx = s0 + i;
    for (let r = 0; r < nRows; r++) {
      const v = preT[base + r]!;
      const f = filled[r]!;
      if (f === k && !(v > floor[r]!)) continue;
      const o = (rowOffset + r) * k;
      let j = f < k ? f : k - 1;
      if (f < k) filled[r] = f + 1;
      while (j > 0 && outV[o + j - 1]! < v) {
        outV[o + j] = outV[o + j - 1]!;
        outI[o + j] = outI[o + j - 1]!;
        j--;
      }
      outV[o + j] = v;
      outI[o + j] = idx;
      if (filled[r] === k) floor[r] = outV[o + k - 1]!;
    }
  }
  for (let r = 0; r < nRows; r++) {
    const o = (rowOffset + r) * k;
    for (let j = filled[r]!; j < k; j++) {
      outV[o + j] = -Infinity;
      outI[o + j] = -1;
    }
  }
}
