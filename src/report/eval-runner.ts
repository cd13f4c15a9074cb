/**
 * EvalMechIntRunner: the guide's runner. Analyses come from AnalysisRunner; this adds
 * `exportResults(dir)`: mechint_results.json, mechint_report.md, and the analyses' files (SAE weights).
 */
import { cp, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { AnalysisRunner } from '../analysis/runner.js';
import { ManifestResultsStore, relocate } from '../analysis/results-store.js';
import { isAnalysisError } from '../analysis/results.js';
import { CHARTS_DIR, REPORT_HTML_FILE, REPORT_MD_FILE, RESULTS_JSON_FILE } from '../constants.js';
import { ConfigError } from '../errors.js';
import { renderHtml } from './html.js';
import { renderMarkdown, type ChartFiles } from './markdown.js';
import { jsonSafe } from './results.js';
import { writeInteropExports } from './saelens-export.js';

export interface ExportedFiles {
  dir: string;
  json: string;
  markdown: string;
  html: string;
  /** Other files written (SAE weights), relative to `dir`. */
  files: string[];
}

async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (e.isDirectory()) out.push(...(await listFiles(join(dir, e.name), `${prefix}${e.name}/`)));
    else out.push(`${prefix}${e.name}`);
  }
  return out;
}

export class EvalMechIntRunner extends AnalysisRunner {
  /** Writes the results of the last runMechintEval to `dir`. */
  async exportResults(dir: string): Promise<ExportedFiles> {
    if (!this.results) throw new ConfigError('Nothing to export: call runMechintEval first');
    const out = resolve(dir);
    await mkdir(out, { recursive: true });
    const from = this.filesDir;
    const files = from ? await listFiles(from) : [];
    if (from && files.length > 0) await cp(from, out, { recursive: true });
    const results = jsonSafe(from ? relocate(this.results, from) : this.results) as typeof this.results;
    // SAELens folders for the SAEs and JSON Lines of the cards, for tools outside mechint.
    files.push(...(await writeInteropExports(out, results.analyses, (_layer, r) => (typeof r.weights_file === 'string' && r.weights_file !== '' ? (isAbsolute(r.weights_file) ? r.weights_file : join(out, r.weights_file)) : null))));
    const meta = { ...(this.summary ?? {}), created: new Date().toISOString(), files };
    const json = join(out, RESULTS_JSON_FILE);
    const markdown = join(out, REPORT_MD_FILE);
    const html = join(out, REPORT_HTML_FILE);
    const when = { ...(this.summary ?? {}), created: this.summary?.started ?? meta.created };
    await writeFile(json, JSON.stringify({ ...results, meta }, null, 2) + '\n');
    // The same SVG charts go inline into report.html and as files beside the Markdown report.
    const page = await renderHtml(results, when);
    const chartFiles: ChartFiles = {};
    await mkdir(join(out, CHARTS_DIR), { recursive: true });
    for (const c of page.charts) {
      const file = `${CHARTS_DIR}/${c.id}.svg`;
      await writeFile(join(out, file), c.svg);
      ((chartFiles[c.analysis] ??= {})[c.layer] ??= []).push({ file, title: c.title });
      files.push(file);
    }
    await writeFile(html, page.html);
    await writeFile(markdown, renderMarkdown(results, when, chartFiles));
    await this.recordInManifest(json);
    return { dir: out, json, markdown, html, files };
  }

  /** Records where each result now lives in the shard directory's manifest, so the server answers from it. */
  private async recordInManifest(json: string): Promise<void> {
    const cacheDir = this.summary?.shards_path;
    if (!cacheDir || !(await stat(cacheDir).then((s) => s.isDirectory(), () => false))) return;
    const records = this.executed
      .filter((r) => !isAnalysisError(r.result))
      .map((r) => ({ analysis: r.analysis, layer: r.layer, key: r.key, options: r.options, shards: r.shards, file: json, pointer: ['analyses', r.analysis, r.layer] }));
    const entry = { analyses: Object.keys(this.results?.analyses ?? {}), layers: this.summary?.layers ?? [], output: json };
    const recorded = await new ManifestResultsStore(cacheDir, tmpdir()).record(records, entry).catch(() => false);
    if (!recorded) this.logger.info(`Results not recorded in ${cacheDir}'s manifest (none, or a run is still writing it)`);
  }
}
