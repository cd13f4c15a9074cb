/**
 * Provenance of captured rows: the tensors a shard holds beside its layer tensors, and how their
 * names are spelled. Every name starts with `@`, which mechint never gives a layer (the sampler
 * refuses to capture a layer path starting with `@`, and the original system's `named_modules()`
 * paths are Python identifiers), so they cannot collide with a layer and every consumer that
 * lists layers skips them (`isAuxTensorName`).
 *
 * - `@provenance.<layer>`: int32 `[rows, 5]`, one line per analysis row of the layer (a [B,T,D]
 *   output stores T rows per sample), columns PROVENANCE_COLUMNS; -1 where a value is unknown.
 * - `@inputs.<layer>.<input>`: the model input `<input>` of each sample, `[samples, ...inputShape]`.
 * - `@targets.<layer>.<output>`: the target of output `<output>` per sample.
 * - `@ids.<layer>`: the per-sample ids the data gave, `[samples]`.
 * Sample `s` of a layer holds rows `s·rowsPerSample … (s+1)·rowsPerSample − 1`.
 * Layer and input names may contain dots, so the exact split is recorded in the metadata key
 * AUX_METADATA_KEY (JSON: tensor name → [kind, layer, name?]).
 */
import type { DType } from '../formats/dtypes.js';

export const PROVENANCE_COLUMNS = ['step', 'epoch', 'batch', 'row', 'position'] as const;
export type ProvenanceColumn = (typeof PROVENANCE_COLUMNS)[number];
export const PROVENANCE_WIDTH = PROVENANCE_COLUMNS.length;

/** The metadata key that maps each aux tensor to what it is. */
export const AUX_METADATA_KEY = 'mechint_aux';

export type AuxKind = 'provenance' | 'inputs' | 'targets' | 'ids';
export const AUX_KINDS: readonly AuxKind[] = ['provenance', 'inputs', 'targets', 'ids'];

export interface AuxRef {
  kind: AuxKind;
  layer: string;
  /** The input or output name (inputs, targets). */
  name?: string;
}

/** The reserved prefix of non-layer tensors. */
export const AUX_PREFIX = '@';

export function isAuxTensorName(name: string): boolean {
  return name.startsWith(AUX_PREFIX);
}

export function auxTensorName(ref: AuxRef): string {
  return ref.name === undefined ? `@${ref.kind}.${ref.layer}` : `@${ref.kind}.${ref.layer}.${ref.name}`;
}

/** The metadata value recording every aux tensor of a shard. */
export function encodeAuxMap(refs: Iterable<AuxRef>): string {
  const out: Record<string, [AuxKind, string] | [AuxKind, string, string]> = {};
  for (const r of refs) out[auxTensorName(r)] = r.name === undefined ? [r.kind, r.layer] : [r.kind, r.layer, r.name];
  return JSON.stringify(out);
}

/**
 * What each aux tensor of a shard is: from the metadata map, else (a shard written without it)
 * by its name, taking the longest layer name that fits.
 */
export function parseAuxTensors(names: Iterable<string>, metadata: Record<string, string>, layers: readonly string[]): Map<string, AuxRef> {
  let recorded: Record<string, unknown> = {};
  try {
    const v = metadata[AUX_METADATA_KEY] ? (JSON.parse(metadata[AUX_METADATA_KEY]) as unknown) : {};
    if (v && typeof v === 'object' && !Array.isArray(v)) recorded = v as Record<string, unknown>;
  } catch {
    recorded = {};
  }
  const out = new Map<string, AuxRef>();
  const byLength = [...layers].sort((a, b) => b.length - a.length);
  for (const name of names) {
    if (!isAuxTensorName(name)) continue;
    const r = recorded[name];
    if (Array.isArray(r) && AUX_KINDS.includes(r[0] as AuxKind) && typeof r[1] === 'string') {
      out.set(name, { kind: r[0] as AuxKind, layer: r[1], ...(typeof r[2] === 'string' ? { name: r[2] } : {}) });
      continue;
    }
    const dot = name.indexOf('.');
    const kind = name.slice(1, dot) as AuxKind;
    if (dot < 0 || !AUX_KINDS.includes(kind)) continue;
    const rest = name.slice(dot + 1);
    if (kind === 'provenance' || kind === 'ids') out.set(name, { kind, layer: rest });
    else {
      const layer = byLength.find((l) => rest.startsWith(`${l}.`));
      if (layer) out.set(name, { kind, layer, name: rest.slice(layer.length + 1) });
    }
  }
  return out;
}

/** Where one analysis row came from. */
export interface RowProvenance {
  /** Global training step of the batch (-1: unknown). */
  step: number;
  /** Epoch (-1: unknown). */
  epoch: number;
  /** Batch index within the epoch (-1: unknown). */
  batch: number;
  /** Row of the sample within its batch. */
  row: number;
  /** Position of the row within its sample: t for a [B,T,D] output (0 for [B,D]). */
  position: number;
}

/** Captured per-sample values (an input, a target) of one layer in one shard. */
export interface SampleTensor {
  dtype: DType;
  /** `[samples, ...perSampleShape]`. */
  shape: number[];
  values: Float32Array | Int32Array | Float64Array;
}

/** Provenance of one layer in one shard. */
export interface ShardProvenance {
  shard: string;
  layer: string;
  /** Rows of the layer in this shard (the table's length). */
  nRows: number;
  /** Rows per sample (T for a [B,T,D] output). */
  rowsPerSample: number;
  /** Row-major `nRows × 5` (PROVENANCE_COLUMNS); null when the shard has none (an older shard). */
  table: Int32Array | null;
  /** Model inputs per sample, by input name (captureInputs). */
  inputs: Record<string, SampleTensor>;
  /** Targets per sample, by output name (captureTargets). */
  targets: Record<string, SampleTensor>;
  /** Per-sample ids, when the data gave them. */
  ids: SampleTensor | null;
}

/** Row `i` of a provenance table as an object. */
export function provenanceRow(table: Int32Array, i: number): RowProvenance {
  const o = i * PROVENANCE_WIDTH;
  return { step: table[o]!, epoch: table[o + 1]!, batch: table[o + 2]!, row: table[o + 3]!, position: table[o + 4]! };
}

/** One sample's values of a per-sample tensor (a copy). */
export function sampleOf(t: SampleTensor, sample: number): { shape: number[]; values: number[] } {
  const shape = t.shape.slice(1);
  let size = 1;
  for (const d of shape) size *= d;
  return { shape, values: Array.from(t.values.subarray(sample * size, (sample + 1) * size)) };
}

/** Everything known of one row: its provenance and its sample's captured inputs, targets and id. */
/** A row as row blocks name it: its shard file and its index in that shard's layer tensor. */
export interface RowRef {
  shard: string;
  row: number;
}

export interface RowOrigin extends Partial<RowProvenance> {
  shard: string;
  /** Row index within the shard's layer tensor. */
  shardRow: number;
  /** Sample index within the shard (row ÷ rowsPerSample). */
  sample: number;
  inputs?: Record<string, { shape: number[]; values: number[] }>;
  targets?: Record<string, { shape: number[]; values: number[] }>;
  id?: number;
}

/** A row's origin from its layer's shard provenance. */
export function rowOrigin(p: ShardProvenance, shardRow: number): RowOrigin {
  const sample = Math.floor(shardRow / Math.max(1, p.rowsPerSample));
  const out: RowOrigin = { shard: p.shard, shardRow, sample };
  if (p.table && shardRow < p.nRows) Object.assign(out, provenanceRow(p.table, shardRow));
  const inputs = Object.entries(p.inputs);
  if (inputs.length) out.inputs = Object.fromEntries(inputs.map(([k, t]) => [k, sampleOf(t, sample)]));
  const targets = Object.entries(p.targets);
  if (targets.length) out.targets = Object.fromEntries(targets.map(([k, t]) => [k, sampleOf(t, sample)]));
  if (p.ids) out.id = p.ids.values[sample];
  return out;
}
