/** The analyses, registered by name in one place (nothing registers itself on import). */
import { ConfigError } from '../errors.js';
import { steps } from '../options.js';
import { closest } from '../suggest.js';
import { cardsAnalysis } from './cards.js';
import { causalAnalysis } from './causal.js';
import { circuitAnalysis } from './circuit.js';
import type { AnalysisDefinition } from './definition.js';
import { dynamicsAnalysis } from './dynamics.js';
import { featureAnalysis } from './feature.js';
import { neuronAnalysis } from './neuron.js';
import { probeAnalysis } from './probe.js';
import { saeAnalysis } from './sae.js';
import { steeringAnalysis } from './steering.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- each definition keeps its own option and result types
type AnyDefinition = AnalysisDefinition<any, object>;

const STEPS_DOC = "Training steps whose rows are read: 'all', 'last' (the shards of the last global step: the trained model), or [from, to] global steps, inclusive.";

/**
 * What each built-in reads by default. The SAE and the feature analysis describe a representation,
 * so they read the trained model's rows ('last'), not step 0's; neuron statistics and dynamics
 * summarise the whole run.
 */
const DEFAULT_STEPS: Record<string, 'all' | 'last'> = { sae: 'last', feature: 'last' };

/** Every analysis that reads captured rows takes the training steps it reads (the executor selects them). */
function withSteps(def: AnyDefinition): AnyDefinition {
  if (def.readsRows === false || Object.hasOwn(def.options.fields, 'steps')) return def;
  return { ...def, options: def.options.extend({ steps: steps({ default: DEFAULT_STEPS[def.name] ?? 'all', doc: STEPS_DOC }) }) };
}

const builtins: AnyDefinition[] = [neuronAnalysis, featureAnalysis, saeAnalysis, dynamicsAnalysis, probeAnalysis, causalAnalysis, circuitAnalysis, steeringAnalysis, cardsAnalysis].map(withSteps);
const BUILTIN_NAMES = new Set(builtins.map((d) => d.name));

const registry = new Map<string, AnyDefinition>(builtins.map((a) => [a.name, a]));

export function getAnalysis(name: string): AnyDefinition | undefined {
  return registry.get(name);
}

/** The definition, or a ConfigError naming the unknown analysis and the nearest registered one. */
export function requireAnalysis(name: string, what = 'analysis'): AnyDefinition {
  const def = registry.get(name);
  if (def) return def;
  const near = closest(name, registry.keys());
  throw new ConfigError(`Unknown ${what} \`${name}\`${near ? `; did you mean \`${near}\`?` : ''} The analyses are ${analysisNames().join(', ')}`);
}

export function analysisNames(): string[] {
  return [...registry.keys()];
}

/** Module each custom analysis came from, so a worker thread can load it too; none: it runs in the thread that registered it. */
const modules = new Map<string, string>();

/** Where a custom analysis was loaded from (null for built-ins and analyses registered in code). */
export function analysisModule(name: string): string | null {
  return modules.get(name) ?? null;
}

/** Whether a worker thread can run the analysis (a built-in, or one from a plugin module). */
export function runsInWorkers(name: string): boolean {
  return BUILTIN_NAMES.has(name) || modules.has(name);
}

/** Adds an analysis under its name (or replaces a custom one); a built-in name cannot be taken. */
export function registerAnalysis(def: AnyDefinition, options: { module?: string } = {}): void {
  if (typeof def?.name !== 'string' || !/^[a-z][a-z0-9_-]{0,63}$/i.test(def.name)) {
    throw new ConfigError(`Expected the analysis \`name\` to be 1-64 letters, digits, _ or - starting with a letter; got \`${String(def?.name)}\``);
  }
  if (BUILTIN_NAMES.has(def.name)) throw new ConfigError(`\`${def.name}\` is a built-in analysis; register yours under another name`);
  if (typeof def.run !== 'function' || !def.options || typeof def.options.resolve !== 'function') {
    throw new ConfigError(`Analysis \`${def.name}\` needs \`run\` and \`options\` (a schema from defineOptions; defineOptions('${def.name} option', {}) for none)`);
  }
  registry.set(def.name, withSteps(def));
  if (options.module) modules.set(def.name, options.module);
  else modules.delete(def.name);
}

/** Removes a custom analysis (tests, plugins unloading). */
export function unregisterAnalysis(name: string): boolean {
  modules.delete(name);
  return !BUILTIN_NAMES.has(name) && registry.delete(name);
}
