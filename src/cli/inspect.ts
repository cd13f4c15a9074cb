/** `mechint inspect PATH [--json]`: what a shard directory or file holds, and whether it is intact. */
import type { Command } from 'commander';
import { basename } from 'node:path';
import { parseShardFileName } from '../constants.js';
import { ShardReader, type OpenShardsOptions } from '../storage/shard-reader.js';
import { addS3Options, shardSourceFromFlags, type S3Flags } from './s3-flags.js';

export interface InspectReport {
  path: string;
  manifest: {
    files: number;
    status: string | null;
    total_shards: number | null;
    /** Why the run failed, when its manifest says status 'failed'. */
    error: { code: string; message: string } | null;
    /** The original (Python) system's manifest, when there is one: its file, listed shards and config. */
    original: { file: string; total_shards: number; config: Record<string, unknown> } | null;
  };
  shards: {
    file: string;
    shard_id: number | null;
    global_step: number | null;
    rank: number | null;
    bytes: number;
    layers: Record<string, { shape: number[]; dtype: string; rows: number }>;
    /** ok: matches the manifest; mismatch: differs; unlisted: no manifest records a checksum; corrupted: cannot be parsed. */
    checksum: 'ok' | 'mismatch' | 'unlisted' | 'corrupted';
    /** For a corrupted shard: what is wrong, and the error code. */
    error?: { code: string; message: string };
  }[];
  /** Listed shards that are not there (reported only with allowMissing; otherwise inspect fails naming them). */
  missing: string[];
  /** Shards that cannot be parsed, by name. */
  corrupted: { file: string; code: string; message: string }[];
  layers: { name: string; sample_shape: number[]; dim: number; dtype: string; rows: number; samples: number; shards: number; steps: number[] }[];
  ok: boolean;
}

export interface InspectOptions extends OpenShardsOptions {
  /** List missing shards instead of failing. @default false */
  allowMissing?: boolean;
}

export async function inspectPath(path: string, options: InspectOptions = {}): Promise<InspectReport> {
  const reader = await ShardReader.open(path, { ...options, verify: false, skipCorrupt: true });
  const shards: InspectReport['shards'] = [];
  for (const s of reader.shards) {
    const layers: InspectReport['shards'][number]['layers'] = {};
    for (const [name, t] of Object.entries(s.tensors)) {
      const dim = t.shape.length <= 1 ? 1 : t.shape.at(-1)!;
      layers[name] = { shape: t.shape, dtype: t.dtype, rows: dim === 0 ? 0 : t.shape.reduce((a, d) => a * d, 1) / dim };
    }
    const checksum = s.record ? ((await reader.sha256Of(s)) === s.record.sha256 ? 'ok' : 'mismatch') : 'unlisted';
    shards.push({ file: s.file, shard_id: s.shardId, global_step: s.globalStep, rank: s.rank, bytes: s.bytes, layers, checksum });
  }
  for (const c of reader.corruptShards) {
    const name = parseShardFileName(c.file);
    shards.push({ file: c.file, shard_id: name?.shardId ?? null, global_step: name?.globalStep ?? null, rank: name?.rank ?? null, bytes: c.bytes ?? 0, layers: {}, checksum: 'corrupted', error: { code: c.code, message: c.message } });
  }
  shards.sort((a, b) => (a.rank ?? 0) - (b.rank ?? 0) || (a.shard_id ?? 0) - (b.shard_id ?? 0) || a.file.localeCompare(b.file));
  const m = reader.manifests[0];
  const o = reader.originalManifests[0];
  const listed = reader.manifests.reduce((a, x) => a + x.shards.length, 0) + reader.originalManifests.reduce((a, x) => a + x.files.length, 0);
  return {
    path: reader.path,
    manifest: {
      files: reader.manifests.length + reader.originalManifests.length,
      status: m?.status ?? null,
      total_shards: reader.manifests.length + reader.originalManifests.length ? listed : null,
      error: m?.error ? { code: m.error.code, message: m.error.message } : null,
      original: o ? { file: basename(o.source), total_shards: o.total_shards, config: o.config } : null,
    },
    shards,
    missing: reader.missingShards,
    corrupted: reader.corruptShards.map((c) => ({ file: c.file, code: c.code, message: c.message })),
    layers: reader.layers().map((l) => ({ name: l.name, sample_shape: l.sampleShape, dim: l.dim, dtype: l.dtype, rows: l.rows, samples: l.samples, shards: l.shards, steps: l.steps })),
    ok: (reader.missingShards.length === 0 || options.allowMissing === true) && reader.corruptShards.length === 0 && shards.every((s) => s.checksum !== 'mismatch'),
  };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(1)} ${units[i]}`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function formatInspect(r: InspectReport): string {
  const out: string[] = [];
  const total = r.shards.reduce((a, s) => a + s.bytes, 0);
  const manifest = r.manifest.files
    ? `, manifest ${r.manifest.status ?? (r.manifest.original ? `of the original system (${r.manifest.original.file})` : '')} (${r.manifest.total_shards} listed)`
    : ', no manifest';
  out.push(`${r.path}: ${r.shards.length} shard(s), ${formatBytes(total)}${manifest}`);
  if (r.manifest.error) out.push(`The run failed: ${r.manifest.error.message} (${r.manifest.error.code})`);
  out.push('');
  out.push(table(['layer', 'sample shape', 'rows', 'samples', 'shards', 'steps'], r.layers.map((l) => [
    l.name, `[${l.sample_shape.join(', ')}]`, String(l.rows), String(l.samples), String(l.shards),
    l.steps.length > 6 ? `${l.steps.slice(0, 3).join(', ')}, …, ${l.steps.at(-1)}` : l.steps.join(', '),
  ])));
  out.push('');
  out.push(table(['shard', 'step', 'bytes', 'sha256', 'layers'], r.shards.map((s) => [
    s.file, String(s.global_step ?? ''), formatBytes(s.bytes), s.checksum,
    Object.entries(s.layers).map(([n, t]) => `${n} [${t.shape.join(',')}]`).join('; '),
  ])));
  if (r.missing.length > 0) out.push('', `Missing (listed in the manifest, not on disk): ${r.missing.join(', ')}`);
  const bad = r.shards.filter((s) => s.checksum === 'mismatch');
  if (bad.length > 0) out.push('', `Checksum mismatch: ${bad.map((s) => s.file).join(', ')}`);
  for (const c of r.corrupted) out.push('', `Corrupted: ${c.file}: ${c.message} (${c.code})`);
  return out.join('\n');
}

export function registerInspectCommand(program: Command): Command {
  const cmd = program
    .command('inspect')
    .description('List a shard directory or file: layers, shapes, rows, steps, bytes, and whether each shard matches the manifest')
    .argument('<path>', 'shard directory, shard file, or s3://bucket/prefix')
    .option('--json', 'print JSON')
    .option('--allow-missing', 'list shards the manifest names but that are not there, instead of failing');
  return addS3Options(cmd).action(async (path: string, opts: S3Flags & { json?: boolean; allowMissing?: boolean }) => {
    const source = shardSourceFromFlags(path, opts);
    const report = await inspectPath(source.path, { ...source.options, allowMissing: opts.allowMissing === true });
    console.log(opts.json ? JSON.stringify(report, null, 2) : formatInspect(report));
    // Each damaged shard by name on stderr too, so scripts see it without parsing the report.
    for (const c of report.corrupted) console.error(`mechint: ${c.file} is corrupted: ${c.message} (${c.code})`);
    if (!report.ok) process.exitCode = 1;
  });
}
