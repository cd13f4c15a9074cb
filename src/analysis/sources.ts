/** The LayerSources the executor reads: a shard reader (directory, file or S3), or tensors in memory (uploads, tests). */
import { rowsFromMatrix } from '../storage/rows.js';
import type { ShardReader } from '../storage/shard-reader.js';
import type { LayerSource } from './executor.js';

export function readerSource(reader: ShardReader, blockRows = 8192): LayerSource {
  return {
    label: `the shards at ${reader.path}`,
    layer: (name) => {
      const l = reader.layers().find((x) => x.name === name);
      return l ? { dim: l.dim, rows: l.rows } : null;
    },
    layerNames: () => reader.layers().map((l) => l.name),
    rows: (layer) => reader.rows(layer, { blockRows }),
    shardIds: (layer) => reader.shards.filter((s) => s.tensors[layer]).map((s) => s.record?.sha256 ?? `${s.file}:${s.bytes}`),
    steps: (layer) => [...(reader.layers().find((l) => l.name === layer)?.steps ?? [])].sort((a, b) => a - b),
    origins: (layer, refs) => reader.rowOrigins(layer, refs),
  };
}

/** Matrices of `rows × dim` by layer; `id` (e.g. the upload's sha256) names them in results keys. */
export function matrixSource(layers: Readonly<Record<string, { rows: Float32Array; dim: number }>>, id: string, blockRows = 8192, label = 'the upload'): LayerSource {
  return {
    label,
    layer: (name) => {
      const m = layers[name];
      return m ? { dim: m.dim, rows: m.rows.length / m.dim } : null;
    },
    layerNames: () => Object.keys(layers),
    rows: (layer) => {
      const m = layers[layer]!;
      return rowsFromMatrix(m.rows, m.dim, blockRows, label === 'the upload' ? 'upload' : label);
    },
    shardIds: (layer) => [`${id}:${layer}`],
    steps: () => [],
  };
}
