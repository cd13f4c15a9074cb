/**
 * Reads shard directories (manifest optional: the guide's `activations_shard_*` glob works too),
 * single shard files and `s3://bucket/prefix` URLs, and streams one layer's rows in blocks.
 * Memory is bounded by the block size, not by the size of the shards: safetensors tensors are
 * read by byte range (file reads, or range GETs from S3).
 */
import { createHash } from 'node:crypto';
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseShardFileName } from '../constants.js';
import { FormatError, LayerNotFoundError, LimitError, NoShardsError, ShardChecksumError, ShardMissingError, UnsafePickleError, type MechIntError } from '../errors.js';
import { DTYPE_BYTES, toFloat32, type DType } from '../formats/dtypes.js';
import { openActivationFile } from '../formats/open-any.js';
import { parseHeaderJson, readHeaderLength, readSafetensorsHeader, type SafetensorsHeader } from '../formats/safetensors.js';
import type { RowBatch, RowSource } from './rows.js';
import { isAuxTensorName, parseAuxTensors, PROVENANCE_WIDTH, rowOrigin, type AuxRef, type RowOrigin, type SampleTensor, type ShardProvenance } from './provenance.js';
import type { RawTensor } from '../formats/dtypes.js';
import { sha256File } from './atomic.js';
import { manifestsInDir, MANIFEST_NAME_PATTERN, parseAnyManifest, type Manifest, type OriginalManifest, type ShardRecord } from './manifest.js';
import type { S3StoreOptions } from './s3-store.js';
import { isS3Url, storeFromUrl, type Store } from './store.js';

export interface ShardTensorInfo {
  dtype: DType;
  shape: number[];
  /** Absolute byte range of the tensor in the file. */
  start: number;
  end: number;
}

export interface ShardInfo {
  file: string;
  /** Absolute local path, or `s3://bucket/key` for a shard in S3. */
  path: string;
  /** safetensors shards stream by byte range; `.pt` and `.npy` files are parsed whole. */
  format: 'safetensors' | 'pt' | 'npy';
  shardId: number | null;
  globalStep: number | null;
  rank: number | null;
  bytes: number;
  metadata: Record<string, string>;
  /** The layer tensors (provenance tensors, named `@…`, are in `aux`). */
  tensors: Record<string, ShardTensorInfo>;
  /** Provenance tensors beside the layers (docs/provenance.md), by tensor name; empty for older shards. */
  aux: Record<string, ShardTensorInfo & { ref: AuxRef }>;
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

async function describe(path: string, record: ShardRecord | null): Promise<ShardInfo> {
  if (!basename(path).endsWith('.safetensors')) return describeWholeFile(path, record);
  return describeHeader(basename(path), path, await readSafetensorsHeader(path), record);
}

/**
 * `.pt` (the original system's torch.save shards, through the restricted unpickler) and `.npy`
 * files have no byte ranges to stream: they are parsed whole, one file at a time, here for their
 * shapes and again when their rows are read.
 */
async function describeWholeFile(path: string, record: ShardRecord | null): Promise<ShardInfo> {
  const opened = await openActivationFile(path);
  try {
    const file = basename(path);
    const name = parseShardFileName(file);
    const tensors: Record<string, ShardTensorInfo> = {};
    for (const layer of opened.tensorNames()) {
      const t = opened.tensorInfo(layer);
      tensors[layer] = { dtype: t.dtype, shape: t.shape, start: 0, end: t.byteLength };
    }
    const meta = opened.metadata;
    const num = (v: string | undefined) => (v !== undefined && v !== '' && Number.isFinite(Number(v)) ? Number(v) : null);
    const { layers, aux } = splitAux(tensors, meta);
    return {
      file,
      path,
      format: opened.format,
      shardId: name?.shardId ?? num(meta.shard_id),
      globalStep: name?.globalStep ?? num(meta.global_step),
      rank: name?.rank ?? num(meta.rank),
      bytes: opened.bytes,
      metadata: meta,
      tensors: layers,
      aux,
      record,
    };
  } finally {
    await opened.close();
  }
}

/** The first bytes of a remote shard hold its header; one GET usually covers it, a second fetches the rest. */
const REMOTE_HEAD_BYTES = 64 * 1024;

async function describeRemote(store: Store, file: string, size: number, record: ShardRecord | null): Promise<ShardInfo> {
  const uri = store.uri(file);
  if (!file.endsWith('.safetensors')) throw new FormatError(`${uri}: only .safetensors shards can be streamed by this reader`);
  let head = await store.getBytes(file, { start: 0, end: Math.min(size, REMOTE_HEAD_BYTES) });
  const n = readHeaderLength(head.subarray(0, 8), size, uri);
  if (head.length < 8 + n) head = Buffer.concat([head, await store.getBytes(file, { start: head.length, end: 8 + n })]);
  if (head.length < 8 + n) throw new FormatError(`${uri}: object ended inside the header`);
  const header = { ...parseHeaderJson(head.subarray(8, 8 + n), size - 8 - n, uri), fileSize: size };
  return describeHeader(file, uri, header, record);
}

function describeHeader(file: string, path: string, header: SafetensorsHeader & { fileSize: number }, record: ShardRecord | null): ShardInfo {
  const parsed = parseShardFileName(file);
  const tensors: Record<string, ShardTensorInfo> = {};
  for (const [name, e] of Object.entries(header.tensors)) {
    tensors[name] = { dtype: e.dtype, shape: e.shape, start: header.dataOffset + e.begin, end: header.dataOffset + e.end };
  }
  const metaStep = header.metadata.global_step ? Number(header.metadata.global_step) : null;
  const { layers, aux } = splitAux(tensors, header.metadata);
  return {
    file,
    path,
    format: 'safetensors',
    shardId: parsed?.shardId ?? (header.metadata.shard_id ? Number(header.metadata.shard_id) : null),
    globalStep: parsed?.globalStep ?? metaStep,
    rank: parsed?.rank ?? (header.metadata.rank ? Number(header.metadata.rank) : null),
    bytes: header.fileSize,
    metadata: header.metadata,
    tensors: layers,
    aux,
    record,
  };
}

/** Layer tensors apart from provenance tensors (`@…`), which every layer listing skips. */
function splitAux(all: Record<string, ShardTensorInfo>, metadata: Record<string, string>): { layers: Record<string, ShardTensorInfo>; aux: ShardInfo['aux'] } {
  const layers: Record<string, ShardTensorInfo> = {};
  for (const [name, t] of Object.entries(all)) if (!isAuxTensorName(name)) layers[name] = t;
  const aux: ShardInfo['aux'] = {};
  for (const [name, ref] of parseAuxTensors(Object.keys(all), metadata, Object.keys(layers))) aux[name] = { ...all[name]!, ref };
  return { layers, aux };
}

export interface OpenShardsOptions {
  /** Check each shard's sha256 against the manifest before its rows are used. @default true */
  verify?: boolean;
  /** For `s3://` paths: endpoint, path style, timeouts (credentials come from the standard AWS chain). */
  s3?: Omit<S3StoreOptions, 'bucket' | 'prefix'>;
  /** Read from this store instead of the one the path names (`path` is then only a label). */
  store?: Store;
  /**
   * A shard a manifest lists that is not there is an error (ShardMissingError, naming the files)
   * unless this is true: then the others are read and `reader.missingShards` lists the missing
   * ones, for the analyses to report. @default false
   */
  allowMissing?: boolean;
  /**
   * A shard whose file cannot be parsed (damaged header, refused pickle) fails the open unless
   * this is true: then it is left out and listed in `reader.corruptShards` (what `mechint inspect`
   * does). @default false
   */
  skipCorrupt?: boolean;
}

/** A shard file left out because it cannot be parsed. */
export interface CorruptShard {
  file: string;
  path: string;
  bytes: number | null;
  code: string;
  message: string;
}

/** Errors that mean "this file is damaged or hostile", as opposed to "the disk cannot be read". */
function isCorruption(err: unknown): err is MechIntError {
  return err instanceof FormatError || err instanceof UnsafePickleError || err instanceof LimitError;
}

function sortShards(shards: ShardInfo[]): void {
  shards.sort((a, b) => (a.rank ?? 0) - (b.rank ?? 0) || (a.shardId ?? 0) - (b.shardId ?? 0) || a.file.localeCompare(b.file));
}

function missingError(where: string, missing: string[], remoteOnly: string[], manifests: string[]): ShardMissingError {
  const list = missing.length > 8 ? `${missing.slice(0, 8).join(', ')}, … (${missing.length} in all)` : missing.join(', ');
  const remote = remoteOnly.length > 0 ? ` ${remoteOnly.length} of them were moved to S3 by storage_backend 's3' (read the s3:// URL instead).` : '';
  return new ShardMissingError(
    `${missing.length} shard(s) listed in ${manifests.join(', ') || 'the manifest'} are not in ${where}: ${list}.${remote} Restore them, or pass allowMissing: true (CLI: --allow-missing) to analyse the others and report the missing ones`,
    missing,
  );
}

/** The shards at a path: a directory (with or without a manifest) or one shard file. */
export class ShardReader {
  readonly path: string;
  readonly shards: ShardInfo[];
  /** mechint manifests (merged with their journals). */
  readonly manifests: Manifest[];
  /** Manifests of the original (Python) system: `manifest.json` as it writes it, or `manifest.original.json` kept by mechint. */
  readonly originalManifests: OriginalManifest[];
  /** Listed shards that are not there (only with allowMissing: true; otherwise opening failed). */
  readonly missingShards: string[];
  /** Shards left out because they cannot be parsed (only with skipCorrupt: true). */
  readonly corruptShards: CorruptShard[];
  private readonly verify: boolean;
  private verified = new Set<string>();
  /** The store remote shards are read from; null for local paths. */
  private readonly store: Store | null;

  private constructor(
    path: string,
    shards: ShardInfo[],
    manifests: Manifest[],
    verify: boolean,
    extra: { missing?: string[]; store?: Store | null; originals?: OriginalManifest[]; corrupt?: CorruptShard[] } = {},
  ) {
    this.path = path;
    this.missingShards = extra.missing ?? [];
    this.shards = shards;
    this.manifests = manifests;
    this.originalManifests = extra.originals ?? [];
    this.corruptShards = extra.corrupt ?? [];
    this.verify = verify;
    this.store = extra.store ?? null;
  }

  /** Files a manifest lists that are not there (the same as missingShards). */
  get missing(): string[] {
    return this.missingShards;
  }

  /** The config the run recorded: the mechint manifest's, else the original system's. */
  get config(): Record<string, unknown> | null {
    return this.manifests[0]?.config ?? this.originalManifests[0]?.config ?? null;
  }

  static async open(path: string, options: OpenShardsOptions = {}): Promise<ShardReader> {
    if (options.store || isS3Url(path)) return ShardReader.openStore(path, options.store ?? storeFromUrl(path, options.s3), options);
    const abs = resolve(path);
    let st;
    try {
      st = await stat(abs);
    } catch {
      throw new NoShardsError(`No shards at ${path}: the path does not exist`);
    }
    const verify = options.verify ?? true;
    if (st.isFile()) {
      const { manifests, originals } = await manifestsInDir(dirname(abs)).catch(() => ({ manifests: [] as Manifest[], originals: [] as OriginalManifest[] }));
      const record = manifests.flatMap((m) => m.shards).find((s) => s.file === basename(abs)) ?? null;
      return new ShardReader(abs, [await describe(abs, record)], manifests, verify, { originals });
    }
    const { manifests, originals } = await manifestsInDir(abs);
    const records = new Map(manifests.flatMap((m) => m.shards).map((s) => [s.file, s]));
    const files = new Set([...records.keys(), ...originals.flatMap((o) => o.files)]);
    // Ours (.safetensors, .pt) and the original system's (.pt), by the guide's activations_shard_* naming.
    for (const f of await readdir(abs)) if (parseShardFileName(f)) files.add(f);
    const shards: ShardInfo[] = [];
    const missing: string[] = [];
    const remoteOnly: string[] = [];
    const corrupt: CorruptShard[] = [];
    for (const f of files) {
      const p = join(abs, f);
      const fileStat = await stat(p).catch(() => null);
      if (!fileStat) {
        missing.push(f);
        const r = records.get(f);
        if (r?.upload === 'uploaded' && r.uri.startsWith('s3://')) remoteOnly.push(f);
        continue;
      }
      try {
        shards.push(await describe(p, records.get(f) ?? null));
      } catch (err) {
        if (!options.skipCorrupt || !isCorruption(err)) throw err;
        corrupt.push({ file: f, path: p, bytes: fileStat.size, code: err.code, message: err.message });
      }
    }
    const names = [...manifests.map(() => 'the manifest'), ...originals.map((o) => basename(o.source))];
    if (missing.length > 0 && !options.allowMissing) throw missingError(path, missing.sort(), remoteOnly, [...new Set(names)]);
    if (shards.length === 0 && corrupt.length === 0) {
      const why = missing.length > 0 ? `the manifest lists ${missing.length} shard(s) but none of the files exist` : 'expected activations_shard_*.safetensors (or .pt) files or a manifest.json listing them';
      throw new NoShardsError(`No shards in ${path}: ${why}`);
    }
    sortShards(shards);
    return new ShardReader(abs, shards, manifests, verify, { missing: missing.sort(), originals, corrupt });
  }

  /** Shards in a store (S3): manifests and shards directly under its prefix, headers read by range. */
  private static async openStore(label: string, store: Store, options: OpenShardsOptions): Promise<ShardReader> {
    const verify = options.verify ?? true;
    const objects = (await store.list()).filter((o) => !o.key.includes('/'));
    const manifests: Manifest[] = [];
    const originals: OriginalManifest[] = [];
    for (const o of objects.filter((x) => MANIFEST_NAME_PATTERN.test(x.key))) {
      const any = parseAnyManifest((await store.getBytes(o.key)).toString('utf8'), store.uri(o.key));
      if (any.kind === 'mechint') manifests.push(any.manifest);
      else originals.push(any.manifest);
    }
    const records = new Map(manifests.flatMap((m) => m.shards).map((s) => [s.file, s]));
    const sizes = new Map(objects.map((o) => [o.key, o.size]));
    const files = new Set(records.keys());
    for (const o of objects) if (parseShardFileName(o.key)?.ext === 'safetensors') files.add(o.key);
    const shards: ShardInfo[] = [];
    const missing: string[] = [];
    const corrupt: CorruptShard[] = [];
    for (const f of files) {
      const size = sizes.get(f);
      if (size === undefined) {
        missing.push(f);
        continue;
      }
      try {
        shards.push(await describeRemote(store, f, size, records.get(f) ?? null));
      } catch (err) {
        if (!options.skipCorrupt || !isCorruption(err)) throw err;
        corrupt.push({ file: f, path: store.uri(f), bytes: size, code: err.code, message: err.message });
      }
    }
    if (missing.length > 0 && !options.allowMissing) throw missingError(store.url, missing.sort(), [], ['the manifest']);
    if (shards.length === 0 && corrupt.length === 0) {
      const why = missing.length > 0 ? `the manifest lists ${missing.length} shard(s) but none of them is in the bucket` : 'expected activations_shard_*.safetensors objects or a manifest.json listing them';
      throw new NoShardsError(`No shards under ${store.url}: ${why}`);
    }
    sortShards(shards);
    return new ShardReader(label, shards, manifests, verify, { missing: missing.sort(), store, originals, corrupt });
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
    const actual = await this.sha256Of(shard);
    if (actual !== shard.record.sha256) {
      throw new ShardChecksumError(`${shard.file}: sha256 ${actual} does not match the manifest's ${shard.record.sha256}; the file changed or is damaged`);
    }
    this.verified.add(shard.path);
  }

  /** sha256 of a shard's bytes, streamed from disk or from the store. */
  async sha256Of(shard: ShardInfo): Promise<string> {
    if (!this.store) return sha256File(shard.path);
    const hash = createHash('sha256');
    for await (const chunk of await this.store.get(shard.file)) hash.update(chunk as Buffer);
    return hash.digest('hex');
  }

  /**
   * Streams a layer's rows (of its last dimension) in blocks of at most `blockRows`. With
   * `provenance: true` each block carries its rows' provenance (`RowBatch.provenance`), where the
   * shard has it.
   */
  rows(layer: string, options: { blockRows?: number; provenance?: boolean } = {}): RowSource {
    const summary = this.layer(layer);
    const blockRows = Math.max(1, options.blockRows ?? 8192);
    const reader = this;
    return async function* (): AsyncGenerator<RowBatch> {
      for (const shard of reader.shards) {
        const t = shard.tensors[layer];
        if (!t) continue;
        if (reader.verify) await reader.verifyShard(shard);
        const table = options.provenance ? ((await reader.shardProvenance(layer, shard, { tableOnly: true }))?.table ?? null) : null;
        const blocks = reader.store
          ? readRemoteRows(reader.store, shard, t, summary.dim, blockRows)
          : shard.format === 'safetensors'
            ? readRows(shard, t, summary.dim, blockRows)
            : readWholeFileRows(shard, layer, summary.dim, blockRows);
        for await (const b of blocks) {
          const start = (b.rowOffset ?? 0) * PROVENANCE_WIDTH;
          if (table && table.length >= start + b.nRows * PROVENANCE_WIDTH) b.provenance = table.subarray(start, start + b.nRows * PROVENANCE_WIDTH);
          yield b;
        }
      }
    };
  }

  /** Whether any shard holds provenance for `layer`. */
  hasProvenance(layer: string): boolean {
    return this.shards.some((s) => Object.values(s.aux).some((a) => a.ref.layer === layer && a.ref.kind === 'provenance'));
  }

  /**
   * The provenance of a layer, one entry per shard that holds the layer (in the order `rows`
   * yields them): the row → (step, epoch, batch, row, position) table, and the captured inputs,
   * targets and ids per sample. A shard without provenance (written before it existed, or by the
   * original system) gives `table: null` and empty inputs: not an error.
   */
  async provenance(layer: string): Promise<ShardProvenance[]> {
    this.layer(layer);
    const out: ShardProvenance[] = [];
    for (const shard of this.shards) {
      const p = await this.shardProvenance(layer, shard);
      if (p) out.push(p);
    }
    return out;
  }

  /**
   * One shard's provenance of a layer (by file name or ShardInfo); null when the shard does not
   * hold the layer. `tableOnly` skips the inputs, targets and ids.
   */
  async shardProvenance(layer: string, shard: string | ShardInfo, options: { tableOnly?: boolean } = {}): Promise<ShardProvenance | null> {
    const info = typeof shard === 'string' ? this.shards.find((s) => s.file === shard) : shard;
    const t = info?.tensors[layer];
    if (!info || !t) return null;
    const key = `${info.path}\u0000${layer}\u0000${options.tableOnly ? 1 : 0}`;
    const cached = this.provenanceCache.get(key);
    if (cached) return cached;
    if (this.verify) await this.verifyShard(info);
    const dim = t.shape.length <= 1 ? 1 : t.shape.at(-1)!;
    const nRows = dim === 0 ? 0 : t.shape.reduce((a, d) => a * d, 1) / dim;
    const samples = t.shape[0] ?? nRows;
    const out: ShardProvenance = { shard: info.file, layer, nRows, rowsPerSample: samples === 0 ? 0 : nRows / samples, table: null, inputs: {}, targets: {}, ids: null };
    for (const [name, a] of Object.entries(info.aux)) {
      if (a.ref.layer !== layer || (options.tableOnly && a.ref.kind !== 'provenance')) continue;
      const raw = await this.readAux(info, name, a);
      if (a.ref.kind === 'provenance') {
        const v = sampleTensor(raw).values;
        if (raw.dtype === 'I32' && raw.shape.length === 2 && raw.shape[0] === nRows && raw.shape[1] === PROVENANCE_WIDTH) out.table = v as Int32Array;
      } else if (raw.shape[0] === samples) {
        if (a.ref.kind === 'ids') out.ids = sampleTensor(raw);
        else out[a.ref.kind][a.ref.name ?? ''] = sampleTensor(raw);
      }
    }
    // The last few lookups stay: top examples ask for rows of the same shards again and again.
    if (this.provenanceCache.size >= 8) this.provenanceCache.delete(this.provenanceCache.keys().next().value!);
    this.provenanceCache.set(key, out);
    return out;
  }

  /**
   * Where rows came from: for each `{shard, row}` (a RowBatch's `shard` and `rowOffset + i`),
   * its provenance and its sample's captured inputs, targets and id (what is there).
   */
  async rowOrigins(layer: string, refs: readonly { shard: string; row: number }[]): Promise<RowOrigin[]> {
    const out: RowOrigin[] = [];
    for (const r of refs) {
      const p = await this.shardProvenance(layer, r.shard);
      out.push(p ? rowOrigin(p, r.row) : { shard: r.shard, shardRow: r.row, sample: r.row });
    }
    return out;
  }

  private provenanceCache = new Map<string, ShardProvenance>();

  /** One aux tensor's bytes: by range for safetensors (local or remote), else from the parsed file. */
  private async readAux(shard: ShardInfo, name: string, t: ShardTensorInfo): Promise<RawTensor> {
    if (t.end <= t.start && shard.format === 'safetensors') return { dtype: t.dtype, shape: t.shape, data: new Uint8Array(0) };
    if (this.store) {
      const bytes = await this.store.getBytes(shard.file, { start: t.start, end: t.end });
      return { dtype: t.dtype, shape: t.shape, data: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
    }
    if (shard.format === 'safetensors') {
      const fh = await open(shard.path, 'r');
      try {
        const buf = Buffer.alloc(t.end - t.start);
        const { bytesRead } = await fh.read(buf, 0, buf.length, t.start);
        if (bytesRead !== buf.length) throw new FormatError(`${shard.file}: ended early while reading \`${name}\``);
        return { dtype: t.dtype, shape: t.shape, data: new Uint8Array(buf.buffer, buf.byteOffset, buf.length) };
      } finally {
        await fh.close();
      }
    }
    const file = await openActivationFile(shard.path);
    try {
      // readRows counts rows of the last dimension.
      const n = t.shape.reduce((a, d) => a * d, 1);
      const last = t.shape.length <= 1 ? 1 : t.shape.at(-1)!;
      const raw = await file.readRows(name, 0, last === 0 ? 0 : n / last);
      return { ...raw, shape: t.shape };
    } finally {
      await file.close();
    }
  }
}

/** A stored per-sample tensor as typed values (int32 and float64 kept exact, others as float32). */
function sampleTensor(raw: RawTensor): SampleTensor {
  const copy = raw.data.slice();
  const n = raw.shape.reduce((a, d) => a * d, 1);
  if (raw.dtype === 'I32') return { dtype: 'I32', shape: raw.shape, values: new Int32Array(copy.buffer, 0, n) };
  if (raw.dtype === 'F64') return { dtype: 'F64', shape: raw.shape, values: new Float64Array(copy.buffer, 0, n) };
  return { dtype: 'F32', shape: raw.shape, values: Float32Array.from(toFloat32(raw)) };
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

async function* readWholeFileRows(shard: ShardInfo, layer: string, dim: number, blockRows: number): AsyncGenerator<RowBatch> {
  const file = await openActivationFile(shard.path);
  try {
    if (!file.tensorNames().includes(layer)) throw new FormatError(`${shard.file} no longer holds \`${layer}\``);
    const total = dim === 0 ? 0 : file.tensorInfo(layer).shape.reduce((a, d) => a * d, 1) / dim;
    for (let row = 0; row < total; row += blockRows) {
      const n = Math.min(blockRows, total - row);
      const rows = toFloat32(await file.readRows(layer, row, row + n));
      yield { rows, nRows: n, dim, shard: shard.file, globalStep: shard.globalStep ?? undefined, rowOffset: row };
    }
  } finally {
    await file.close();
  }
}

/** As readRows, from one range GET cut into blocks as the bytes arrive. */
async function* readRemoteRows(store: Store, shard: ShardInfo, t: ShardTensorInfo, dim: number, blockRows: number): AsyncGenerator<RowBatch> {
  const width = DTYPE_BYTES[t.dtype];
  const rowBytes = width * dim;
  const total = (t.end - t.start) / rowBytes;
  if (total === 0) return;
  const stream = await store.get(shard.file, { start: t.start, end: t.end });
  // A fresh buffer per block: consumers may keep the rows they were given.
  const nextBlock = (row: number) => new Uint8Array(Math.min(blockRows, total - row) * rowBytes);
  let row = 0;
  let block = nextBlock(0);
  let fill = 0;
  try {
    for await (const chunk of stream) {
      let c = chunk as Uint8Array;
      while (c.length > 0 && row < total) {
        const take = Math.min(c.length, block.length - fill);
        block.set(c.subarray(0, take), fill);
        fill += take;
        c = c.subarray(take);
        if (fill === block.length) {
          const n = block.length / rowBytes;
          const rows = t.dtype === 'F32' ? new Float32Array(block.buffer, 0, n * dim) : toFloat32({ dtype: t.dtype, shape: [n, dim], data: block });
          yield { rows, nRows: n, dim, shard: shard.file, globalStep: shard.globalStep ?? undefined, rowOffset: row };
          row += n;
          if (row < total) block = nextBlock(row);
          fill = 0;
        }
      }
    }
  } finally {
    stream.destroy();
  }
  if (row < total) throw new FormatError(`${shard.path}: ended early while reading rows ${row}..${total}`);
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
