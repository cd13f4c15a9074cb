/**
 * The input context of a card's top example: the window of the model input around the example's
 * position (for a sequence model, the time bins around it: for the demo a spike-raster snippet),
 * and the per-position covariates over the same window (for the demo the behaviour trace), so an
 * example can be looked at rather than only located.
 */
import { round } from '../model/model-runs.js';
import type { AlignedCovariate } from './cards-stats.js';

export interface InputWindow {
  /** The model input the window is cut from (its name; the first input of a multi-input model). */
  name: string;
  /** First position of the window (the first row of `values`). */
  start: number;
  /** `values[t][c]`: input channel `c` at position `start + t`; a flat input is one row. */
  values: (number | null)[][];
}

/** Values per window kept at most (a window wider than this keeps its first channels). */
const MAX_WINDOW_VALUES = 4096;

/** Reads each sample's input once, to cut windows from. */
export class InputContext {
  private readonly perSample: number;
  /** Rows of an input sample: its second dimension for inputs of rank 3 and more, else 1. */
  private readonly T: number;
  private readonly C: number;
  /** The input's rows line up with the layer's positions (a window is cut around the position). */
  private readonly aligned: boolean;

  /**
   * `shape` is the input's [N, ...]. A sequence input [N, T, C...] whose T equals the layer's
   * positions gives the window around the position; with other positions (a layer that pooled
   * over T) the whole sample, row by row.
   */
  constructor(readonly name: string, private readonly data: ArrayLike<number>, shape: readonly number[], positions: number, private readonly halfWidth: number) {
    this.perSample = shape.slice(1).reduce((a, b) => a * b, 1);
    this.T = shape.length >= 3 ? shape[1]! : 1;
    this.C = this.perSample / this.T;
    this.aligned = this.T === positions && positions > 1;
  }

  window(sample: number, position: number): InputWindow {
    const start = this.aligned ? Math.max(0, position - this.halfWidth) : 0;
    const end = this.aligned ? Math.min(this.T, position + this.halfWidth + 1) : this.T;
    const channels = Math.min(this.C, Math.max(1, Math.floor(MAX_WINDOW_VALUES / (end - start))));
    const base = sample * this.perSample;
    const values: (number | null)[][] = [];
    for (let t = start; t < end; t++) {
      const row: (number | null)[] = new Array(channels);
      for (let c = 0; c < channels; c++) row[c] = round(this.data[base + t * this.C + c]!);
      values.push(row);
    }
    return { name: this.name, start, values };
  }

  /** The per-position covariates of `sample` over the positions of window `w`. */
  traces(covs: readonly AlignedCovariate[], sample: number, w: InputWindow): Record<string, (number | null)[]> | undefined {
    if (!this.aligned) return undefined;
    const out: Record<string, (number | null)[]> = {};
    for (const c of covs) {
      if (c.alignment !== 'per_position') continue;
      out[c.name] = w.values.map((_, i) => round(c.at(sample, w.start + i)));
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }
}
