/** Which charts each analysis gets, rendered to SVG once for both the HTML and the Markdown report. */
import { causalChart, circuitChart, dynamicsChart, dynamicsCurvesChart, neuronFrequencyChart, pcaChart, probeChart, renderSvg, saeLatentsChart, saeTrainingChart, slug, steeringChart, type Chart } from './charts.js';

type Obj = Record<string, unknown>;

export interface RenderedChart extends Chart {
  svg: string;
  analysis: string;
  /** The layer, or '' for a chart of the whole analysis. */
  layer: string;
}

const perLayer: Record<string, ((layer: string, r: Obj) => Chart | null)[]> = {
  neuron: [neuronFrequencyChart],
  feature: [pcaChart],
  sae: [saeTrainingChart, saeLatentsChart],
  dynamics: [dynamicsChart, dynamicsCurvesChart],
  causal: [causalChart],
  steering: [steeringChart],
};

/** The whole circuit: every layer's edges in one graph (results come in model order). */
const circuitGraph = (byLayer: Record<string, Obj>) => {
  const layers = Object.keys(byLayer);
  const one = layers.length === 1 ? layers[0]! : null;
  return circuitChart(Object.values(byLayer), one === null ? 'circuit-graph' : `circuit-graph-${slug(one)}`, one === null ? 'Circuit graph' : `Circuit from ${one}`);
};

const perAnalysis: Record<string, ((byLayer: Record<string, Obj>) => Chart | null)[]> = {
  probe: [probeChart],
  circuit: [circuitGraph],
};

async function render(charts: (Chart | null)[], analysis: string, layer: string): Promise<RenderedChart[]> {
  const out: RenderedChart[] = [];
  for (const c of charts) if (c) out.push({ ...c, analysis, layer, svg: await renderSvg(c.spec) });
  return out;
}

/**
 * The charts of one layer's result. `standalone` (the dashboard, which shows one layer at a time)
 * adds the charts the report draws once for the whole analysis, drawn for this layer alone.
 */
export function chartsForLayer(analysis: string, layer: string, result: Obj, options: { standalone?: boolean } = {}): Promise<RenderedChart[]> {
  const fns = [...(perLayer[analysis] ?? []).map((f) => f(layer, result))];
  if (options.standalone) fns.push(...(perAnalysis[analysis] ?? []).map((f) => f({ [layer]: result })));
  return render(fns, analysis, layer);
}

export function chartsForAnalysis(analysis: string, byLayer: Record<string, Obj>): Promise<RenderedChart[]> {
  const ok = Object.fromEntries(Object.entries(byLayer).filter(([, r]) => r && typeof r === 'object' && typeof r.error !== 'string'));
  return render((perAnalysis[analysis] ?? []).map((f) => f(ok)), analysis, '');
}
