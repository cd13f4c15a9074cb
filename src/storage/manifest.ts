/**
 * manifest.json: the record of every shard in a storage directory, rewritten atomically after
 * every shard (not only at the end of training), so a crash loses at most the shard being written.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
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
}

export interface AnalysisHistoryEntry {
  timestamp: string;
  analyses: string[];
  layers: string[];
  output?: string;
}

export interface Manifest {
  format: 'mechint-manifest';
  version: number;
  created: string;
  updated: string;
  status: 'running' | 'complete';
  rank: number;
  config: Record<string, unknown>;
  /** Per layer: the shape of one sample and the dtype. */
  layers: Record<string, { sample_shape: number[]; dtype: string }>;
  shards: ShardRecord[];
  total_shards: number;
  runs: { started: string; ended: string | null; first_shard_id: number }[];
  analysis_history: AnalysisHistoryEntry[];
}

export function manifestFileName(rank: number, perRank: boolean): string {
  return perRank ? `manifest_rank_${rank}.json` : MANIFEST_FILE;
}

export function emptyManifest(config: Record<string, unknown>, rank: number): Manifest {
  const now = new Date().toISOString();
  return {
    format: 'mechint-manifest',
    version: MANIFEST_VERSION,
    created: now,
    updated: now,
    status: 'running',
    rank,
    config,
    layers: {},
    shards: [],
    total_shards: 0,
    runs: [],
    analysis_history: [],
  };
}

/** Parses manifest JSON, checking the fields readers rely on. */
export function parseManifest(text: string, source: string): Manifest {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (cause) {
    throw new ManifestError(`${source} is not valid JSON`, { cause });
  }
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
  return manifest;
}

/** Reads `dir/<name>`; null when there is none. */
export async function readManifest(dir: string, name = MANIFEST_FILE): Promise<Manifest | null> {
  const path = join(dir, name);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ManifestError(`Cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseManifest(text, path);
}

export async function writeManifest(dir: string, manifest: Manifest, name = MANIFEST_FILE): Promise<void> {
  manifest.updated = new Date().toISOString();
  manifest.total_shards = manifest.shards.length;
  await writeFileAtomic(join(dir, name), [Buffer.from(JSON.stringify(manifest, null, 2) + '\n', 'utf8')]);
}
