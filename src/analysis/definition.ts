/**
 * What an analysis declares about itself: its name and docs, its options schema, what it needs
 * (the model, eval data, another analysis's result on the same layer) and its run function.
 * The executor reads nothing else, so an analysis is one definition, registered by name.
 */
import type { EvalDataPart } from '../model/fingerprint.js';
import type { FieldMap, OptionsSchema, OptionValues } from '../options.js';
import type { RowSource } from '../storage/rows.js';
import type { AnalysisContext } from './types.js';

export interface AnalysisNeeds {
  /** Runs the model (hooks, interventions): the model must be given. */
  readonly model?: boolean;
  /**
   * Reads eval data, which must then be given: true for all of it, or the parts it reads (the
   * results key names only those, so adding probe targets does not invalidate a causal result).
   */
  readonly evalData?: boolean | readonly EvalDataPart[];
  /**
   * Results of these analyses on the same layer, found (this run, then the results store) or
   * computed first: steering ← sae. A function of the resolved options when they decide it
   * (cards of units need no SAE).
   */
  readonly analyses?: readonly string[] | ((options: Record<string, unknown>) => readonly string[]);
  /** Results these analyses left on any layer are used when they exist, never computed for it: circuit uses SAEs. */
  readonly optional?: readonly string[];
  /** The result depends on the other sampled layers (circuit relates each layer to the next). */
  readonly contextLayers?: boolean;
}

export interface AnalysisDefinition<S extends FieldMap = FieldMap, R extends object = object> {
  readonly name: string;
  /** The report's heading. */
  readonly title: string;
  /** One line for the report, `--help` and `GET /interpret/analyses`. */
  readonly description: string;
  readonly options: OptionsSchema<S>;
  readonly needs?: AnalysisNeeds;
  /** Runs tfjs ops (the executor initialises the backend first). */
  readonly usesTf?: boolean;
  /** Reads the layer's captured rows (then the results key names the shards read). @default true */
  readonly readsRows?: boolean;
  run(rows: RowSource, options: OptionValues<S>, ctx: AnalysisContext): Promise<R>;
}

/** Identity for type inference: `defineAnalysis({ name: 'mine', options: defineOptions(…), run })`. */
export function defineAnalysis<S extends FieldMap, R extends object>(def: AnalysisDefinition<S, R>): AnalysisDefinition<S, R> {
  return def;
}

/** The analyses `def` needs on the same layer, for these options (resolved; the defaults when omitted). */
export function dependenciesOf(def: AnalysisDefinition, options?: Record<string, unknown>): readonly string[] {
  const deps = def.needs?.analyses;
  if (typeof deps !== 'function') return deps ?? [];
  return deps(options ?? (def.options.resolve({}) as Record<string, unknown>));
}
