/** Records analyses run on a shard directory in its manifest's `analysis_history`. */
import { MANIFEST_FILE } from '../constants.js';
import { readManifest, writeManifest, type AnalysisHistoryEntry } from './manifest.js';

/**
 * Appends an entry (with whatever else it carries, e.g. where its results live) when `dir` has a
 * manifest; returns whether it did. A training run still writing is left alone.
 */
export async function appendAnalysisHistory(dir: string, entry: AnalysisHistoryEntry & Record<string, unknown>): Promise<boolean> {
  const manifest = await readManifest(dir, MANIFEST_FILE).catch(() => null);
  if (!manifest || manifest.status !== 'complete') return false;
  manifest.analysis_history.push(entry);
  await writeManifest(dir, manifest, MANIFEST_FILE);
  return true;
}
