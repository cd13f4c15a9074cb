/** The typed shape of analysis results: analysis → layer → result, or `{ error }` for a layer that failed. */
import type { CardsResult } from './cards.js';
import type { CausalResult } from './causal.js';
import type { CircuitResult } from './circuit.js';
import type { DynamicsResult } from './dynamics.js';
import type { FeatureAnalysisResult } from './feature.js';
import type { NeuronAnalysisResult } from './neuron.js';
import type { ProbeResult } from './probe.js';
import type { SaeResult } from './sae.js';
import type { SteeringResult } from './steering.js';

/**
 * Result type of each built-in analysis. A custom analysis adds its own by declaration merging:
 * `declare module 'mechint' { interface AnalysisResultMap { mine: MyResult } }`.
 */
export interface AnalysisResultMap {
  neuron: NeuronAnalysisResult;
  feature: FeatureAnalysisResult;
  sae: SaeResult;
  dynamics: DynamicsResult;
  probe: ProbeResult;
  causal: CausalResult;
  circuit: CircuitResult;
  steering: SteeringResult;
  cards: CardsResult;
}

/** What a layer records when its analysis could not run or failed; the other layers still run. */
export interface AnalysisErrorResult {
  error: string;
  code?: string;
}

/** What the executor adds to every result it computes. */
export interface ExecutionNotes {
  /** Rows read from the shards (analyses that read rows): non-finite values met and rows excluded for them. */
  non_finite?: { values: number; rows_excluded: number; rows_read: number };
  /** The training steps whose rows it read: the selection (the `steps` option) and the steps it covered. */
  step_selection?: { selection: 'all' | 'last' | [number, number]; read: number[] };
  /** Results this one was computed from (steering ← the layer's SAE), each with where it came from. */
  depends_on?: { analysis: string; layer: string; origin: 'computed' | 'stored' | 'given'; key: string }[];
}

export type LayerResults<R> = Record<string, (R & ExecutionNotes) | AnalysisErrorResult>;

export type AnalysisResults = { [K in keyof AnalysisResultMap]?: LayerResults<AnalysisResultMap[K]> } & { [name: string]: LayerResults<object> };

export function isAnalysisError(r: unknown): r is AnalysisErrorResult {
  return typeof r === 'object' && r !== null && typeof (r as { error?: unknown }).error === 'string';
}
