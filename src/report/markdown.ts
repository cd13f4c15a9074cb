/** The human-readable Markdown report, with the charts as SVG files beside it. */
import type { EvalResults } from './results.js';
import { analysisTitle, stepsLine } from './sections.js';
import { layerContext, sectionLines, viewFor } from './views.js';

/** Chart files to embed: by analysis, then layer (or '' for charts of the whole analysis). */
export type ChartFiles = Record<string, Record<string, { file: string; title: string }[]>>;

export function renderMarkdown(results: EvalResults, meta: { shards_path?: string; created?: string; seconds?: number; missing_shards?: string[] } = {}, charts: ChartFiles = {}): string {
  const images = (analysis: string, layer: string) => (charts[analysis]?.[layer] ?? []).flatMap((c) => [`![${c.title}](${c.file})`, '']);
  const out: string[] = ['# Mechanistic interpretability report', ''];
  const cfg = results.config;
  const layers = new Set<string>();
  for (const a of Object.values(results.analyses)) for (const k of Object.keys(a)) if (k !== 'error') layers.add(k);
  out.push(
    `Shards: \`${meta.shards_path ?? String(cfg.storage_path ?? '')}\`. Layers: ${[...layers].map((l) => `\`${l}\``).join(', ') || '–'}. ` +
      `Analyses: ${Object.keys(results.analyses).join(', ') || '–'}.` +
      (meta.created ? ` Run ${meta.created}${meta.seconds !== undefined ? ` in ${meta.seconds.toFixed(1)} s` : ''}.` : ''),
    '',
  );
  if (meta.missing_shards?.length) out.push(`**Partial:** ${meta.missing_shards.length} shard(s) the manifest lists were missing and not read: ${meta.missing_shards.map((f) => `\`${f}\``).join(', ')}.`, '');
  for (const [name, byLayer] of Object.entries(results.analyses)) {
    out.push(`## ${analysisTitle(name)}`, '', ...images(name, ''));
    if (typeof byLayer.error === 'string') {
      out.push(`Not run: ${byLayer.error}`, '');
      continue;
    }
    for (const [layer, result] of Object.entries(byLayer)) {
      out.push(`### \`${layer}\``, '');
      const r = result as Record<string, unknown>;
      if (typeof r.error === 'string') out.push(`Failed: ${r.error}`);
      else {
        const steps = stepsLine(r);
        const ctx = layerContext(results.analyses as Record<string, Record<string, unknown>>, layer);
        out.push(...images(name, layer), ...(steps ? [steps, ''] : []), ...sectionLines(name, layer, r, ctx), '', ...(viewFor(name).markdown?.(layer, r) ?? []));
      }
      out.push('');
    }
  }
  return out.join('\n').replace(/\n{3,}/g, '\n\n');
}
