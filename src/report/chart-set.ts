/** Which charts each analysis gets, rendered to SVG once for both the HTML and the Markdown report. */
import { renderSvg, type Chart } from './charts.js';
import { viewFor } from './views.js';

type Obj = Record<string, unknown>;

export interface RenderedChart extends Chart {
  svg: string;
  analysis: string;
  /** The layer, or '' for a chart of the whole analysis. */
  layer: string;
}

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
  const view = viewFor(analysis);
  const fns = [...(view.layerCharts ?? []).map((f) => f(layer, result))];
  if (options.standalone) fns.push(...(view.analysisCharts ?? []).map((f) => f({ [layer]: result })));
  return render(fns, analysis, layer);
}

export function chartsForAnalysis(analysis: string, byLayer: Record<string, Obj>): Promise<RenderedChart[]> {
  const ok = Object.fromEntries(Object.entries(byLayer).filter(([, r]) => r && typeof r === 'object' && typeof r.error !== 'string'));
  return render((viewFor(analysis).analysisCharts ?? []).map((f) => f(ok)), analysis, '');
}
