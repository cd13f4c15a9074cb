/**
 * The one place analyses run. EvalMechIntRunner, `mechint analyze`, `POST /interpret` (inline and
 * in a job's worker thread) and the dashboard all call `executeAnalyses`, so they resolve the
 * same options, reuse the same stored results and cannot disagree.
 *
 * For each (analysis, layer) it resolves the options (the config's analysisOptions under the
 * request's), builds the results key, answers from results it was given or the results store
 * when the key matches, finds or computes what the analysis needs first (steering ← the
 * layer's SAE), runs it, and reports every result with its key so the caller can record it.
 */
import { createHash } from 'node:crypto';
import { initBackend } from '../backend.js';
import type { MechIntConfig } from '../config.js';
import { ConfigError, DependencyError, LayerNotFoundError, MechIntError, ModelRequiredError, NonFiniteError } from '../errors.js';
import type { StepSelection } from '../options.js';
import { ALL_EVAL_DATA_PARTS, evalDataFingerprint, modelFingerprint } from '../model/fingerprint.js';
import type { tf } from '../backend.js';
import type { RowSource } from '../storage/rows.js';
import { dependenciesOf, type AnalysisDefinition } from './definition.js';
import type { FieldMap } from '../options.js';
import type { RowOrigin, RowRef } from '../storage/provenance.js';
import { finiteRows, type NonFiniteCount } from './finite-rows.js';
import { requireAnalysis } from './registry.js';
import { absolutize, type ResultsStore } from './results-store.js';
import type { AnalysisResults } from './results.js';
import type { AnalysisContext, AnalysisProgress, EvalData } from './types.js';

/** The rows an execution reads: a shard reader, or uploaded tensors. */
export interface LayerSource {
  /** Where the rows come from (for messages). */
  readonly label: string;
  layer(name: string): { dim: number; rows: number } | null;
  layerNames(): string[];
  rows(layer: string): RowSource;
  /** Identities of what `layer`'s rows were read from (shard sha256 where known). */
  shardIds(layer: string): string[];
  /** The global steps of the shards holding `layer`, ascending (none for uploads). */
  steps(layer: string): number[];
  /** Where rows came from (provenance, and the inputs and targets captured with them); absent when the source cannot say. */
  origins?(layer: string, refs: readonly RowRef[]): Promise<RowOrigin[]>;
}

export interface ExecuteRequest {
  /** Analyses in run order. */
  analyses: readonly string[];
  layers: readonly string[];
  /** Every sampled layer in model order, for analyses that relate layers (circuit). @default layers */
  contextLayers?: readonly string[];
  config: MechIntConfig;
  /** Options per analysis, over `config.analysisOptions`. */
  options?: Readonly<Record<string, Record<string, unknown>>>;
  /** Answer from stored results when the key matches. @default true */
  reuse?: boolean;
}

export interface ExecuteEnv {
  source: LayerSource;
  model?: tf.LayersModel | null;
  evalData?: EvalData | null;
  /** Stored results to reuse and artifact directories; none: nothing is reused across runs. */
  store?: ResultsStore | null;
  /** Save each computed result in the store as it finishes (the server). @default false */
  persist?: boolean;
  /** Where analyses write files when there is no store. */
  outputDir?: string;
  /** Results already known by analysis and layer (absolute file paths), used before the store. */
  previous?: Record<string, Record<string, unknown>>;
  onProgress?: (p: AnalysisProgress) => void;
  /** Rethrow a failure instead of recording `{ error }` (a request for one layer answers with the error). */
  throwOnError?: boolean;
}

export type ResultOrigin = 'computed' | 'stored' | 'given';

/** One result with what identifies it. */
export interface ExecutedResult {
  analysis: string;
  layer: string;
  key: string;
  options: Record<string, unknown>;
  shards: string[];
  origin: ResultOrigin;
  result: Record<string, unknown>;
}

export interface ExecuteOutcome {
  analyses: AnalysisResults;
  /** Every result of the run, dependencies included, in the order they were settled. */
  results: ExecutedResult[];
}

/**
 * The steps a selection reads from a layer's steps: null for all of them (and for rows that carry
 * no step, as uploads). An empty selection is an error naming the steps there are.
 */
export function selectSteps(have: readonly number[], selection: StepSelection, layer: string): { steps: number[] | null } {
  if (selection === 'all' || have.length === 0) return { steps: null };
  const picked = selection === 'last' ? [have.at(-1)!] : have.filter((s) => s >= selection[0] && s <= selection[1]);
  if (picked.length === 0) throw new ConfigError(`No shards of \`${layer}\` at global steps ${selection[0]}–${selection[1]}; it has steps ${have.join(', ')}`);
  return { steps: picked };
}

function stepRows(source: RowSource, steps: readonly number[] | null): RowSource {
  if (steps === null) return source;
  const keep = new Set(steps);
  return async function* () {
    for await (const b of source()) if (b.globalStep === undefined || keep.has(b.globalStep)) yield b;
  };
}

/** sha256 of canonical JSON (sorted keys), so equal parts give equal keys in any process. */
export function resultKey(parts: Record<string, unknown>): string {
  const canon = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(canon) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon((v as Record<string, unknown>)[k])])) : v;
  return createHash('sha256').update(JSON.stringify(canon(parts))).digest('hex');
}

function errorResult(err: unknown): { error: string; code?: string } {
  if (err instanceof MechIntError) return { error: err.message, code: err.code };
  return { error: err instanceof Error ? err.message : String(err) };
}

interface Unit {
  def: AnalysisDefinition;
  layer: string;
  options: Record<string, unknown>;
  key: string;
  shards: string[];
}

/** Checks what an analysis needs before any work; throws ModelRequiredError naming what is missing. */
export function assertRunnable(name: string, has: { model: boolean; evalData: boolean }, how: { model: string; evalData: string }): void {
  const def = requireAnalysis(name);
  if (def.needs?.model && !has.model) throw new ModelRequiredError(`The ${name} analysis needs the model: ${how.model}`);
  if (def.needs?.evalData && !has.evalData) throw new ModelRequiredError(`The ${name} analysis needs eval data: ${how.evalData}`);
  for (const dep of dependenciesOf(def)) assertRunnable(dep, has, how);
}

class Execution {
  readonly analyses: AnalysisResults = {};
  readonly results: ExecutedResult[] = [];
  private readonly contextLayers: readonly string[];
  private modelFingerprint: string | undefined;

  constructor(private readonly req: ExecuteRequest, private readonly env: ExecuteEnv) {
    this.contextLayers = req.contextLayers ?? req.layers;
  }

  private modelKey(): string | null {
    return this.env.model ? (this.modelFingerprint ??= modelFingerprint(this.env.model)) : null;
  }

  private evalDataKey(def: AnalysisDefinition): string | null {
    const parts = Array.isArray(def.needs?.evalData) ? def.needs.evalData : ALL_EVAL_DATA_PARTS;
    return this.env.evalData ? evalDataFingerprint(this.env.evalData, parts) : null;
  }

  /** Resolved options and the results key of one analysis on one layer. */
  unit(name: string, layer: string): Unit {
    const def = requireAnalysis(name);
    const info = this.env.source.layer(layer);
    const readsRows = def.readsRows !== false;
    if (readsRows && !info) {
      throw new LayerNotFoundError(`No layer \`${layer}\` in ${this.env.source.label}; it holds ${this.env.source.layerNames().join(', ') || 'no layers'}`);
    }
    const options = this.resolvedOptions(def, info?.dim);
    const shards = readsRows ? this.env.source.shardIds(layer) : [];
    // Options that change only how a result is computed (SAE worker threads) do not make it another result.
    const fields = def.options.fields as FieldMap;
    const keyed = Object.fromEntries(Object.entries(options).filter(([k]) => !fields[k]?.sameResult));
    const parts: Record<string, unknown> = { analysis: name, layer, options: keyed, shards };
    if (def.needs?.model) parts.model = this.modelKey();
    if (def.needs?.model || def.needs?.evalData) parts.evalData = this.evalDataKey(def);
    if (def.needs?.contextLayers) parts.contextLayers = this.contextLayers;
    // What it reads from other analyses is part of what it is.
    for (const dep of dependenciesOf(def, options)) parts[`uses.${dep}`] = this.keyOf(dep, layer);
    for (const dep of def.needs?.optional ?? []) parts[`uses.${dep}`] = this.contextLayers.map((l) => this.keyOf(dep, l));
    return { def, layer, options, key: resultKey(parts), shards };
  }

  /** What `name` needs on `layer` with the options this request gives it. */
  private dependencies(name: string, layer: string): readonly string[] {
    const def = requireAnalysis(name);
    if (typeof def.needs?.analyses !== 'function') return dependenciesOf(def);
    const info = this.env.source.layer(layer);
    return dependenciesOf(def, this.resolvedOptions(def, info?.dim));
  }

  private resolvedOptions(def: AnalysisDefinition, dim: number | undefined): Record<string, unknown> {
    const merged = { ...this.req.config.optionsFor(def.name), ...this.req.options?.[def.name] };
    return def.options.resolve(merged, dim === undefined ? {} : { dim }) as Record<string, unknown>;
  }

  private keyOf(name: string, layer: string): string | null {
    return this.results.find((r) => r.analysis === name && r.layer === layer)?.key ?? null;
  }

  private settle(unit: Unit, origin: ResultOrigin, result: Record<string, unknown>): Record<string, unknown> {
    (this.analyses[unit.def.name] ??= {})[unit.layer] = result;
    this.results.push({ analysis: unit.def.name, layer: unit.layer, key: unit.key, options: unit.options, shards: unit.shards, origin, result });
    return result;
  }

  /** The result of one analysis on one layer: known (this run, given, stored) or computed. */
  async ensure(name: string, layer: string, asDependency = false): Promise<Record<string, unknown>> {
    const done = this.analyses[name]?.[layer];
    if (done) return done as Record<string, unknown>;
    const given = this.env.previous?.[name]?.[layer] as Record<string, unknown> | undefined;
    const progress = (p: AnalysisProgress) => this.env.onProgress?.(p);
    try {
      // Dependencies settle first, so the unit's key names them.
      for (const dep of this.dependencies(name, layer)) {
        const r = await this.ensure(dep, layer, true);
        if (typeof r.error === 'string') throw new DependencyError(`The ${name} analysis needs the ${dep} analysis of \`${layer}\`, which failed: ${r.error}`);
      }
      for (const dep of requireAnalysis(name).needs?.optional ?? []) {
        for (const l of this.contextLayers) await this.findOnly(dep, l);
      }
      const unit = this.unit(name, layer);
      if (given && given.error === undefined) return this.settle(unit, 'given', given);
      if (this.req.reuse !== false && this.env.store) {
        const stored = await this.env.store.find(unit.key);
        if (stored) return this.settle(unit, 'stored', absolutize(stored.result, stored.dir));
      }
      progress({ analysis: name, layer, stage: 'start' });
      const result = await this.compute(unit);
      progress({ analysis: name, layer, stage: 'done' });
      if (this.env.persist && this.env.store) await this.env.store.save({ analysis: name, layer, key: unit.key, options: unit.options, shards: unit.shards }, result);
      return this.settle(unit, 'computed', result);
    } catch (err) {
      if (this.env.throwOnError && !asDependency) throw err;
      progress({ analysis: name, layer, stage: 'error', message: (err as Error).message });
      const failed = errorResult(err);
      (this.analyses[name] ??= {})[layer] = failed;
      return failed;
    }
  }

  /** Settles an analysis (and what it needs) from given or stored results only; false when any would need computing. */
  async ensureStoredOnly(name: string, layer: string): Promise<boolean> {
    if (this.analyses[name]?.[layer]) return true;
    const def = requireAnalysis(name);
    for (const dep of this.dependencies(name, layer)) if (!(await this.ensureStoredOnly(dep, layer))) return false;
    for (const dep of def.needs?.optional ?? []) for (const l of this.contextLayers) await this.findOnly(dep, l);
    return this.findOnly(name, layer);
  }

  /** A result used when it exists (this run, given, stored), never computed for the caller. */
  private async findOnly(name: string, layer: string): Promise<boolean> {
    if (this.analyses[name]?.[layer]) return true;
    let unit: Unit;
    try {
      unit = this.unit(name, layer);
    } catch {
      return false; // e.g. a context layer the shards do not hold
    }
    const given = this.env.previous?.[name]?.[layer] as Record<string, unknown> | undefined;
    if (given && given.error === undefined) {
      this.settle(unit, 'given', given);
      return true;
    }
    const stored = this.req.reuse !== false && this.env.store ? await this.env.store.find(unit.key) : null;
    if (stored) this.settle(unit, 'stored', absolutize(stored.result, stored.dir));
    return stored !== null;
  }

  private async compute(unit: Unit): Promise<Record<string, unknown>> {
    const { def, layer } = unit;
    if (def.usesTf) await initBackend();
    const outputDir = this.env.store ? await this.env.store.artifactsDir(def.name, layer, unit.key) : this.env.outputDir;
    const previous: Record<string, Record<string, unknown>> = {};
    for (const [a, byLayer] of Object.entries(this.analyses)) previous[a] = { ...byLayer };
    const ctx: AnalysisContext = {
      layer,
      config: this.req.config,
      ...(outputDir === undefined ? {} : { outputDir }),
      model: this.env.model ?? null,
      evalData: this.env.evalData ?? null,
      previous,
      layers: [...this.contextLayers],
      rowsOf: (l) => this.env.source.rows(l),
      ...(this.env.source.origins ? { origins: (refs: readonly RowRef[]) => this.env.source.origins!(layer, refs) } : {}),
      ...(this.env.onProgress ? { onProgress: this.env.onProgress } : {}),
    };
    const nonFinite: NonFiniteCount = { values: 0, rows: 0, seen: 0 };
    // `steps` is the executor's: it picks the rows; the analysis gets the rest of its options.
    const { steps: selection, ...options } = unit.options as { steps?: StepSelection };
    const selected = def.readsRows === false ? null : selectSteps(this.env.source.steps(layer), selection ?? 'all', layer);
    const rows: RowSource = selected === null ? async function* () {} : finiteRows(stepRows(this.env.source.rows(layer), selected.steps), nonFinite);
    let result: Record<string, unknown>;
    try {
      result = (await def.run(rows, options, ctx)) as Record<string, unknown>;
    } catch (err) {
      if (nonFinite.rows > 0 && nonFinite.rows === nonFinite.seen) {
        throw new NonFiniteError(`Every row of \`${layer}\` (${nonFinite.rows}) holds NaN or ±Infinity (${nonFinite.values} values), so the ${def.name} analysis has nothing to read`);
      }
      throw err;
    }
    if (selected !== null) {
      result = { ...result, step_selection: { selection: selection ?? 'all', read: selected.steps ?? this.env.source.steps(layer) }, non_finite: { values: nonFinite.values, rows_excluded: nonFinite.rows, rows_read: nonFinite.seen } };
    }
    const used = [...dependenciesOf(def, unit.options), ...(def.needs?.optional ?? [])].flatMap((dep) =>
      this.results.filter((r) => r.analysis === dep && (r.layer === layer || def.needs?.optional?.includes(dep))).map((r) => ({ analysis: dep, layer: r.layer, origin: r.origin, key: r.key })),
    );
    return used.length > 0 ? { ...result, depends_on: used } : result;
  }
}

/**
 * Runs (or finds) every analysis of the request on every layer. A layer that fails records
 * `{ error, code }` and the others still run, unless `throwOnError`.
 */
export async function executeAnalyses(req: ExecuteRequest, env: ExecuteEnv): Promise<ExecuteOutcome> {
  const run = new Execution(req, env);
  for (const name of req.analyses) {
    const def = requireAnalysis(name);
    const missing = def.needs?.model && !env.model ? 'the model' : (def.needs?.model || def.needs?.evalData) && !env.evalData ? 'eval data' : null;
    for (const layer of req.layers) {
      if (missing) {
        const err = new ModelRequiredError(`The ${name} analysis needs ${missing}: give ${missing === 'the model' ? 'the model (EvalMechIntRunner(model), --model DIR)' : 'eval data (runMechintEval({ evalData }), --eval-data FILE)'}`);
        if (env.throwOnError) throw err;
        (run.analyses[name] ??= {})[layer] = errorResult(err);
        continue;
      }
      await run.ensure(name, layer);
    }
  }
  return { analyses: run.analyses, results: run.results };
}

/**
 * The stored answer for one analysis on one layer, without computing anything: what the server
 * checks before it starts a worker. Null when it would have to compute.
 */
export async function findStoredResult(req: ExecuteRequest & { analyses: [string]; layers: [string] }, env: ExecuteEnv): Promise<ExecuteOutcome | null> {
  if (!env.store || req.reuse === false) return null;
  const def = requireAnalysis(req.analyses[0]);
  if ((def.needs?.model && !env.model) || ((def.needs?.model || def.needs?.evalData) && !env.evalData)) return null;
  const probe = new Execution(req, { ...env, persist: false });
  // Dependencies only when they too are stored; the key of the unit names them.
  const r = await probe.ensureStoredOnly(req.analyses[0], req.layers[0]);
  return r ? { analyses: probe.analyses, results: probe.results } : null;
}
