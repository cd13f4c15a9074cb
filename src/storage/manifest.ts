/**
 * The record of every shard in a storage directory: `manifest.json`, a snapshot, plus
 * `manifest.log`, an append-only journal (JSON lines) of what changed since the snapshot. A
 * writer appends one short line per shard (flat cost however long the run) and now and then
 * compacts the journal into the snapshot; readers merge both, so they always see every shard
 * whose line reached the disk. A crash loses at most the shard being written.
 *
 * Crash safety: each journal line carries a sequence number and the snapshot records the last one
 * it includes (`journal_seq`); merging applies only newer lines, so a crash between writing a
 * snapshot and removing the journal changes nothing. Readers read the journal before the
 * snapshot, so a compaction between the two reads loses nothing either. A torn last line (a crash
 * inside the append) is ignored.
 *
 * The original (Python) system's `manifest.json` — `{config, shards: ["mechint_cache/x.pt", ...],
 * total_shards, analysis_history}`, written at the end of a run — is recognised too
 * (readManifestFile), and kept as `manifest.original.json` when mechint writes into its directory.
 */
import { readFile, readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { MANIFEST_FILE, MANIFEST_VERSION } from '../constants.js';
import { ManifestError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

/** Where a shard's bytes are: only on local disk, waiting for upload, or uploaded. */
export type UploadState = 'local' | 'pending' | 'uploaded';

export interface ShardRecord {
  file: string;
  /** `file:///abs/path` or `s3://bucket/key`. */
  uri: string;
  shard_id: number;
  global_step: number;
  epoch: number | null;
  batch_idx: number | null;
  rank: number;
  /** Samples (first dimension) stored per layer. */
  rows: Record<string, number>;
  /** Full tensor shape per layer, as stored. */
  shapes: Record<string, number[]>;
  dtype: string;
  bytes: number;
  sha256: string;
  created: string;
  upload: UploadState;
  /** With storage_backend 's3' or 'both': where the shard goes in the store (`s3://bucket/prefix/file`). */
  remote_uri?: string;
  /** 'safetensors' (default when absent) or 'pt'. */
  format?: 'safetensors' | 'pt';
}

export interface AnalysisHistoryEntry {
  timestamp: string;
  analyses: string[];
  layers: string[];
  output?: string;
}

/** Why a run failed, as the manifest records it. */
export interface ManifestFailure {
  code: string;
  message: string;
  at: string;
}

export interface Manifest {
  format: 'mechint-manifest';
  version: number;
  created: string;
  updated: string;
  /** 'failed': the run stopped on an error (`error` says which); its listed shards are intact. */
  status: 'running' | 'complete' | 'failed';
  error?: ManifestFailure | null;
  rank: number;
  config: Record<string, unknown>;
  /** Per layer: the shape of one sample and the dtype. */
  layers: Record<string, { sample_shape: number[]; dtype: string }>;
  shards: ShardRecord[];
  total_shards: number;
  /** One entry per run that wrote here; `status`/`error` say how it ended (a later run's status replaces the top-level one). */
  runs: { started: string; ended: string | null; first_shard_id: number; status?: Manifest['status']; error?: ManifestFailure | null }[];
  analysis_history: AnalysisHistoryEntry[];
  /** The last journal line this snapshot includes. */
  journal_seq?: number;
}

/** The fields of a shard record that change after it is written (its upload). */
export type ShardPatch = Partial<Pick<ShardRecord, 'upload' | 'uri' | 'remote_uri'>>;

/** One line of the journal. */
export type JournalEntry =
  | { seq: number; op: 'shard'; shard: ShardRecord; layers: Manifest['layers'] }
  | { seq: number; op: 'update'; file: string; patch: ShardPatch }
  | { seq: number; op: 'status'; status: Manifest['status']; error?: ManifestFailure | null; run_ended?: string };

/** What `readManifestFile` found: a mechint manifest, or the original system's. */
export type AnyManifest = { kind: 'mechint'; manifest: Manifest } | { kind: 'original'; manifest: OriginalManifest };

/** The original system's manifest, as its hooks.py writes it at the end of training. */
export interface OriginalManifest {
  /** Where it was read from. */
  source: string;
  /** The guide's config keys (snake_case), as the original recorded them. */
  config: Record<string, unknown>;
  /** The shard paths exactly as written (relative to the training run's working directory, or absolute). */
  paths: string[];
  /** Their file names, looked up in the manifest's own directory. */
  files: string[];
  total_shards: number;
  analysis_history: unknown[];
}

/** The journal beside a manifest: `manifest.json` → `manifest.log`. */
export function journalFileName(manifestFile: string): string {
  return manifestFile.replace(/\.json$/, '') + '.log';
}

export function manifestFileName(rank: number, perRank: boolean): string {
  return perRank ? `manifest_rank_${rank}.json` : MANIFEST_FILE;
}

/** Names of mechint manifests (`manifest.json`, `manifest_rank_N.json`). */
export const MANIFEST_NAME_PATTERN = /^manifest(_rank_\d+)?\.json$/;
/** Names under which mechint keeps an original system's manifest it found. */
export const ORIGINAL_MANIFEST_PATTERN = /^manifest\.original(\.\d+)?\.json$/;

export function emptyManifest(config: Record<string, unknown>, rank: number): Manifest {
  const now = new Date().toISOString();
  return {
    format: 'mechint-manifest',
    version: MANIFEST_VERSION,
    created: now,
    updated: now,
    status: 'running',
    error: null,
    rank,
    config,
    layers: {},
    shards: [],
    total_shards: 0,
    runs: [],
    analysis_history: [],
    journal_seq: 0,
  };
}

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new ManifestError(`${source} is not valid JSON (${(cause as Error).message}); restore it from a copy, or move it away to start a new manifest (the shards in the directory are adopted again)`, { cause });
  }
}

/** True for the original system's manifest: `shards` is a list of path strings and there is no mechint `format`. */
function isOriginal(m: unknown): boolean {
  if (m === null || typeof m !== 'object') return false;
  const o = m as Record<string, unknown>;
  return o.format !== 'mechint-manifest' && Array.isArray(o.shards) && o.shards.every((s) => typeof s === 'string');
}

function toOriginal(m: Record<string, unknown>, source: string): OriginalManifest {
  const paths = m.shards as string[];
  const files = paths.map((p, i) => {
    const file = basename(p.replace(/\\/g, '/'));
    if (file === '' || file === '.' || file === '..') throw new ManifestError(`${source}: shards[${i}] is not a file path; got ${JSON.stringify(p)}`);
    return file;
  });
  const config = m.config !== null && typeof m.config === 'object' && !Array.isArray(m.config) ? (m.config as Record<string, unknown>) : {};
  return {
    source,
    config,
    paths,
    files,
    total_shards: typeof m.total_shards === 'number' ? m.total_shards : paths.length,
    analysis_history: Array.isArray(m.analysis_history) ? m.analysis_history : [],
  };
}

function checkMechint(m: unknown, source: string): Manifest {
  if (m === null || typeof m !== 'object' || !Array.isArray((m as Manifest).shards)) {
    throw new ManifestError(`${source} has no \`shards\` array; is it a mechint manifest?`);
  }
  const manifest = m as Manifest;
  for (const [i, s] of manifest.shards.entries()) {
    if (typeof s?.file !== 'string' || /[\\/]/.test(s.file) || s.file.startsWith('.')) {
      throw new ManifestError(`${source}: shards[${i}].file must be a plain file name; got ${JSON.stringify(s?.file)}`);
    }
    if (typeof s.sha256 !== 'string' || typeof s.bytes !== 'number') throw new ManifestError(`${source}: shards[${i}] (${s.file}) lacks sha256 or bytes`);
  }
  manifest.analysis_history ??= [];
  manifest.runs ??= [];
  manifest.layers ??= {};
  manifest.error ??= null;
  manifest.journal_seq ??= 0;
  return manifest;
}

/** Parses either kind of manifest. */
export function parseAnyManifest(text: string, source: string): AnyManifest {
  const m = parseJson(text, source);
  if (isOriginal(m)) return { kind: 'original', manifest: toOriginal(m as Record<string, unknown>, source) };
  return { kind: 'mechint', manifest: checkMechint(m, source) };
}

/** Parses mechint manifest JSON, checking the fields readers rely on. An original system's manifest is refused with a clear message. */
export function parseManifest(text: string, source: string): Manifest {
  const any = parseAnyManifest(text, source);
  if (any.kind === 'original') throw originalRefused(source);
  return any.manifest;
}

function originalRefused(source: string): ManifestError {
  return new ManifestError(`${source} is the original (Python) system's manifest (shards as path strings); ShardReader and \`mechint inspect\` read it, and a mechint run in its directory keeps it as manifest.original.json`);
}

/** Applies one journal line to a manifest. */
export function applyJournalEntry(manifest: Manifest, e: JournalEntry): void {
  if (e.op === 'shard') {
    const i = manifest.shards.findIndex((s) => s.file === e.shard.file);
    if (i >= 0) manifest.shards[i] = e.shard;
    else manifest.shards.push(e.shard);
    Object.assign(manifest.layers, e.layers);
  } else if (e.op === 'update') {
    const r = manifest.shards.find((s) => s.file === e.file);
    if (r) Object.assign(r, e.patch);
  } else if (e.op === 'status') {
    manifest.status = e.status;
    if (e.error !== undefined) manifest.error = e.error;
    const run = manifest.runs.at(-1);
    if (run) {
      run.status = e.status;
      if (e.error !== undefined) run.error = e.error;
      if (e.run_ended) run.ended = e.run_ended;
    }
  }
  manifest.total_shards = manifest.shards.length;
  if (e.seq > (manifest.journal_seq ?? 0)) manifest.journal_seq = e.seq;
}

/** The journal's complete lines. A torn last line (no newline: a crash inside the append) is ignored. */
export function parseJournal(text: string, source: string): JournalEntry[] {
  const lines = text.split('\n');
  lines.pop(); // after the last newline: empty, or a torn line
  const out: JournalEntry[] = [];
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    let e: JournalEntry;
    try {
      e = JSON.parse(line) as JournalEntry;
    } catch (cause) {
      throw new ManifestError(`${source}: line ${i + 1} is not valid JSON; the journal is damaged (move it away to fall back to the snapshot; shards it listed are adopted again)`, { cause });
    }
    if (typeof e?.seq !== 'number' || !['shard', 'update', 'status'].includes(e.op)) throw new ManifestError(`${source}: line ${i + 1} is not a journal entry`);
    out.push(e);
  }
  return out;
}

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ManifestError(`Cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Reads `dir/<name>` of either kind; a mechint manifest comes merged with its journal. Null when
 * there is neither. The journal is read first (see the top of this file).
 */
export async function readManifestFile(dir: string, name = MANIFEST_FILE): Promise<AnyManifest | null> {
  const journalPath = join(dir, journalFileName(name));
  const journalText = MANIFEST_NAME_PATTERN.test(name) ? await readText(journalPath) : null;
  const path = join(dir, name);
  const text = await readText(path);
  if (text === null && !journalText) return null;
  const any: AnyManifest = text === null ? { kind: 'mechint', manifest: emptyManifest({}, 0) } : parseAnyManifest(text, path);
  if (any.kind === 'mechint' && journalText) {
    const since = any.manifest.journal_seq ?? 0;
    for (const e of parseJournal(journalText, journalPath)) if (e.seq > since) applyJournalEntry(any.manifest, e);
  }
  return any;
}

/** Reads the mechint manifest `dir/<name>` merged with its journal; null when there is none. */
export async function readManifest(dir: string, name = MANIFEST_FILE): Promise<Manifest | null> {
  const any = await readManifestFile(dir, name);
  if (any?.kind === 'original') throw originalRefused(any.manifest.source);
  return any?.manifest ?? null;
}

/** Writes the snapshot `dir/<name>` atomically (the journal lines it includes are then ignored). */
export async function writeManifest(dir: string, manifest: Manifest, name = MANIFEST_FILE): Promise<void> {
  manifest.updated = new Date().toISOString();
  manifest.total_shards = manifest.shards.length;
  await writeFileAtomic(join(dir, name), [Buffer.from(JSON.stringify(manifest, null, 2) + '\n', 'utf8')]);
}

/** The manifests in a directory: mechint ones (merged with their journals) and original ones. */
export async function manifestsInDir(dir: string): Promise<{ manifests: Manifest[]; originals: OriginalManifest[] }> {
  const names = (await readdir(dir)).filter((f) => MANIFEST_NAME_PATTERN.test(f) || ORIGINAL_MANIFEST_PATTERN.test(f)).sort();
  const manifests: Manifest[] = [];
  const originals: OriginalManifest[] = [];
  for (const name of names) {
    const any = await readManifestFile(dir, name);
    if (!any) continue;
    if (any.kind === 'mechint') manifests.push(any.manifest);
    else originals.push(any.manifest);
  }
  return { manifests, originals };
}
