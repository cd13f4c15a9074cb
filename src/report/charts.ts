/**
 * Charts of the results as Vega-Lite specifications, rendered to SVG in Node with Vega's SVG
 * renderer: one function per view, each returning null when the result has nothing to draw.
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

type Obj = Record<string, unknown>;
export type ChartSpec = TopLevelSpec;

export interface Chart {
  /** File-safe id, e.g. `feature-pca-popt`. */
  id: string;
  title: string;
  spec: ChartSpec;
}

const WIDTH = 420;
const HEIGHT = 180;
const arr = (o: Obj | undefined, k: string): number[] => (o && Array.isArray(o[k]) ? (o[k] as number[]) : []);

export function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').toLowerCase();
}

function base(title: string): Partial<TopLevelSpec> {
  return { $schema: 'https://vega.github.io/schema/vega-lite/v5.json', title, width: WIDTH, height: HEIGHT, config: { font: 'sans-serif', view: { stroke: null } } } as Partial<TopLevelSpec>;
}

/** Explained-variance ratio per PC (bars) and cumulative (line). */
export function pcaChart(layer: string, r: Obj): Chart | null {
  const ev = arr(r, 'explained_variance');
  if (ev.length === 0) return null;
  let cum = 0;
  const values = ev.map((v, i) => ({ pc: i + 1, ratio: v, cumulative: (cum += v) }));
  return {
    id: `feature-pca-${slug(layer)}`,
    title: `PCA explained variance: ${layer}`,
    spec: {
      ...base(`PCA explained variance: ${layer}`),
      data: { values },
      encoding: { x: { field: 'pc', type: 'quantitative', title: 'principal component', scale: { domainMin: 0.5 } } },
      layer: [
        { mark: { type: 'bar', color: '#4c78a8' }, encoding: { y: { field: 'ratio', type: 'quantitative', title: 'explained variance', axis: { format: '%' } } } },
        { mark: { type: 'line', color: '#f58518', point: true }, encoding: { y: { field: 'cumulative', type: 'quantitative', title: 'cumulative', axis: { format: '%' }, scale: { domain: [0, 1] } } } },
      ],
      resolve: { scale: { y: 'independent' } },
    } as TopLevelSpec,
  };
}

/** Histogram of unit activation frequencies, dead units in red. */
export function neuronFrequencyChart(layer: string, r: Obj): Chart | null {
  const freq = arr(r, 'sparsity');
  if (freq.length === 0) return null;
  const threshold = typeof r.dead_threshold === 'number' ? r.dead_threshold : 0.01;
  const values = freq.map((f, unit) => ({ unit, frequency: f, state: f < threshold ? 'dead' : 'alive' }));
  return {
    id: `neuron-frequency-${slug(layer)}`,
    title: `Activation frequency of units: ${layer}`,
    spec: {
      ...base(`Activation frequency of units: ${layer}`),
      data: { values },
      mark: 'bar',
      encoding: {
        x: { field: 'frequency', type: 'quantitative', bin: { maxbins: 25, extent: [0, 1] }, title: 'fraction of rows with activation > 0' },
        y: { aggregate: 'count', type: 'quantitative', title: 'units' },
        color: { field: 'state', type: 'nominal', scale: { domain: ['alive', 'dead'], range: ['#4c78a8', '#e45756'] }, title: null },
      },
    } as TopLevelSpec,
  };
}

/** SAE loss and L0 per epoch. */
export function saeTrainingChart(layer: string, r: Obj): Chart | null {
  const stats = (r.training_stats ?? {}) as Record<string, number[]>;
  const loss = stats[`${layer}/loss`] ?? [];
  const l0 = stats[`${layer}/l0_sparsity`] ?? [];
  if (loss.length === 0) return null;
  const values = [...loss.map((v, i) => ({ epoch: i + 1, metric: 'loss', value: v })), ...l0.map((v, i) => ({ epoch: i + 1, metric: 'L0', value: v }))];
  return {
    id: `sae-training-${slug(layer)}`,
    title: `SAE training: ${layer}`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: `SAE training: ${layer}`,
      data: { values },
      facet: { column: { field: 'metric', type: 'nominal', title: null, sort: ['loss', 'L0'] } },
      spec: { width: WIDTH / 2 - 20, height: HEIGHT, mark: { type: 'line', point: true }, encoding: { x: { field: 'epoch', type: 'quantitative' }, y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } } } },
      resolve: { scale: { y: 'independent' } },
      config: { font: 'sans-serif' },
    } as TopLevelSpec,
  };
}

/** Cross-validated probe R² per layer and target, with the shuffled control. */
export function probeChart(byLayer: Record<string, Obj>): Chart | null {
  const values: Obj[] = [];
  for (const [layer, r] of Object.entries(byLayer)) {
    const targets = (r.targets ?? {}) as Record<string, Obj>;
    for (const [target, t] of Object.entries(targets)) {
      values.push({ layer, target, kind: 'probe', r2: t.r2 });
      values.push({ layer, target, kind: 'shuffled control', r2: t.control_r2_shuffled });
    }
  }
  if (values.length === 0) return null;
  return {
    id: 'probe-r2',
    title: 'Linear probe R² per layer',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: 'Linear probe R² per layer',
      data: { values },
      facet: { column: { field: 'target', type: 'nominal', title: null } },
      spec: {
        width: 220,
        height: HEIGHT,
        mark: 'bar',
        encoding: {
          x: { field: 'layer', type: 'nominal', title: null, sort: null },
          xOffset: { field: 'kind' },
          y: { field: 'r2', type: 'quantitative', title: 'cross-validated R²', scale: { domain: [-0.2, 1], clamp: true } },
          color: { field: 'kind', type: 'nominal', scale: { range: ['#4c78a8', '#bab0ac'] }, title: null },
        },
      },
      config: { font: 'sans-serif' },
    } as TopLevelSpec,
  };
}

/** Per shard step: mean activation frequency and top-10 PC variance, one line per layer. */
export function dynamicsChart(layer: string, r: Obj): Chart | null {
  const steps = Array.isArray(r.steps) ? (r.steps as Obj[]) : [];
  if (steps.length < 2) return null;
  const values = steps.flatMap((s) => [
    { step: s.global_step, metric: 'mean activation frequency', value: s.mean_frequency },
    { step: s.global_step, metric: 'variance in top 10 PCs', value: s.top10_explained_variance },
    { step: s.global_step, metric: 'mean |activation|', value: s.mean_abs_activation },
  ]);
  return {
    id: `dynamics-${slug(layer)}`,
    title: `Across training steps: ${layer}`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: `Across training steps: ${layer}`,
      data: { values },
      facet: { column: { field: 'metric', type: 'nominal', title: null } },
      spec: { width: 170, height: 150, mark: { type: 'line', point: true }, encoding: { x: { field: 'step', type: 'quantitative', title: 'global step' }, y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } } } },
      resolve: { scale: { y: 'independent' } },
      config: { font: 'sans-serif' },
    } as TopLevelSpec,
  };
}

/** Renders a Vega-Lite spec to a standalone SVG string. */
export async function renderSvg(spec: ChartSpec): Promise<string> {
  // Vega logs spec warnings to the console; a report must not print, so only errors (thrown) count.
  const view = new vega.View(vega.parse(compile(spec, { logger: vega.logger(vega.None) }).spec), { renderer: 'none', logLevel: vega.None });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
