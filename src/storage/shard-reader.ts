/**
 * Reads shard directories (manifest optional: the guide's `activations_shard_*` glob works too)
 * and single shard files, and streams one layer's rows in blocks. Memory is bounded by the block
 * size, not by the size of the shards: safetensors tensors are read by byte range.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { MANIFEST_FILE, parseShardFileName } from '../constants.js';
import { NoShardsError, ShardChecksumError, FormatError, LayerNotFoundError } from '../errors.js';
import { DTYPE_BYTES, toFloat32, type DType } from '../formats/dtypes.js';
import { readSafetensorsHeader } from '../formats/safetensors.js';
import type { RowBatch, RowSource } from './rows.js';
import { sha256File } from './atomic.js';
import { readManifest, type Manifest, type ShardRecord } from './manifest.js';

export interface ShardTensorInfo {
  dtype: DType;
  shape: number[];
  /** Absolute byte range of the tensor in the file. */
  start: number;
  end: number;
}

export interface ShardInfo {
  file: string;
  path: string;
  shardId: number | null;
  globalStep: number | null;
  rank: number | null;
  bytes: number;
  metadata: Record<string, string>;
  tensors: Record<string, ShardTensorInfo>;
  /** What the manifest says of this shard, when one lists it. */
  record: ShardRecord | null;
}

export interface LayerSummary {
  name: string;
  /** Shape of one row set as stored per shard, without the first dimension. */
  sampleShape: number[];
  /** Length of one analysis row (the last dimension). */
  dim: number;
  dtype: DType;
  /** Rows of `dim` over all shards ([B,T,D] counts B·T). */
  rows: number;
  /** Samples (first dimension) over all shards. */
  samples: number;
  shards: number;
  steps: number[];
}

async function manifestsIn(dir: string): Promise<Manifest[]> {
  const names = (await readdir(dir)).filter((f) => f === MANIFEST_FILE || /^manifest_rank_\d+\.json$/.test(f)).sort();
  const out: Manifest[] = [];
  for (const name of names) {
    const m = await readManifest(dir, name);
    if (m) out.push(m);
  }
  return out;
}

async function describe(path: string, record: ShardRecord | null): Promise<ShardInfo> {
  const file = basename(path);
  const parsed = parseShardFileName(file);
  if (!file.endsWith('.safetensors')) {
    throw new FormatError(`${path}: only .safetensors shards can be streamed by this reader`);
  }
  const header = await readSafetensorsHeader(path);
  const tensors: Record<string, ShardTensorInfo> = {};
  for (const [name, e] of Object.entries(header.tensors)) {
    tensors[name] = { dtype: e.dtype, shape: e.shape, start: header.dataOffset + e.begin, end: header.dataOffset + e.end };
  }
  const metaStep = header.metadata.global_step ? Number(header.metadata.global_step) : null;
  return {
    file,
    path,
    shardId: parsed?.shardId ?? (header.metadata.shard_id ? Number(header.metadata.shard_id) : null),
    globalStep: parsed?.globalStep ?? metaStep,
    rank: parsed?.rank ?? (header.metadata.rank ? Number(header.metadata.rank) : null),
    bytes: header.fileSize,
    metadata: header.metadata,
    tensors,
    record,
  };
}

export interface OpenShardsOptions {
  /** Check each shard's sha256 against the manifest before its rows are used. @default true */
  verify?: boolean;
}

/** The shards at a path: a directory (with or without a manifest) or one shard file. */
export class ShardReader {
  readonly path: string;
  readonly shards: ShardInfo[];
  readonly manifests: Manifest[];
  /** Files a manifest lists that are not on disk. */
  readonly missing: string[];
  private readonly verify: boolean;
  private verified = new Set<string>();

  private constructor(path: string, shards: ShardInfo[], manifests: Manifest[], verify: boolean, missing: string[] = []) {
    this.path = path;
    this.missing = missing;
    this.shards = shards;
    this.manifests = manifests;
    this.verify = verify;
  }

  static async open(path: string, options: OpenShardsOptions = {}): Promise<ShardReader> {
    const abs = resolve(path);
    let st;
    try {
      st = await stat(abs);
    } catch {
      throw new NoShardsError(`No shards at ${path}: the path does not exist`);
    }
    const verify = options.verify ?? true;
    if (st.isFile()) {
      const manifests = await manifestsIn(dirname(abs)).catch(() => []);
      const record = manifests.flatMap((m) => m.shards).find((s) => s.file === basename(abs)) ?? null;
      return new ShardReader(abs, [await describe(abs, record)], manifests, verify);
    }
    const manifests = await manifestsIn(abs);
    const records = new Map(manifests.flatMap((m) => m.shards).map((s) => [s.file, s]));
    const files = new Set(records.keys());
    for (const f of await readdir(abs)) if (parseShardFileName(f)?.ext === 'safetensors') files.add(f);
    const shards: ShardInfo[] = [];
    const missing: string[] = [];
    for (const f of files) {
      const p = join(abs, f);
      const exists = await stat(p).then(() => true, () => false);
      if (exists) shards.push(await describe(p, records.get(f) ?? null));
      else missing.push(f);
    }
    if (shards.length === 0) {
      const why = missing.length > 0 ? `the manifest lists ${missing.length} shard(s) but none of the files exist` : 'expected activations_shard_*.safetensors files or a manifest.json listing them';
      throw new NoShardsError(`No shards in ${path}: ${why}`);
    }
    shards.sort((a, b) => (a.rank ?? 0) - (b.rank ?? 0) || (a.shardId ?? 0) - (b.shardId ?? 0) || a.file.localeCompare(b.file));
    return new ShardReader(abs, shards, manifests, verify, missing);
  }

  /** The layers over all shards, with their shapes, rows and steps. */
  layers(): LayerSummary[] {
    const out = new Map<string, LayerSummary>();
    for (const s of this.shards) {
      for (const [name, t] of Object.entries(s.tensors)) {
        const dim = t.shape.length <= 1 ? 1 : t.shape.at(-1)!;
        const rows = dim === 0 ? 0 : t.shape.reduce((a, d) => a * d, 1) / dim;
        const entry = out.get(name) ?? { name, sampleShape: t.shape.slice(1), dim, dtype: t.dtype, rows: 0, samples: 0, shards: 0, steps: [] };
        if (entry.dim !== dim) throw new FormatError(`Layer \`${name}\` has rows of ${entry.dim} in one shard and ${dim} in ${s.file}`);
        entry.rows += rows;
        entry.samples += t.shape[0] ?? 1;
        entry.shards += 1;
        if (s.globalStep !== null && !entry.steps.includes(s.globalStep)) entry.steps.push(s.globalStep);
        out.set(name, entry);
      }
    }
    return [...out.values()];
  }

  layer(name: string): LayerSummary {
    const found = this.layers().find((l) => l.name === name);
    if (!found) throw new LayerNotFoundError(`No layer \`${name}\` in the shards at ${this.path}; they hold ${this.layers().map((l) => l.name).join(', ')}`);
    return found;
  }

  /** Checks a shard's bytes against the manifest's sha256 (once per shard); shards no manifest lists pass. */
  async verifyShard(shard: ShardInfo): Promise<void> {
    if (!shard.record || this.verified.has(shard.path)) return;
    const actual = await sha256File(shard.path);
    if (actual !== shard.record.sha256) {
      throw new ShardChecksumError(`${shard.file}: sha256 ${actual} does not match the manifest's ${shard.record.sha256}; the file changed or is damaged`);
    }
    this.verified.add(shard.path);
  }

  /** Streams a layer's rows (of its last dimension) in blocks of at most `blockRows`. */
  rows(layer: string, options: { blockRows?: number } = {}): RowSource {
    const summary = this.layer(layer);
    const blockRows = Math.max(1, options.blockRows ?? 8192);
    const reader = this;
    return async function* (): AsyncGenerator<RowBatch> {
      for (const shard of reader.shards) {
        const t = shard.tensors[layer];
        if (!t) continue;
        if (reader.verify) await reader.verifyShard(shard);
        yield* readRows(shard, t, summary.dim, blockRows);
      }
    };
  }
}

async function* readRows(shard: ShardInfo, t: ShardTensorInfo, dim: number, blockRows: number): AsyncGenerator<RowBatch> {
  const width = DTYPE_BYTES[t.dtype];
  const total = (t.end - t.start) / (width * dim);
  if (total === 0) return;
  const fh = await open(shard.path, 'r');
  try {
    for (let row = 0; row < total; row += blockRows) {
      const n = Math.min(blockRows, total - row);
      const buf = Buffer.allocUnsafe(n * dim * width);
      const { bytesRead } = await fh.read(buf, 0, buf.length, t.start + row * dim * width);
      if (bytesRead !== buf.length) throw new FormatError(`${shard.file}: ended early while reading rows ${row}..${row + n}`);
      const data = new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
      const rows = t.dtype === 'F32' && buf.byteOffset % 4 === 0 ? new Float32Array(buf.buffer, buf.byteOffset, n * dim) : toFloat32({ dtype: t.dtype, shape: [n, dim], data });
      yield { rows, nRows: n, dim, shard: shard.file, globalStep: shard.globalStep ?? undefined, rowOffset: row };
    }
  } finally {
    await fh.close();
  }
}

/** Loads a whole layer into memory (for small data and tests): rows × dim. */
export async function loadLayerMatrix(source: RowSource): Promise<{ rows: Float32Array; nRows: number; dim: number }> {
  const blocks: RowBatch[] = [];
  let nRows = 0;
  let dim = 0;
  for await (const b of source()) {
    blocks.push({ ...b, rows: b.rows.slice() });
    nRows += b.nRows;
    dim = b.dim;
  }
  const rows = new Float32Array(nRows * dim);
  let offset = 0;
  for (const b of blocks) {
    rows.set(b.rows, offset);
    offset += b.rows.length;
  }
  return { rows, nRows, dim };
}
