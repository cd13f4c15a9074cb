/**
 * Where analysis results live once computed, found again by their key (analysis, layer,
 * resolved options, the shards read, and the model and eval data when they were used).
 *
 * The cache's manifest records each run in `analysis_history`, and each result there says which
 * JSON file holds it and where inside: the runner's export (mechint_results.json) or one file per
 * result that the server writes under `analysis_results/`. So `mechint serve` on a cache answers
 * from what `mechint demo` or `mechint analyze` already computed. A cache that cannot be written
 * (S3, read-only, a training run still writing) keeps new results in memory for the process.
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { MANIFEST_FILE } from '../constants.js';
import { appendAnalysisHistory } from '../storage/history.js';
import { readManifest } from '../storage/manifest.js';
import { writeFileAtomic } from '../storage/atomic.js';

/** One result as the manifest's `analysis_history[].results` lists it. */
export interface StoredResultRecord {
  analysis: string;
  layer: string;
  key: string;
  /** The resolved options the result was computed with. */
  options: Record<string, unknown>;
  /** Identities of the shards read (sha256 from the manifest). */
  shards: string[];
  /** The JSON file holding the result, relative to the cache directory (or absolute). */
  file: string;
  /** Where in that file: property names from the top (`['analyses', 'sae', 'popt']`). */
  pointer: string[];
}

/** A result found again: its value, and the directory its relative file paths (`weights_file`) start from. */
export interface StoredResult {
  result: Record<string, unknown>;
  dir: string;
  record: StoredResultRecord;
}

export interface ResultsStore {
  find(key: string): Promise<StoredResult | null>;
  /**
   * Records results held in `file` (already written) at their pointers. Returns whether they were
   * recorded durably (false: kept for this process only).
   */
  record(records: StoredResultRecord[], entry: { analyses: string[]; layers: string[]; output?: string }): Promise<boolean>;
  /** Writes one result to its own file and records it; artifacts already lie in `artifactsDir`. */
  save(record: Omit<StoredResultRecord, 'file' | 'pointer'>, result: Record<string, unknown>): Promise<StoredResult>;
  /** A directory for a result's artifacts (SAE weights), made on demand. */
  artifactsDir(analysis: string, layer: string, key: string): Promise<string>;
}

const RESULTS_DIR = 'analysis_results';
const fileSlug = (s: string) => s.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 80);

/** Results in memory only (uploads, S3 caches, read-only directories). */
export class MemoryResultsStore implements ResultsStore {
  protected readonly known = new Map<string, StoredResult>();
  constructor(protected readonly scratch: string) {}

  async find(key: string): Promise<StoredResult | null> {
    return this.known.get(key) ?? null;
  }

  async record(_records: StoredResultRecord[], _entry: { analyses: string[]; layers: string[]; output?: string }): Promise<boolean> {
    return false;
  }

  async save(record: Omit<StoredResultRecord, 'file' | 'pointer'>, result: Record<string, unknown>): Promise<StoredResult> {
    const found = { result, dir: await this.artifactsDir(record.analysis, record.layer, record.key), record: { ...record, file: '', pointer: [] } };
    this.known.set(record.key, found);
    return found;
  }

  async artifactsDir(analysis: string, layer: string, key: string): Promise<string> {
    const dir = join(this.scratch, RESULTS_DIR, analysis, `${fileSlug(layer)}-${key.slice(0, 12)}`);
    await mkdir(dir, { recursive: true });
    return dir;
  }
}

/** Results recorded in a cache directory's manifest; falls back to memory where it cannot write. */
export class ManifestResultsStore extends MemoryResultsStore {
  private readonly files = new Map<string, { mtimeMs: number; json: unknown }>();
  private index: { mtimeMs: number; records: Map<string, StoredResultRecord> } | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly cacheDir: string, scratch: string) {
    super(scratch);
  }

  /** The records of the manifest's history, newest last, re-read when the manifest changes. */
  private async records(): Promise<Map<string, StoredResultRecord>> {
    const mtimeMs = await stat(join(this.cacheDir, MANIFEST_FILE)).then((s) => s.mtimeMs, () => -1);
    if (this.index && this.index.mtimeMs === mtimeMs) return this.index.records;
    const records = new Map<string, StoredResultRecord>();
    const manifest = mtimeMs < 0 ? null : await readManifest(this.cacheDir, MANIFEST_FILE).catch(() => null);
    for (const entry of manifest?.analysis_history ?? []) {
      const results = (entry as { results?: unknown }).results;
      if (!Array.isArray(results)) continue;
      for (const r of results as StoredResultRecord[]) if (typeof r?.key === 'string' && typeof r.file === 'string' && Array.isArray(r.pointer)) records.set(r.key, r);
    }
    this.index = { mtimeMs, records };
    return records;
  }

  private async readJson(path: string): Promise<unknown> {
    const mtimeMs = await stat(path).then((s) => s.mtimeMs, () => -1);
    if (mtimeMs < 0) return null;
    const cached = this.files.get(path);
    if (cached && cached.mtimeMs === mtimeMs) return cached.json;
    const json = JSON.parse(await readFile(path, 'utf8')) as unknown;
    this.files.set(path, { mtimeMs, json });
    return json;
  }

  override async find(key: string): Promise<StoredResult | null> {
    const mem = await super.find(key);
    if (mem) return mem;
    const record = (await this.records()).get(key);
    if (!record) return null;
    const path = isAbsolute(record.file) ? record.file : resolve(this.cacheDir, record.file);
    let value: unknown = await this.readJson(path).catch(() => null);
    for (const p of record.pointer) value = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[p] : undefined;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return null; // moved or rewritten: compute again
    return { result: value as Record<string, unknown>, dir: dirname(path), record };
  }

  /** Serialises manifest updates of this process (two requests finishing together). */
  private serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.queue.then(f, f);
    this.queue = next.catch(() => undefined);
    return next;
  }

  override async record(records: StoredResultRecord[], entry: { analyses: string[]; layers: string[]; output?: string }): Promise<boolean> {
    const rel = records.map((r) => ({ ...r, file: isAbsolute(r.file) ? portablePath(this.cacheDir, r.file) : r.file }));
    return this.serial(() => appendAnalysisHistory(this.cacheDir, { timestamp: new Date().toISOString(), ...entry, results: rel }));
  }

  override async save(record: Omit<StoredResultRecord, 'file' | 'pointer'>, result: Record<string, unknown>): Promise<StoredResult> {
    const dir = await this.artifactsDir(record.analysis, record.layer, record.key);
    const file = join(dir, 'result.json');
    const stored: StoredResultRecord = { ...record, file, pointer: ['result'] };
    try {
      await writeFileAtomic(file, [Buffer.from(JSON.stringify({ ...stored, file: undefined, result: relocate(result, dir) }, null, 1) + '\n')]);
      if (await this.record([stored], { analyses: [record.analysis], layers: [record.layer] })) return { result, dir, record: stored };
    } catch {
      // not writable: the memory store below keeps it for this process
    }
    return super.save(record, result);
  }

  override async artifactsDir(analysis: string, layer: string, key: string): Promise<string> {
    const dir = join(this.cacheDir, RESULTS_DIR, analysis, `${fileSlug(layer)}-${key.slice(0, 12)}`);
    try {
      await mkdir(dir, { recursive: true });
      return dir;
    } catch {
      return super.artifactsDir(analysis, layer, key);
    }
  }
}

/**
 * A results file inside the cache, or beside it (the demo's `../mechint_results/`), is recorded
 * relative to the cache so the two can move together; one elsewhere keeps its absolute path.
 */
function portablePath(cacheDir: string, path: string): string {
  const rel = relative(cacheDir, path);
  const ups = rel.split('/').filter((p) => p === '..').length;
  return ups <= 1 ? rel : path;
}

/** Absolute file paths under `from` become relative to it (a result's artifacts travel with its file). */
export function relocate(value: unknown, from: string): unknown {
  if (typeof value === 'string') return value.startsWith(from + '/') ? value.slice(from.length + 1) : value;
  if (Array.isArray(value)) return value.map((v) => relocate(v, from));
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, relocate(v, from)]));
  return value;
}

/** The inverse of relocate for the artifact fields analyses write (`weights_file`). */
export function absolutize(result: Record<string, unknown>, dir: string): Record<string, unknown> {
  const f = result.weights_file;
  return typeof f === 'string' && f !== '' && !isAbsolute(f) ? { ...result, weights_file: join(dir, f) } : result;
}
