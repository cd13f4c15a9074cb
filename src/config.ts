/**
 * MechIntConfig: every option of the guide's "Complete Configuration Options", with the guide's
 * defaults, camelCase in TypeScript; the guide's snake_case keys are accepted too, so a config
 * pasted from Python works. Validation names the option, the value and what is allowed.
 */
import { analysisNames, requireAnalysis } from './analysis/registry.js';
import { ConfigError } from './errors.js';
import { closest } from './suggest.js';

export const ANALYSIS_NAMES = ['sae', 'neuron', 'feature', 'circuit', 'causal', 'probe', 'steering', 'dynamics'] as const;
export type AnalysisName = (typeof ANALYSIS_NAMES)[number];
export const STORAGE_BACKENDS = ['local', 's3', 'both'] as const;
export type StorageBackend = (typeof STORAGE_BACKENDS)[number];
export const SHARD_FORMATS = ['safetensors', 'pt'] as const;
export type ShardFormat = (typeof SHARD_FORMATS)[number];
export const MISSING_LAYERS = ['error', 'warn'] as const;
export type MissingLayers = (typeof MISSING_LAYERS)[number];

/** Options as a user writes them: every field optional. */
export interface MechIntOptions {
  /**
   * Dotted paths of the layers to capture; `null` auto-detects (Mamba/SSM blocks, perceiver, popt).
   * @default ['mamba_backbone.blocks.3', 'popt']
   */
  sampleLayers?: string[] | null;
  /** Save activations every N global training steps. @default 200 */
  saveHiddenEveryNSteps?: number;
  /** Analyses the evaluation runner runs: built-in ones, or names given to registerAnalysis. @default ['sae', 'neuron', 'feature'] */
  analysesToRun?: (AnalysisName | (string & {}))[];
  /** Where shards go: 'local', 's3' or 'both'. @default 'local' */
  storageBackend?: StorageBackend;
  /** Local shard directory (the temporary cache with 's3'). @default './mechint_cache' */
  storagePath?: string;
  /** S3 bucket name (required with 's3' and 'both'). @default null */
  s3Bucket?: string | null;
  /** S3 key prefix. @default 'neurofmx/activations' */
  s3Prefix?: string;
  /** Endpoint of an S3-compatible store (MinIO, R2, Ceph); null for AWS. @default null */
  s3Endpoint?: string | null;
  /** Path-style S3 URLs (most S3-compatible stores need it). @default false */
  s3ForcePathStyle?: boolean;
  /** Shard uploads running at once in the background. @default 4 */
  s3UploadConcurrency?: number;
  /** Longest wait for one S3 request before it fails and is retried (a hung endpoint never hangs training). @default 30000 */
  s3RequestTimeoutMs?: number;
  /** First retry delay of a failed upload; it doubles per failure, with jitter. @default 500 */
  s3RetryBaseMs?: number;
  /** Longest retry delay. @default 30000 */
  s3RetryMaxMs?: number;
  /** How long the end of training waits for pending uploads; what remains stays pending for `mechint sync`. @default 120000 */
  s3UploadTimeoutMs?: number;
  /** At most this many rows per layer wait in the cache; one shard holds at most this many. @default 10000 */
  maxActivationsPerShard?: number;
  /** Run feature steering experiments at evaluation. @default false */
  enableFeatureSteering?: boolean;
  /** Log with a `[MechInt]` prefix. @default true */
  verbose?: boolean;
  /** This worker's rank; only rank 0 writes unless perRankShards. @default Number(process.env.RANK) or 0 */
  rank?: number;
  /** Every rank writes its own shards, named with its rank. @default false */
  perRankShards?: boolean;
  /** Per-analysis options, e.g. `{ sae: { n_latents: 256, k: 8 } }`. @default {} */
  analysisOptions?: Record<string, Record<string, unknown>>;
  /** Shard file format: 'safetensors', or 'pt' (PyTorch's zip format, read by `torch.load(path, weights_only=True)`). @default 'safetensors' */
  shardFormat?: ShardFormat;
  /** What a `sampleLayers` path that the model does not have is: an 'error' at registration, or a 'warn'ing (the layer is skipped). @default 'error' */
  missingLayers?: MissingLayers;
  /** Store each captured row's step, epoch, batch, row and position in the shard (docs/provenance.md). @default true */
  captureProvenance?: boolean;
  /** Store the model inputs of each captured sample in the shard (same reservoir slots; costs memory). @default false */
  captureInputs?: boolean;
  /** Store the targets of each captured sample (fit's, fitDataset's, or a loop's) in the shard; costs memory. @default false */
  captureTargets?: boolean;
}

/** The guide's snake_case spelling of each option. */
export const SNAKE_CASE_KEYS = {
  sampleLayers: 'sample_layers',
  saveHiddenEveryNSteps: 'save_hidden_every_n_steps',
  analysesToRun: 'analyses_to_run',
  storageBackend: 'storage_backend',
  storagePath: 'storage_path',
  s3Bucket: 's3_bucket',
  s3Prefix: 's3_prefix',
  s3Endpoint: 's3_endpoint',
  s3ForcePathStyle: 's3_force_path_style',
  s3UploadConcurrency: 's3_upload_concurrency',
  s3RequestTimeoutMs: 's3_request_timeout_ms',
  s3RetryBaseMs: 's3_retry_base_ms',
  s3RetryMaxMs: 's3_retry_max_ms',
  s3UploadTimeoutMs: 's3_upload_timeout_ms',
  maxActivationsPerShard: 'max_activations_per_shard',
  enableFeatureSteering: 'enable_feature_steering',
  verbose: 'verbose',
  rank: 'rank',
  perRankShards: 'per_rank_shards',
  analysisOptions: 'analysis_options',
  shardFormat: 'shard_format',
  missingLayers: 'missing_layers',
  captureProvenance: 'capture_provenance',
  captureInputs: 'capture_inputs',
  captureTargets: 'capture_targets',
} as const satisfies Record<keyof MechIntOptions, string>;

type OptionKey = keyof typeof SNAKE_CASE_KEYS;
export type SnakeCaseOptions = { [K in OptionKey as (typeof SNAKE_CASE_KEYS)[K]]?: MechIntOptions[K] };
export type MechIntConfigInput = MechIntOptions | SnakeCaseOptions | MechIntConfig;

function defaultRank(): number {
  const raw = process.env.RANK;
  if (raw === undefined || raw === '') return 0;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`Expected the RANK environment variable to be an integer >= 0; got \`${raw}\``);
  return n;
}

/** The guide's defaults (rank is read from RANK when a config is made). */
export const DEFAULTS = {
  sampleLayers: ['mamba_backbone.blocks.3', 'popt'],
  saveHiddenEveryNSteps: 200,
  analysesToRun: ['sae', 'neuron', 'feature'],
  storageBackend: 'local',
  storagePath: './mechint_cache',
  s3Bucket: null,
  s3Prefix: 'neurofmx/activations',
  s3Endpoint: null,
  s3ForcePathStyle: false,
  s3UploadConcurrency: 4,
  s3RequestTimeoutMs: 30_000,
  s3RetryBaseMs: 500,
  s3RetryMaxMs: 30_000,
  s3UploadTimeoutMs: 120_000,
  maxActivationsPerShard: 10000,
  enableFeatureSteering: false,
  verbose: true,
  perRankShards: false,
  analysisOptions: {},
  shardFormat: 'safetensors',
  missingLayers: 'error',
  captureProvenance: true,
  captureInputs: false,
  captureTargets: false,
} as const;

const SNAKE_TO_CAMEL = new Map<string, OptionKey>(
  (Object.entries(SNAKE_CASE_KEYS) as [OptionKey, string][]).map(([camel, snake]) => [snake, camel]),
);

function show(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function fail(key: OptionKey, expected: string, value: unknown): never {
  throw new ConfigError(`Expected \`${SNAKE_CASE_KEYS[key]}\` (${key}) to be ${expected}; got \`${show(value)}\``);
}

function positiveInt(key: OptionKey, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail(key, 'an integer >= 1', v);
  return v;
}

function nonNegativeInt(key: OptionKey, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) fail(key, 'an integer >= 0', v);
  return v;
}

function bool(key: OptionKey, v: unknown): boolean {
  if (typeof v !== 'boolean') fail(key, 'true or false', v);
  return v;
}

function oneOf<T extends string>(key: OptionKey, allowed: readonly T[], v: unknown): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) fail(key, `one of ${allowed.join(', ')}`, v);
  return v as T;
}

function nullableString(key: OptionKey, v: unknown): string | null {
  if (v === null) return null;
  if (typeof v !== 'string' || v.length === 0) fail(key, 'a non-empty string or null', v);
  return v;
}

/** Turns camelCase or snake_case input into camelCase; unknown keys are errors that suggest the right one. */
function normalizeKeys(input: Record<string, unknown>): Partial<Record<OptionKey, unknown>> {
  const out: Partial<Record<OptionKey, unknown>> = {};
  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue;
    const camel = Object.hasOwn(SNAKE_CASE_KEYS, key) ? (key as OptionKey) : SNAKE_TO_CAMEL.get(key);
    if (!camel) {
      const all = Object.keys(SNAKE_CASE_KEYS);
      const near = closest(key, /[A-Z]/.test(key) ? all : Object.values(SNAKE_CASE_KEYS));
      throw new ConfigError(`Unknown MechIntConfig option \`${key}\`${near ? `; did you mean \`${near}\`?` : ''} The options are ${all.join(', ')} (or their snake_case forms)`);
    }
    if (Object.hasOwn(out, camel)) throw new ConfigError(`MechIntConfig option \`${camel}\` is given twice (as \`${camel}\` and \`${SNAKE_CASE_KEYS[camel]}\`)`);
    out[camel] = value;
  }
  return out;
}

export class MechIntConfig {
  readonly sampleLayers: string[] | null;
  readonly saveHiddenEveryNSteps: number;
  readonly analysesToRun: string[];
  readonly storageBackend: StorageBackend;
  readonly storagePath: string;
  readonly s3Bucket: string | null;
  readonly s3Prefix: string;
  readonly s3Endpoint: string | null;
  readonly s3ForcePathStyle: boolean;
  readonly s3UploadConcurrency: number;
  readonly s3RequestTimeoutMs: number;
  readonly s3RetryBaseMs: number;
  readonly s3RetryMaxMs: number;
  readonly s3UploadTimeoutMs: number;
  readonly maxActivationsPerShard: number;
  readonly enableFeatureSteering: boolean;
  readonly verbose: boolean;
  readonly rank: number;
  readonly perRankShards: boolean;
  readonly analysisOptions: Record<string, Record<string, unknown>>;
  readonly shardFormat: ShardFormat;
  readonly missingLayers: MissingLayers;
  readonly captureProvenance: boolean;
  readonly captureInputs: boolean;
  readonly captureTargets: boolean;

  /**
   * @example
   * const config = new MechIntConfig({ sampleLayers: ['mamba_backbone.blocks.3', 'popt'], saveHiddenEveryNSteps: 200 });
   * const same = new MechIntConfig({ sample_layers: ['mamba_backbone.blocks.3', 'popt'] });
   */
  constructor(input: MechIntOptions | SnakeCaseOptions = {}) {
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw new ConfigError(`Expected MechIntConfig options to be an object; got \`${show(input)}\``);
    }
    const o = normalizeKeys(input as Record<string, unknown>);
    const get = <K extends OptionKey>(k: K): unknown => (Object.hasOwn(o, k) ? o[k] : (DEFAULTS as Record<string, unknown>)[k]);

    const layers = get('sampleLayers');
    if (layers === null) this.sampleLayers = null;
    else if (!Array.isArray(layers) || layers.length === 0 || !layers.every((l) => typeof l === 'string' && l.length > 0)) {
      fail('sampleLayers', 'a non-empty array of layer paths, or null to auto-detect', layers);
    } else this.sampleLayers = [...new Set(layers as string[])];

    this.saveHiddenEveryNSteps = positiveInt('saveHiddenEveryNSteps', get('saveHiddenEveryNSteps'));
    const analyses = get('analysesToRun');
    if (!Array.isArray(analyses)) fail('analysesToRun', `an array of analysis names (${ANALYSIS_NAMES.join(', ')} or registered ones)`, analyses);
    const known = analysisNames();
    for (const a of analyses) {
      if (typeof a === 'string' && known.includes(a)) continue;
      const near = typeof a === 'string' ? closest(a, known) : null;
      fail('analysesToRun', `an array of analysis names: ${known.join(', ')} or names given to registerAnalysis${near ? `; did you mean \`${near}\`?` : ''}`, a);
    }
    this.analysesToRun = [...new Set(analyses as string[])];
    this.storageBackend = oneOf('storageBackend', STORAGE_BACKENDS, get('storageBackend'));
    const path = get('storagePath');
    if (typeof path !== 'string' || path.length === 0) fail('storagePath', 'a non-empty path', path);
    this.storagePath = path;
    this.s3Bucket = nullableString('s3Bucket', get('s3Bucket'));
    const prefix = get('s3Prefix');
    if (typeof prefix !== 'string') fail('s3Prefix', 'a string', prefix);
    this.s3Prefix = prefix.replace(/^\/+|\/+$/g, '');
    this.s3Endpoint = nullableString('s3Endpoint', get('s3Endpoint'));
    if (this.s3Endpoint !== null && !/^https?:\/\/[^\s/]+/.test(this.s3Endpoint)) fail('s3Endpoint', 'an http(s) URL', this.s3Endpoint);
    this.s3ForcePathStyle = bool('s3ForcePathStyle', get('s3ForcePathStyle'));
    this.s3UploadConcurrency = positiveInt('s3UploadConcurrency', get('s3UploadConcurrency'));
    this.s3RequestTimeoutMs = positiveInt('s3RequestTimeoutMs', get('s3RequestTimeoutMs'));
    this.s3RetryBaseMs = positiveInt('s3RetryBaseMs', get('s3RetryBaseMs'));
    this.s3RetryMaxMs = positiveInt('s3RetryMaxMs', get('s3RetryMaxMs'));
    if (this.s3RetryMaxMs < this.s3RetryBaseMs) fail('s3RetryMaxMs', `an integer >= s3_retry_base_ms (${this.s3RetryBaseMs})`, this.s3RetryMaxMs);
    this.s3UploadTimeoutMs = nonNegativeInt('s3UploadTimeoutMs', get('s3UploadTimeoutMs'));
    this.maxActivationsPerShard = positiveInt('maxActivationsPerShard', get('maxActivationsPerShard'));
    this.enableFeatureSteering = bool('enableFeatureSteering', get('enableFeatureSteering'));
    this.verbose = bool('verbose', get('verbose'));
    const rank = Object.hasOwn(o, 'rank') ? o.rank : defaultRank();
    if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0) fail('rank', 'an integer >= 0', rank);
    this.rank = rank;
    this.perRankShards = bool('perRankShards', get('perRankShards'));
    const ao = get('analysisOptions');
    if (ao === null || typeof ao !== 'object' || Array.isArray(ao) || !Object.values(ao).every((v) => v !== null && typeof v === 'object' && !Array.isArray(v))) {
      fail('analysisOptions', 'an object of per-analysis option objects, e.g. { sae: { k: 8 } }', ao);
    }
    this.analysisOptions = structuredClone(ao as Record<string, Record<string, unknown>>);
    // Each analysis checks its own options now, so a typo fails here and not inside the results.
    for (const [name, opts] of Object.entries(this.analysisOptions)) requireAnalysis(name, 'analysis in `analysis_options`').options.parse(opts);
    this.shardFormat = oneOf('shardFormat', SHARD_FORMATS, get('shardFormat'));
    this.missingLayers = oneOf('missingLayers', MISSING_LAYERS, get('missingLayers'));
    this.captureProvenance = bool('captureProvenance', get('captureProvenance'));
    this.captureInputs = bool('captureInputs', get('captureInputs'));
    this.captureTargets = bool('captureTargets', get('captureTargets'));

    if (this.storageBackend !== 'local' && this.s3Bucket === null) {
      throw new ConfigError(`Expected \`s3_bucket\` (s3Bucket) to be set when \`storage_backend\` is ${this.storageBackend}; got \`null\``);
    }
    this.given = new Set(Object.keys(o));
    Object.freeze(this);
  }

  private readonly given: ReadonlySet<string>;

  /** Whether an option was left at its default (not given by the user). */
  isDefault(option: OptionKey): boolean {
    return !this.given.has(option);
  }

  /** A MechIntConfig as is, or a new one from plain camelCase/snake_case options. */
  static from(input: MechIntConfigInput = {}): MechIntConfig {
    return input instanceof MechIntConfig ? input : new MechIntConfig(input);
  }

  /** Options for one analysis, with keys as the user wrote them. */
  optionsFor(analysis: string): Record<string, unknown> {
    return this.analysisOptions[analysis] ?? {};
  }

  /** The guide's snake_case form, as written to manifests and results. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [camel, snake] of Object.entries(SNAKE_CASE_KEYS)) out[snake] = (this as unknown as Record<string, unknown>)[camel];
    return out;
  }
}
