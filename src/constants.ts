/** File names, format versions and metadata keys, in one place. */
export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_VERSION = 1;
export const SHARD_PREFIX = 'activations_shard_';
export const SHARD_EXTENSION = '.safetensors';
export const RESULTS_JSON_FILE = 'mechint_results.json';
export const REPORT_MD_FILE = 'mechint_report.md';
export const REPORT_HTML_FILE = 'report.html';
export const CHARTS_DIR = 'charts';
export const LOG_PREFIX = '[MechInt]';

/** `activations_shard_000003_step_600.safetensors`, or with a rank: `..._rank_1.safetensors`. */
export function shardFileName(shardId: number, globalStep: number, rank?: number): string {
  const id = String(shardId).padStart(6, '0');
  const rankPart = rank === undefined ? '' : `_rank_${rank}`;
  return `${SHARD_PREFIX}${id}_step_${globalStep}${rankPart}${SHARD_EXTENSION}`;
}

/** Matches shard files of ours (.safetensors) and of the original system (.pt). */
export const SHARD_FILE_PATTERN = /^activations_shard_(\d+)_step_(\d+)(?:_rank_(\d+))?\.(safetensors|pt)$/;

export function parseShardFileName(file: string): { shardId: number; globalStep: number; rank?: number; ext: string } | null {
  const m = SHARD_FILE_PATTERN.exec(file);
  if (!m) return null;
  return {
    shardId: Number(m[1]),
    globalStep: Number(m[2]),
    ...(m[3] === undefined ? {} : { rank: Number(m[3]) }),
    ext: m[4]!,
  };
}
