/**
 * Custom layer classes a saved model may use (the demo's NeuroFMX-mini, or a user's). tfjs
 * needs them registered before `loadLayersModel`; a module that exports a `registerLayers()`
 * function is recorded by URL, so a worker thread can load the same layers.
 */
import { pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';
import { tf } from '../backend.js';
import { ConfigError } from '../errors.js';
import { fileSystem } from './file-handler.js';

const modules = new Set<string>();
/** What each imported module offers: layer registration, and optionally preparing a loaded model (compiling it with losses tfjs cannot serialise). */
const loaded = new Map<string, { prepareModel?: (model: tf.LayersModel) => void }>();

/**
 * Records a module (file path or URL) whose `registerLayers()` registers custom layer classes with
 * tfjs; it may also export `prepareModel(model)`, called on every model loaded with loadModelFrom
 * (e.g. to compile it with its training losses, so analyses measure the model's own loss).
 */
export function registerLayerModule(specifier: string): void {
  modules.add(/^[a-z]+:/.test(specifier) ? specifier : pathToFileURL(isAbsolute(specifier) ? specifier : resolve(specifier)).href);
}

/** The recorded modules (to hand to a worker thread). */
export function layerModules(): string[] {
  return [...modules];
}

/** Imports every recorded module (and `extra`) once and calls its registerLayers(). */
export async function loadLayerModules(extra: readonly string[] = []): Promise<void> {
  for (const url of [...modules, ...extra]) {
    modules.add(url);
    if (loaded.has(url)) continue;
    const mod = (await import(url)) as { registerLayers?: () => void; prepareModel?: (model: tf.LayersModel) => void };
    if (typeof mod.registerLayers !== 'function') throw new ConfigError(`Layer module ${url} does not export a registerLayers() function`);
    mod.registerLayers();
    loaded.set(url, typeof mod.prepareModel === 'function' ? { prepareModel: mod.prepareModel } : {});
  }
}

/** Loads a tfjs model.json (or its directory) from disk, with every registered custom layer known. */
export async function loadModelFrom(path: string): Promise<tf.LayersModel> {
  await loadLayerModules();
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(fileSystem(path));
  } catch (err) {
    const msg = (err as Error).message;
    const hint = /Unknown layer/i.test(msg) ? ' The model uses a custom layer: pass its module to registerLayerModule() (a module exporting registerLayers()).' : '';
    throw new ConfigError(`Cannot load the model at ${path}: expected a directory with a tfjs model.json and its weights (${msg}).${hint}`);
  }
  for (const m of loaded.values()) m.prepareModel?.(model);
  return model;
}
