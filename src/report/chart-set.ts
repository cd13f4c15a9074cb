/** Which charts each analysis gets, rendered to SVG once for both the HTML and the Markdown report. */
import { dynamicsChart, neuronFrequencyChart, pcaChart, probeChart, renderSvg, saeTrainingChart, type Chart } from './charts.js';

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
  sae: [saeTrainingChart],
  dynamics: [dynamicsChart],
};

const perAnalysis: Record<string, ((byLayer: Record<string, Obj>) => Chart | null)[]> = {
  probe: [probeChart],
};

async function render(charts: (Chart | null)[], analysis: string, layer: string): Promise<RenderedChart[]> {
  const out: RenderedChart[] = [];
  for (const c of charts) if (c) out.push({ ...c, analysis, layer, svg: await renderSvg(c.spec) });
  return out;
}

export function chartsForLayer(analysis: string, layer: string, result: Obj): Promise<RenderedChart[]> {
  return render((perLayer[analysis] ?? []).map((f) => f(layer, result)), analysis, layer);
}

export function chartsForAnalysis(analysis: string, byLayer: Record<string, Obj>): Promise<RenderedChart[]> {
  const ok = Object.fromEntries(Object.entries(byLayer).filter(([, r]) => r && typeof r === 'object' && typeof r.error !== 'string'));
  return render((perAnalysis[analysis] ?? []).map((f) => f(ok)), analysis, '');
}
