/**
 * Synthetic superposition data with known features, for checking sparse autoencoders: each row
 * is the sum of `active` of `features` random unit-norm directions (more directions than
 * dimensions), with magnitudes in [0.5, 1.5), plus an optional common offset.
 */
import { createRng } from '../random.js';

export interface SuperpositionOptions {
  rows: number;
  dim: number;
  features: number;
  active: number;
  /** Added to every value, as real activations have a mean offset. @default 0 */
  offset?: number;
  seed?: number;
}

export function plantedSuperposition(o: SuperpositionOptions): { features: Float32Array; rows: Float32Array } {
  const rng = createRng(o.seed ?? 0);
  const { dim } = o;
  const features = new Float32Array(o.features * dim);
  for (let f = 0; f < o.features; f++) {
    let n = 0;
    for (let j = 0; j < dim; j++) n += (features[f * dim + j] = rng.normal()) ** 2;
    for (let j = 0; j < dim; j++) features[f * dim + j]! /= Math.sqrt(n);
  }
  const rows = new Float32Array(o.rows * dim).fill(o.offset ?? 0);
  for (let r = 0; r < o.rows; r++) {
    const used = new Set<number>();
    while (used.size < o.active) used.add(rng.int(o.features));
    for (const f of used) {
      const m = 0.5 + rng.uniform();
      for (let j = 0; j < dim; j++) rows[r * dim + j]! += m * features[f * dim + j]!;
    }
  }
  return { features, rows };
}
