/**
 * Dotted layer paths through nested models: a nested model (or any layer holding `layers`) named
 * `mamba_backbone` that holds a layer named `blocks.3` gives `mamba_backbone.blocks.3`.
 * This is the guide's `named_modules()` loop for TensorFlow.js.
 */
import type { tf } from '../backend.js';
import { LayerNotFoundError } from '../errors.js';

type Layer = tf.layers.Layer;

export interface NamedLayer {
  path: string;
  layer: Layer;
  /** Path of the enclosing model, '' at the top. */
  parent: string;
  /** True for nested models (layers that hold layers). */
  container: boolean;
}

function childrenOf(layer: Layer): Layer[] | null {
  const children = (layer as unknown as { layers?: unknown }).layers;
  return Array.isArray(children) ? (children as Layer[]) : null;
}

function isInput(layer: Layer): boolean {
  return layer.getClassName() === 'InputLayer';
}

/** Every layer under `model` with its dotted path, parents before children (input layers skipped). */
export function namedLayers(model: tf.LayersModel | Layer): NamedLayer[] {
  const out: NamedLayer[] = [];
  const seen = new Set<Layer>();
  const walk = (container: Layer, prefix: string): void => {
    for (const layer of childrenOf(container) ?? []) {
      if (isInput(layer) || seen.has(layer)) continue;
      seen.add(layer);
      const path = prefix ? `${prefix}.${layer.name}` : layer.name;
      const kids = childrenOf(layer);
      out.push({ path, layer, parent: prefix, container: kids !== null });
      if (kids) walk(layer, path);
    }
  };
  walk(model as Layer, '');
  return out;
}

/** The dotted paths of every layer, like printing `named_modules()`. */
export function listLayerPaths(model: tf.LayersModel | Layer): string[] {
  return namedLayers(model).map((n) => n.path);
}

/** Suggests paths that look like a mistyped one (shared last part, or containing it). */
export function similarPaths(path: string, paths: string[], max = 5): string[] {
  const last = path.split('.').at(-1)!.toLowerCase();
  const lower = path.toLowerCase();
  return paths
    .filter((p) => {
      const pl = p.toLowerCase();
      return pl.endsWith(last) || pl.includes(lower) || lower.includes(pl.split('.').at(-1)!);
    })
    .slice(0, max);
}

/** Finds the layer at a dotted path, or throws naming the path and similar ones. */
export function getLayerByPath(model: tf.LayersModel | Layer, path: string): Layer {
  const all = namedLayers(model);
  const found = all.find((n) => n.path === path);
  if (found) return found.layer;
  const paths = all.map((n) => n.path);
  const similar = similarPaths(path, paths);
  const hint = similar.length > 0 ? `; did you mean ${similar.join(', ')}?` : `; the model has ${paths.slice(0, 20).join(', ')}${paths.length > 20 ? ', …' : ''}`;
  throw new LayerNotFoundError(`No layer at path \`${path}\`${hint}`);
}

/** The names auto-detection looks for: Mamba/SSM blocks, Perceiver layers, the PopT aggregator. */
export const AUTO_DETECT_PATTERN = /(mamba|ssm|perceiver|popt)/i;

export interface DetectedLayers {
  paths: string[];
  /** How they were chosen, for logs. */
  reason: string;
}

function looksLikeBlock(name: string): boolean {
  return /(^|[._])\d+$/.test(name);
}

/**
 * Chooses layers to capture when `sampleLayers` is null: layers whose path matches mamba/ssm,
 * perceiver or popt (inside a matching nested model, its numbered blocks); failing that, the
 * last hidden layer of each top-level block.
 */
export function autoDetectLayers(model: tf.LayersModel | Layer): DetectedLayers {
  const all = namedLayers(model);
  const chosen: string[] = [];
  const visit = (parent: string): void => {
    for (const n of all.filter((x) => x.parent === parent)) {
      if (!AUTO_DETECT_PATTERN.test(n.layer.name)) {
        if (n.container) visit(n.path);
        continue;
      }
      if (!n.container) {
        chosen.push(n.path);
        continue;
      }
      const kids = all.filter((x) => x.parent === n.path);
      const blocks = kids.filter((k) => looksLikeBlock(k.layer.name));
      chosen.push(...(blocks.length > 0 ? blocks.map((b) => b.path) : [n.path]));
    }
  };
  visit('');
  if (chosen.length > 0) return { paths: chosen, reason: `layers named like Mamba/SSM blocks, perceiver or popt: ${chosen.join(', ')}` };

  const top = all.filter((n) => n.parent === '');
  const outputs = new Set((model as tf.LayersModel).outputLayers ?? []);
  const fallback: string[] = [];
  for (const n of top) {
    if (!n.container) continue;
    const last = all.filter((x) => x.parent === n.path).at(-1);
    if (last) fallback.push(last.path);
  }
  if (fallback.length === 0) {
    const hidden = top.filter((n) => !outputs.has(n.layer)).at(-1);
    if (hidden) fallback.push(hidden.path);
  }
  return { paths: fallback, reason: `no Mamba/SSM, perceiver or popt layer found; using the last hidden layer of each top-level block: ${fallback.join(', ') || '(none)'}` };
}
