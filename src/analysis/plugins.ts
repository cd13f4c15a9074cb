/**
 * Plugin modules: a module that exports analyses (`analyses`, an array of definitions, or a
 * default definition) and/or `registerLayers()` for custom model layers. `mechint analyze
 * --plugin` loads them; so do the server's worker threads, by the module's URL.
 */
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError } from '../errors.js';
import { registerLayerModule } from '../model/registry.js';
import type { AnalysisDefinition } from './definition.js';
import { analysisModule, registerAnalysis } from './registry.js';

const toUrl = (specifier: string) => (/^[a-z]+:/.test(specifier) ? specifier : pathToFileURL(isAbsolute(specifier) ? specifier : resolve(specifier)).href);

/** Imports a plugin module and registers what it exports; returns the analyses' names. */
export async function loadPlugin(specifier: string): Promise<string[]> {
  const url = toUrl(specifier);
  let mod: { analyses?: unknown; default?: unknown; registerLayers?: unknown };
  try {
    mod = (await import(url)) as typeof mod;
  } catch (err) {
    throw new ConfigError(`Cannot load the plugin ${specifier}: ${(err as Error).message}`);
  }
  if (typeof mod.registerLayers === 'function') registerLayerModule(url);
  const found = [mod.analyses, mod.default]
    .flatMap((v) => (Array.isArray(v) ? v : v ? [v] : []))
    .filter((d): d is AnalysisDefinition => typeof (d as AnalysisDefinition)?.name === 'string' && typeof (d as AnalysisDefinition).run === 'function');
  if (found.length === 0 && typeof mod.registerLayers !== 'function') {
    throw new ConfigError(`The plugin ${specifier} exports no analysis: export \`analyses\` (an array of definitions from defineAnalysis) or a default definition, or \`registerLayers\``);
  }
  for (const def of found) if (analysisModule(def.name) !== url) registerAnalysis(def, { module: url });
  return found.map((d) => d.name);
}

/** Loads the plugin modules of analyses (in a worker thread, before it runs one). */
export async function loadPlugins(urls: readonly string[]): Promise<void> {
  for (const url of urls) await loadPlugin(url);
}
