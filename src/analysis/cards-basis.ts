/**
 * What a card describes, as a basis of the layer: SAE latents (activation = the latent's code,
 * direction = its decoder row, neighbours by decoder cosine) or the layer's own units
 * (activation = the unit, direction = the unit's axis, neighbours by activation correlation).
 * The rest of a card (statistics, examples, output effects) is the same for both.
 */
import { round } from '../model/model-runs.js';
import { pearson } from './cards-stats.js';
import { encodeSae, type SaeWeights } from './sae-weights.js';

export interface CardBasis {
  kind: 'sae' | 'units';
  /** Latents (or units). */
  size: number;
  /** Activations, rows × size. */
  z: Float32Array;
  /** The direction in the layer's space that the latent's activation multiplies. */
  direction(l: number): Float32Array;
  /** The 3 nearest latents (or units). */
  neighbours(l: number): { index: number; cosine: number | null }[];
}

const NEIGHBOURS = 3;

function nearest(size: number, l: number, score: (m: number) => number): { index: number; cosine: number | null }[] {
  return Array.from({ length: size }, (_, m) => m)
    .filter((m) => m !== l)
    .map((m) => ({ index: m, cosine: score(m) }))
    .sort((a, b) => (b.cosine || -2) - (a.cosine || -2) || a.index - b.index)
    .slice(0, NEIGHBOURS)
    .map((x) => ({ index: x.index, cosine: round(x.cosine) }));
}

export async function saeBasis(sae: SaeWeights, act: Float32Array, rows: number): Promise<CardBasis> {
  const D = sae.dim;
  const L = sae.nLatents;
  const norms = Float64Array.from({ length: L }, (_, l) => {
    let s = 0;
    for (let j = 0; j < D; j++) s += sae.W_dec[l * D + j]! ** 2;
    return Math.sqrt(s);
  });
  return {
    kind: 'sae',
    size: L,
    z: await encodeSae(sae, act, rows),
    direction: (l) => sae.W_dec.slice(l * D, (l + 1) * D),
    neighbours: (l) =>
      nearest(L, l, (m) => {
        let dot = 0;
        for (let j = 0; j < D; j++) dot += sae.W_dec[l * D + j]! * sae.W_dec[m * D + j]!;
        return norms[l]! > 0 && norms[m]! > 0 ? dot / (norms[l]! * norms[m]!) : NaN;
      }),
  };
}

export function unitBasis(act: Float32Array, rows: number, D: number): CardBasis {
  const column = (u: number) => {
    const out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) out[r] = act[r * D + u]!;
    return out;
  };
  return {
    kind: 'units',
    size: D,
    z: act,
    direction: (l) => {
      const e = new Float32Array(D);
      e[l] = 1;
      return e;
    },
    neighbours: (l) => {
      const x = column(l);
      return nearest(D, l, (m) => pearson(x, column(m)));
    },
  };
}
