/**
 * The view of each analysis, shared by report.html, the Markdown report and the dashboard: its
 * section (sentences and tables) and its charts, typed by the analysis' result so a renamed
 * result key is a compile error, not a blank chart. A custom analysis gets the generic section
 * (its scalar results) unless it registers a view.
 */
import type { AnalysisResultMap } from '../analysis/results.js';
import { causalChart, circuitChart, dynamicsChart, dynamicsCurvesChart, neuronFrequencyChart, pcaChart, probeChart, saeLatentsChart, saeTrainingChart, slug, steeringChart, type Chart } from './charts.js';
import type { CardsResult } from '../analysis/cards.js';
import { cardExamplesMarkdown } from './card-sections.js';
import { featureBrowserHtml } from './feature-browser.js';
import { cardsSection, causalSection, circuitSection, dynamicsSection, featureSection, genericSection, neuronSection, probeSection, saeSection, steeringSection, type SectionContext } from './sections.js';

export type { SectionContext } from './sections.js';

export interface AnalysisView<R> {
  /** Markdown lines for one layer's result (`ctx`: the other analyses' results for the layer, when known). */
  section(layer: string, result: R, ctx?: SectionContext): string[];
  /** More Markdown for report.md alone (report.html and the dashboard show it as `html`). */
  markdown?: (layer: string, result: R) => string[];
  /** More HTML for report.html and the dashboard (interactive parts; `hash`: links set the page's hash). */
  html?: (layer: string, result: R, opts: { hash: boolean }) => string;
  /** Charts of one layer. */
  layerCharts?: readonly ((layer: string, result: R) => Chart | null)[];
  /** Charts of the whole analysis (every layer at once); the dashboard draws them for one layer. */
  analysisCharts?: readonly ((byLayer: Record<string, R>) => Chart | null)[];
  /** The dashboard gives it the page's full width. */
  wide?: boolean;
}

/** The whole circuit: every layer's edges in one graph (results come in model order). */
function circuitGraph(byLayer: Record<string, AnalysisResultMap['circuit']>): Chart | null {
  const layers = Object.keys(byLayer);
  const one = layers.length === 1 ? layers[0]! : null;
  return circuitChart(Object.values(byLayer), one === null ? 'circuit-graph' : `circuit-graph-${slug(one)}`, one === null ? 'Circuit graph' : `Circuit from ${one}`);
}

const BUILTIN: { readonly [K in keyof AnalysisResultMap]: AnalysisView<AnalysisResultMap[K]> } = {
  neuron: { section: neuronSection, layerCharts: [neuronFrequencyChart] },
  feature: { section: featureSection, layerCharts: [pcaChart] },
  dynamics: { section: dynamicsSection, layerCharts: [dynamicsChart, dynamicsCurvesChart], wide: true },
  sae: { section: saeSection, layerCharts: [saeTrainingChart, saeLatentsChart], wide: true },
  probe: { section: probeSection, analysisCharts: [probeChart] },
  causal: { section: causalSection, layerCharts: [causalChart] },
  circuit: { section: circuitSection, analysisCharts: [circuitGraph] },
  steering: { section: steeringSection, layerCharts: [steeringChart] },
  cards: { section: cardsSection, markdown: cardExamplesMarkdown, html: (layer: string, r: CardsResult, o: { hash: boolean }) => featureBrowserHtml(layer, r, o), wide: true },
};

const custom = new Map<string, AnalysisView<object>>();
const GENERIC: AnalysisView<object> = { section: (layer, r) => genericSection(layer, r as Record<string, unknown>) };

/** Gives a custom analysis its own view (its section and charts). */
export function registerView<R extends object>(analysis: string, view: AnalysisView<R>): void {
  custom.set(analysis, view as AnalysisView<object>);
}

/** The view of an analysis: its own, or the generic one. */
export function viewFor(analysis: string): AnalysisView<object> {
  return (Object.hasOwn(BUILTIN, analysis) ? (BUILTIN[analysis as keyof AnalysisResultMap] as AnalysisView<object>) : custom.get(analysis)) ?? GENERIC;
}

/** The lines (Markdown) the report writes for one analysis result of one layer. */
export function sectionLines(analysis: string, layer: string, result: object, ctx?: SectionContext): string[] {
  return viewFor(analysis).section(layer, result, ctx);
}

/** The other analyses' results for `layer`, as a section's context. */
export function layerContext(analyses: Readonly<Record<string, Readonly<Record<string, unknown>>>>, layer: string): SectionContext {
  const layerResults: Record<string, unknown> = {};
  for (const [name, byLayer] of Object.entries(analyses)) if (byLayer && typeof byLayer === 'object' && layer in byLayer) layerResults[name] = byLayer[layer];
  return { layerResults };
}
