/** How well an SAE's dictionary recovers known features (Sharkey et al.'s ground-truth metric). */

/**
 * Mean over the planted features of the best cosine similarity with any decoder row
 * (MMCS): 1 when every feature has an exact dictionary element. `features` is nF × dim,
 * `W_dec` is L × dim (rows are latent directions), both row-major.
 */
export function meanMaxCosineSimilarity(features: Float32Array, W_dec: Float32Array, dim: number): number {
  const nF = features.length / dim;
  const L = W_dec.length / dim;
  const norms = new Float64Array(L);
  for (let i = 0; i < L; i++) {
    let nn = 0;
    for (let j = 0; j < dim; j++) nn += W_dec[i * dim + j]! ** 2;
    norms[i] = Math.sqrt(nn) || 1;
  }
  let total = 0;
  for (let f = 0; f < nF; f++) {
    let fn = 0;
    for (let j = 0; j < dim; j++) fn += features[f * dim + j]! ** 2;
    fn = Math.sqrt(fn) || 1;
    let best = -1;
    for (let i = 0; i < L; i++) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += features[f * dim + j]! * W_dec[i * dim + j]!;
      best = Math.max(best, dot / (norms[i]! * fn));
    }
    total += best;
  }
  return total / nF;
}
