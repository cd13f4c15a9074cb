/**
 * Options of the SAE analysis: one documented type, one defaults rule, one resolve function
 * that accepts camelCase and the guide's snake_case and rejects bad values up front.
 */
import { ConfigError } from '../errors.js';
import type { SaeArchitectureName } from './sae-common.js';
import { SAE_ARCHITECTURES, isSaeArchitectureName } from './sae-registry.js';

export type SaeNormalize = 'none' | 'center' | 'scale';

export interface SaeOptions {
  /** `topk` (Gao et al. 2024) or `relu` (ReLU + L1). @default 'topk' */
  readonly architecture?: SaeArchitectureName;
  /** Number of latents (dictionary size). @default 4 × D */
  readonly nLatents?: number;
  /** Active latents per row (TopK only). @default min(32, max(1, floor(nLatents / 4))) */
  readonly k?: number;
  /** Weight of Σ z_i‖W_dec,i‖ in the ReLU loss, per row, next to ‖x − x̂‖² on rows normalised as `normalize` says. @default 1 */
  readonly l1Coefficient?: number;
  /** Passes over the data. @default 10 */
  readonly epochs?: number;
  /** Rows per optimisation step. @default 256 */
  readonly batchSize?: number;
  /** Adam learning rate. @default 0.001 */
  readonly lr?: number;
  /** Seed of the initialisation and the shuffling; the same seed gives the same result. @default 0 */
  readonly seed?: number;
  /** Dead latents AuxK may use per row (TopK only); 0 turns AuxK off. @default min(nLatents, max(1, floor(D / 2))) */
  readonly auxK?: number;
  /** Weight of the AuxK loss. @default 1/32 */
  readonly auxCoefficient?: number;
  /** A latent that has not fired for this many steps counts as dead for AuxK. @default 500 */
  readonly deadStepsThreshold?: number;
  /**
   * How rows are fed to the SAE: `scale` subtracts the mean and scales to unit variance per
   * element on average; `center` only subtracts the mean; `none` feeds raw rows (b_dec then
   * starts at the mean). Saved weights always act on raw rows. @default 'scale'
   */
  readonly normalize?: SaeNormalize;
  /** Rows held for shuffling; memory is this × D × 4 bytes. @default min(65536, 64 MiB / (4·D)), at least batchSize */
  readonly shuffleBufferRows?: number;
  /** How many of the most used latents get their top-activating rows. @default 10 */
  readonly nTopLatents?: number;
  /** Top-activating rows kept per latent. @default 5 */
  readonly topRowsPerLatent?: number;
  /** Layer name used in result keys (`${layer}/loss`); the context's layer wins. @default 'layer' */
  readonly layer?: string;
}

export type ResolvedSaeOptions = Required<SaeOptions>;

const SNAKE: Readonly<Record<string, keyof SaeOptions>> = {
  n_latents: 'nLatents',
  l1_coefficient: 'l1Coefficient',
  batch_size: 'batchSize',
  aux_k: 'auxK',
  aux_coefficient: 'auxCoefficient',
  dead_steps_threshold: 'deadStepsThreshold',
  shuffle_buffer_rows: 'shuffleBufferRows',
  n_top_latents: 'nTopLatents',
  top_rows_per_latent: 'topRowsPerLatent',
};
const KEYS: ReadonlySet<string> = new Set<string>([
  'architecture', 'nLatents', 'k', 'l1Coefficient', 'epochs', 'batchSize', 'lr', 'seed', 'auxK',
  'auxCoefficient', 'deadStepsThreshold', 'normalize', 'shuffleBufferRows', 'nTopLatents', 'topRowsPerLatent', 'layer',
]);

function int(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(`Expected \`${name}\` to be an integer from ${min} to ${max}; got \`${String(v)}\``);
  }
  return v;
}

function real(name: string, v: unknown, min: number, max: number, minExclusive = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v > max || v < min || (minExclusive && v === min)) {
    throw new ConfigError(`Expected \`${name}\` to be a number ${minExclusive ? '>' : '≥'} ${min} and ≤ ${max}; got \`${String(v)}\``);
  }
  return v;
}

/** Merges defaults for rows of `dim` values, validates, and returns every option. */
export function resolveSaeOptions(input: Record<string, unknown> | SaeOptions = {}, dim: number): ResolvedSaeOptions {
  const o: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue;
    const name = SNAKE[key] ?? key;
    if (!KEYS.has(name)) {
      throw new ConfigError(`Unknown SAE option \`${key}\`; known options: ${[...KEYS].join(', ')} (snake_case accepted)`);
    }
    if (Object.hasOwn(o, name) && o[name] !== value) {
      throw new ConfigError(`SAE option \`${name}\` is given twice with different values (\`${String(o[name])}\`, \`${String(value)}\`)`);
    }
    o[name] = value;
  }
  const architecture = o.architecture ?? 'topk';
  if (!isSaeArchitectureName(architecture)) {
    throw new ConfigError(`Expected \`architecture\` to be one of ${Object.keys(SAE_ARCHITECTURES).join(', ')}; got \`${String(architecture)}\``);
  }
  // 128 Mi weights per matrix: the trainer holds about six such matrices in wasm memory (4 GiB at most).
  const maxLatents = Math.max(1, Math.floor(2 ** 25 / dim));
  const nLatents = int('n_latents', o.nLatents ?? 4 * dim, 1, maxLatents);
  const k = int('k', o.k ?? Math.min(32, Math.max(1, Math.floor(nLatents / 4))), 1, nLatents);
  const batchSize = int('batch_size', o.batchSize ?? 256, 1, 65536);
  const normalize = o.normalize ?? 'scale';
  if (normalize !== 'none' && normalize !== 'center' && normalize !== 'scale') {
    throw new ConfigError(`Expected \`normalize\` to be one of none, center, scale; got \`${String(normalize)}\``);
  }
  const layer = o.layer ?? 'layer';
  if (typeof layer !== 'string' || layer.length === 0) throw new ConfigError(`Expected \`layer\` to be a non-empty string; got \`${String(layer)}\``);
  const defaultBuffer = Math.max(batchSize, Math.min(65536, Math.floor((64 * 2 ** 20) / (4 * dim))));
  return {
    architecture,
    nLatents,
    k,
    l1Coefficient: real('l1_coefficient', o.l1Coefficient ?? 1, 0, 1e6),
    epochs: int('epochs', o.epochs ?? 10, 1, 100000),
    batchSize,
    lr: real('lr', o.lr ?? 1e-3, 0, 1, true),
    seed: int('seed', o.seed ?? 0, 0, Number.MAX_SAFE_INTEGER),
    auxK: int('aux_k', o.auxK ?? Math.min(nLatents, Math.max(1, Math.floor(dim / 2))), 0, nLatents),
    auxCoefficient: real('aux_coefficient', o.auxCoefficient ?? 1 / 32, 0, 1e6),
    deadStepsThreshold: int('dead_steps_threshold', o.deadStepsThreshold ?? 500, 1, Number.MAX_SAFE_INTEGER),
    normalize,
    shuffleBufferRows: int('shuffle_buffer_rows', o.shuffleBufferRows ?? defaultBuffer, 1, 2 ** 26),
    nTopLatents: int('n_top_latents', o.nTopLatents ?? Math.min(10, nLatents), 0, nLatents),
    topRowsPerLatent: int('top_rows_per_latent', o.topRowsPerLatent ?? 5, 1, 1000),
    layer,
  };
}
