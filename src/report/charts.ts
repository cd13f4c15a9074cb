/**
 * Charts of the results as Vega-Lite specifications, rendered to SVG in Node with Vega's SVG
 * renderer: one function per view, each returning null when the result has nothing to draw.
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { CausalResult } from '../analysis/causal.js';
import type { CircuitResult } from '../analysis/circuit.js';
import type { DynamicsResult } from '../analysis/dynamics.js';
import type { FeatureAnalysisResult } from '../analysis/feature.js';
import type { NeuronAnalysisResult } from '../analysis/neuron.js';
import type { ProbeResult } from '../analysis/probe.js';
import type { SaeResult } from '../analysis/sae.js';
import type { TopLatent } from '../analysis/sae-top-rows.js';
import type { SteeringResult } from '../analysis/steering.js';

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
/** A result read back from JSON may lack a list its type promises (an older file): draw nothing then. */
const list = <T>(v: readonly T[] | null | undefined): readonly T[] => (Array.isArray(v) ? v : []);

export function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').toLowerCase();
}

function base(title: string): Partial<TopLevelSpec> {
  return { $schema: 'https://vega.github.io/schema/vega-lite/v5.json', title, width: WIDTH, height: HEIGHT, config: { font: 'sans-serif', view: { stroke: null } } } as Partial<TopLevelSpec>;
}

/** Explained-variance ratio per PC (bars) and cumulative (line). */
export function pcaChart(layer: string, r: FeatureAnalysisResult): Chart | null {
  const ev = list(r.explained_variance);
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
export function neuronFrequencyChart(layer: string, r: NeuronAnalysisResult): Chart | null {
  const freq = list(r.sparsity);
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
export function saeTrainingChart(layer: string, r: SaeResult): Chart | null {
  const stats = r.training_stats ?? {};
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
export function probeChart(byLayer: Record<string, ProbeResult>): Chart | null {
  const values: Obj[] = [];
  for (const [layer, r] of Object.entries(byLayer)) {
    const targets = r.targets ?? {};
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
export function dynamicsChart(layer: string, r: DynamicsResult): Chart | null {
  const steps = list(r.steps);
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

/** Units ranked by the loss (or output) change when each is ablated, with the whole-layer effect as subtitle. */
export function causalChart(layer: string, r: CausalResult): Chart | null {
  const effects = list(r.unit_effects).flatMap((e) => (typeof e.effect === 'number' ? [{ unit: e.unit, effect: e.effect }] : []));
  if (effects.length === 0) return null;
  const loss = r.metric === 'loss_change';
  const top = [...effects].sort((a, b) => Math.abs(b.effect) - Math.abs(a.effect)).slice(0, 15);
  const values = top.map((e, rank) => ({ unit: `unit ${String(e.unit)}`, rank, effect: e.effect, direction: e.effect >= 0 ? (loss ? 'raises loss' : 'positive') : loss ? 'lowers loss' : 'negative' }));
  const measure = loss ? 'eval loss change' : 'output RMS change';
  const subtitle = typeof r.layer_effect === 'number' ? `ablating the whole layer: ${r.layer_effect >= 0 && loss ? '+' : ''}${r.layer_effect.toPrecision(3)} (${measure})` : '';
  return {
    id: `causal-ablation-${slug(layer)}`,
    title: `Ablation ranking: ${layer}`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: { text: `Ablation ranking: ${layer}`, subtitle },
      width: WIDTH,
      height: { step: 14 },
      data: { values },
      mark: 'bar',
      encoding: {
        y: { field: 'unit', type: 'nominal', sort: { field: 'rank', order: 'ascending' }, title: null },
        x: { field: 'effect', type: 'quantitative', title: `${measure} when the unit is ${r.ablation === 'zero' ? 'zeroed' : 'mean-ablated'}` },
        color: { field: 'direction', type: 'nominal', scale: { domain: loss ? ['raises loss', 'lowers loss'] : ['positive', 'negative'], range: ['#e45756', '#4c78a8'] }, title: null },
        tooltip: [{ field: 'unit' }, { field: 'effect', format: '.4g' }],
      },
      config: { font: 'sans-serif', view: { stroke: null } },
    } as TopLevelSpec,
  };
}

const nodeLabel = (kind: unknown, unit: unknown) => `${kind === 'sae_latent' ? 'latent' : kind === 'output' ? 'out' : 'unit'} ${String(unit)}`;

/**
 * The circuit as a layered graph: one column per layer (upstream to downstream, model outputs
 * last), one row per node ranked by its total |attribution|, one link per kept edge (colour: sign,
 * width: |attribution|). Takes one layer's result or all of them, in model order.
 */
export function circuitChart(results: readonly CircuitResult[], id: string, title: string): Chart | null {
  type Node = { key: string; layer: string; unit: unknown; kind: unknown; weight: number; row: number };
  const nodes = new Map<string, Node>();
  const columns: string[] = [];
  const edges: { s: Node; t: Node; attribution: number; ablation: unknown; agrees: unknown }[] = [];
  const kindOf = (r: CircuitResult, layer: string, unit: unknown, side: 'upstream' | 'downstream'): unknown => {
    const listed = list(r.nodes).find((n) => n.layer === layer && n.unit === unit);
    if (listed) return listed.kind;
    const basis = r.basis?.[side];
    return basis === 'sae_latents' ? 'sae_latent' : basis === 'output_units' ? 'output' : 'unit';
  };
  const node = (r: CircuitResult, layer: string, unit: unknown, side: 'upstream' | 'downstream') => {
    const key = `${layer}\u0000${String(unit)}`;
    let n = nodes.get(key);
    if (!n) {
      if (!columns.includes(layer)) columns.push(layer);
      n = { key, layer, unit, kind: kindOf(r, layer, unit, side), weight: 0, row: 0 };
      nodes.set(key, n);
    }
    return n;
  };
  for (const r of results) {
    for (const e of list(r.edges)) {
      if (typeof e.attribution !== 'number' || !Number.isFinite(e.attribution)) continue;
      const s = node(r, String(e.source_layer), e.source_unit, 'upstream');
      const t = node(r, String(e.target_layer), e.target_unit, 'downstream');
      s.weight += Math.abs(e.attribution);
      t.weight += Math.abs(e.attribution);
      edges.push({ s, t, attribution: e.attribution, ablation: e.ablation_effect, agrees: e.agrees });
    }
  }
  if (edges.length === 0) return null;
  let rows = 0;
  for (const layer of columns) {
    const col = [...nodes.values()].filter((n) => n.layer === layer).sort((a, b) => b.weight - a.weight);
    col.forEach((n, i) => (n.row = i));
    rows = Math.max(rows, col.length);
  }
  const edgeValues = edges
    .sort((a, b) => Math.abs(a.attribution) - Math.abs(b.attribution)) // strongest drawn last, on top
    .map((e) => ({
      from: e.s.layer, to: e.t.layer, from_row: e.s.row, to_row: e.t.row,
      edge: `${nodeLabel(e.s.kind, e.s.unit)} → ${nodeLabel(e.t.kind, e.t.unit)}`,
      attribution: e.attribution, magnitude: Math.abs(e.attribution),
      sign: e.attribution >= 0 ? 'drives (+)' : 'suppresses (−)',
      ablation_effect: e.ablation, confirmed: e.agrees === true ? 'yes' : 'no',
    }));
  const nodeValues = [...nodes.values()].map((n) => ({ layer: n.layer, row: n.row, label: nodeLabel(n.kind, n.unit), weight: n.weight }));
  const x = { type: 'nominal', scale: { type: 'point', domain: columns, padding: 0.35 }, axis: { orient: 'top', title: null, labelAngle: 0, labelFontWeight: 'bold', labelLimit: 260, domain: false, ticks: false } };
  const y = { type: 'quantitative', scale: { domain: [-0.5, Math.max(0.5, rows - 0.5)], reverse: true, nice: false, zero: false }, axis: null };
  return {
    id,
    title,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title,
      width: Math.max(260, 190 * columns.length),
      height: Math.max(80, 20 * rows),
      layer: [
        {
          data: { values: edgeValues },
          mark: { type: 'rule', opacity: 0.6, strokeCap: 'round' },
          encoding: {
            x: { field: 'from', ...x }, x2: { field: 'to' },
            y: { field: 'from_row', ...y }, y2: { field: 'to_row' },
            color: { field: 'sign', type: 'nominal', scale: { domain: ['drives (+)', 'suppresses (−)'], range: ['#4c78a8', '#e45756'] }, title: 'edge' },
            strokeWidth: { field: 'magnitude', type: 'quantitative', scale: { range: [0.6, 7], zero: true }, title: '|attribution|' },
            tooltip: [{ field: 'edge' }, { field: 'attribution', format: '.4g' }, { field: 'ablation_effect', format: '.4g' }, { field: 'confirmed' }],
          },
        },
        {
          data: { values: nodeValues },
          mark: { type: 'circle', size: 110, color: '#2f3e4e', opacity: 1, stroke: '#fff', strokeWidth: 1.5 },
          encoding: { x: { field: 'layer', ...x }, y: { field: 'row', ...y }, tooltip: [{ field: 'layer' }, { field: 'label' }, { field: 'weight', title: 'total |attribution|', format: '.4g' }] },
        },
        {
          data: { values: nodeValues },
          mark: { type: 'text', align: 'left', dx: 8, dy: -7, fontSize: 10, fontWeight: 'bold', color: '#222' },
          encoding: { x: { field: 'layer', ...x }, y: { field: 'row', ...y }, text: { field: 'label' } },
        },
      ],
      config: { font: 'sans-serif', view: { stroke: null } },
    } as TopLevelSpec,
  };
}

/** Per steered latent: how far the outputs move (RMS change) as α grows, one panel per output head. */
export function steeringChart(layer: string, r: SteeringResult): Chart | null {
  const latents = list(r.latents);
  const byMultiplier = r.alpha_units === 'latent';
  const values: Obj[] = [];
  for (const l of latents) {
    const alphas = list(byMultiplier ? l.alpha_multipliers : l.alphas);
    for (const h of list(l.heads)) {
      const rms = list(h.rms_change);
      alphas.forEach((a, i) => {
        if (typeof rms[i] === 'number') values.push({ alpha: a, latent: `latent ${String(l.latent)}`, head: String(h.head), rms: rms[i] });
      });
    }
  }
  if (values.length === 0) return null;
  return {
    id: `steering-${slug(layer)}`,
    title: `Steering: ${layer}`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: `Steering: ${layer}`,
      data: { values },
      facet: { column: { field: 'head', type: 'nominal', title: null } },
      spec: {
        width: 200,
        height: 160,
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'alpha', type: 'quantitative', title: byMultiplier ? 'α (× typical activation)' : 'α' },
          y: { field: 'rms', type: 'quantitative', title: 'output change (RMS)', axis: { format: '~g' } },
          color: { field: 'latent', type: 'nominal', title: 'latent' },
          tooltip: [{ field: 'latent' }, { field: 'alpha', format: '.3g' }, { field: 'rms', format: '.4g' }],
        },
      },
      resolve: { scale: { y: 'independent' } },
      config: { font: 'sans-serif' },
    } as TopLevelSpec,
  };
}

interface HistogramLike {
  bin_edges?: number[];
  counts?: number[];
}

function histogramValues(h: HistogramLike | undefined): { lo: number; hi: number; count: number }[] {
  const edges = h?.bin_edges ?? [];
  const counts = h?.counts ?? [];
  // Trailing empty bins only stretch the axis.
  let last = counts.length - 1;
  while (last > 0 && !(counts[last]! > 0)) last--;
  return counts.slice(0, last + 1).map((count, i) => ({ lo: edges[i]!, hi: edges[i + 1]!, count }));
}

/** Activation histograms of the top SAE latents, one small panel each. */
export function saeLatentsChart(layer: string, r: SaeResult): Chart | null {
  const top = list(r.top_latents);
  const values = top.flatMap((t) => histogramValues(t.activation_histogram).map((b) => ({ ...b, latent: `latent ${String(t.latent)}`, order: top.indexOf(t) })));
  if (values.length === 0) return null;
  return {
    id: `sae-latents-${slug(layer)}`,
    title: `Top SAE latents, activation when active: ${layer}`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: `Top SAE latents, activation when active: ${layer}`,
      data: { values },
      facet: { field: 'latent', type: 'nominal', title: null, sort: { field: 'order' } },
      columns: 5,
      spec: {
        width: 120,
        height: 70,
        mark: { type: 'bar', color: '#72b7b2' },
        encoding: {
          x: { field: 'lo', type: 'quantitative', title: null, bin: { binned: true } },
          x2: { field: 'hi' },
          y: { field: 'count', type: 'quantitative', title: null, axis: { tickCount: 3 } },
        },
      },
      resolve: { scale: { x: 'independent', y: 'independent' } },
      config: { font: 'sans-serif' },
    } as TopLevelSpec,
  };
}

/** One SAE latent's activation histogram (the dashboard's view when a latent is clicked). */
export function latentHistogramChart(layer: string, latent: TopLatent): Chart | null {
  const values = histogramValues(latent.activation_histogram);
  if (values.length === 0) return null;
  const name = `latent ${String(latent.latent)}`;
  return {
    id: `sae-latent-${slug(layer)}-${String(latent.latent)}`,
    title: `${name} of ${layer}: activation when active`,
    spec: {
      ...base(`${name} of ${layer}: activation when active`),
      data: { values },
      mark: { type: 'bar', color: '#72b7b2' },
      encoding: {
        x: { field: 'lo', type: 'quantitative', title: 'activation', bin: { binned: true } },
        x2: { field: 'hi' },
        y: { field: 'count', type: 'quantitative', title: 'rows' },
        tooltip: [{ field: 'lo', title: 'from', format: '.3g' }, { field: 'hi', title: 'to', format: '.3g' }, { field: 'count' }],
      },
    } as TopLevelSpec,
  };
}

/** One line per training step: the cumulative PCA spectrum and the sorted unit activation frequencies. */
export function dynamicsCurvesChart(layer: string, r: DynamicsResult): Chart | null {
  const steps = list(r.steps);
  if (steps.length < 2) return null;
  const values: Obj[] = [];
  for (const s of steps) {
    list(s.cumulative_explained_variance).forEach((v, i) => values.push({ step: s.global_step, panel: 'cumulative explained variance by PC', x: i + 1, value: v }));
    const f = list(s.sorted_frequencies);
    f.forEach((v, i) => values.push({ step: s.global_step, panel: 'unit activation frequency by rank', x: f.length > 1 ? i / (f.length - 1) : 0, value: v }));
  }
  if (values.length === 0) return null;
  return {
    id: `dynamics-curves-${slug(layer)}`,
    title: `One line per training step: ${layer}`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      title: `One line per training step: ${layer}`,
      data: { values },
      facet: { column: { field: 'panel', type: 'nominal', title: null } },
      spec: {
        width: 240,
        height: 160,
        mark: { type: 'line', strokeWidth: 1.5 },
        encoding: {
          x: { field: 'x', type: 'quantitative', title: null },
          y: { field: 'value', type: 'quantitative', title: null, scale: { domain: [0, 1] } },
          color: { field: 'step', type: 'quantitative', title: 'global step', scale: { scheme: 'viridis' } },
          detail: { field: 'step', type: 'nominal' },
        },
      },
      resolve: { scale: { x: 'independent' } },
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
