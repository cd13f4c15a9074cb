/**
 * Options of the SAE analysis: one documented type, one defaults rule, one resolve function
 * that accepts camelCase and the guide's snake_case and rejects bad values up front.
 */
import { defineOptions, int, num, oneOf, optionError, str, type DeriveContext, type OptionInput, type OptionValues } from '../options.js';
import { availableParallelism } from 'node:os';
import type { SaeArchitectureName } from './sae-common.js';


// 128 Mi weights per matrix: the trainer holds about six such matrices in wasm memory (4 GiB at most).
const maxLatentsFor = (dim: number) => Math.max(1, Math.floor(2 ** 25 / dim));
const dimOf = (ctx: DeriveContext) => ctx.dim ?? 1;
// Below this many weights per matrix a step takes about a millisecond, and waking threads at
// each phase costs more than the second core gives (toy size: 51k rows/s on 1 thread, 39k on 2).
const THREADED_WEIGHTS = 2 ** 17;
const defaultWorkers = (dim: number, nLatents: number) => (dim * nLatents >= THREADED_WEIGHTS ? availableParallelism() : 1);

export const saeOptions = defineOptions(
  'SAE option',
  {
    architecture: oneOf(['topk', 'relu'] as const satisfies readonly SaeArchitectureName[], { default: 'topk', doc: '`topk` (Gao et al. 2024) or `relu` (ReLU + L1).' }),
    nLatents: int({ min: 1, default: (c) => 4 * dimOf(c), defaultDoc: '4 × D', doc: 'Number of latents (dictionary size).' }),
    k: int({ min: 1, default: (c) => Math.min(32, Math.max(1, Math.floor((c.values.nLatents as number) / 4))), defaultDoc: 'min(32, max(1, floor(n_latents / 4)))', doc: 'Active latents per row (TopK only).' }),
    l1Coefficient: num({ min: 0, max: 1e6, default: 1, doc: 'Weight of Σ z_i‖W_dec,i‖ in the ReLU loss, per row, next to ‖x − x̂‖² on rows normalised as `normalize` says.' }),
    epochs: int({ min: 1, max: 100000, default: 10, doc: 'Passes over the data.' }),
    batchSize: int({ min: 1, max: 65536, default: 256, doc: 'Rows per optimisation step.' }),
    lr: num({ min: 0, max: 1, minExclusive: true, default: 1e-3, doc: 'Adam learning rate.' }),
    seed: int({ min: 0, max: Number.MAX_SAFE_INTEGER, default: 0, doc: 'Seed of the initialisation and the shuffling; the same seed gives the same result.' }),
    auxK: int({ min: 0, default: (c) => Math.min(c.values.nLatents as number, Math.max(1, Math.floor(dimOf(c) / 2))), defaultDoc: 'min(n_latents, max(1, floor(D / 2)))', doc: 'Dead latents AuxK may use per row (TopK only); 0 turns AuxK off.' }),
    auxCoefficient: num({ min: 0, max: 1e6, default: 1 / 32, defaultDoc: '1/32', doc: 'Weight of the AuxK loss.' }),
    deadStepsThreshold: int({ min: 1, max: Number.MAX_SAFE_INTEGER, default: 500, doc: 'A latent that has not fired for this many steps counts as dead for AuxK.' }),
    normalize: oneOf(['none', 'center', 'scale'] as const, { default: 'scale', doc: 'How rows are fed to the SAE: `scale` subtracts the mean and scales to unit variance per element on average; `center` only subtracts the mean; `none` feeds raw rows (b_dec then starts at the mean). Saved weights always act on raw rows.' }),
    shuffleBufferRows: int({ min: 1, max: 2 ** 26, default: (c) => Math.max(c.values.batchSize as number, Math.min(65536, Math.floor((64 * 2 ** 20) / (4 * dimOf(c))))), defaultDoc: 'min(65536, 64 MiB / (4·D)), at least batch_size', doc: 'Rows held for shuffling; memory is this × D × 4 bytes.' }),
    nTopLatents: int({ min: 0, default: (c) => Math.min(10, c.values.nLatents as number), defaultDoc: 'min(10, n_latents)', doc: 'How many of the most used latents get their top-activating rows.' }),
    topRowsPerLatent: int({ min: 1, max: 1000, default: 5, doc: 'Top-activating rows kept per latent.' }),
    workers: int({ min: 1, max: 256, sameResult: true, default: (c) => defaultWorkers(dimOf(c), c.values.nLatents as number), defaultDoc: 'os.availableParallelism() when D × n_latents ≥ 131072, else 1', doc: 'Worker threads that train and encode a TopK SAE, each on a slice of the latents; 1 runs in the calling thread. The same seed gives the same SAE for any count, up to float rounding (see docs/sae-performance.md). ReLU SAEs use one thread.' }),
    layer: str({ default: 'layer', doc: "Layer name used in result keys (`${layer}/loss`); the context's layer wins." }),
  },
  (o, ctx) => {
    const dim = ctx.dim ?? 1;
    if (o.nLatents > maxLatentsFor(dim)) throw optionError('SAE option', 'nLatents', `an integer from 1 to ${maxLatentsFor(dim)} for ${dim}-dimensional rows`, o.nLatents);
    for (const key of ['k', 'auxK', 'nTopLatents'] as const) {
      if (o[key] > o.nLatents) throw optionError('SAE option', key, `an integer <= n_latents (${o.nLatents})`, o[key]);
    }
  },
);

export type SaeOptions = OptionInput<typeof saeOptions.fields>;
export type ResolvedSaeOptions = OptionValues<typeof saeOptions.fields>;
export type SaeNormalize = ResolvedSaeOptions['normalize'];

/** Merges defaults for rows of `dim` values, validates, and returns every option. */
export function resolveSaeOptions(input: Record<string, unknown> | SaeOptions = {}, dim: number): ResolvedSaeOptions {
  return saeOptions.resolve(input, { dim });
}
