/**
 * `mechint sync DIR`: uploads the shards a run left pending (S3 was down, or the run ended before
 * its uploads did) and then the manifest. Bucket, prefix and endpoint default to what the
 * manifest's config recorded; flags override them.
 */
import { readdir } from 'node:fs/promises';
import type { Command } from 'commander';
import { MechIntConfig, SNAKE_CASE_KEYS } from '../config.js';
import { ConfigError, NoShardsError } from '../errors.js';
import { createLogger } from '../logger.js';
import { readManifest } from '../storage/manifest.js';
import { s3StoreOptions } from '../storage/remote-config.js';
import { S3Store } from '../storage/s3-store.js';
import { syncDirectory, type SyncReport } from '../storage/sync.js';
import { formatBytes } from './inspect.js';
import { addS3Options, s3ConfigFromFlags, type S3Flags } from './s3-flags.js';

interface SyncFlags extends S3Flags {
  timeout?: string;
  concurrency?: string;
  json?: boolean;
}

/** The s3_* settings a run recorded in its manifest (unknown keys of other versions are ignored). */
async function recordedConfig(dir: string): Promise<Record<string, unknown>> {
  const name = (await readdir(dir).catch(() => [] as string[])).find((f) => f === 'manifest.json' || /^manifest_rank_\d+\.json$/.test(f));
  const m = name ? await readManifest(dir, name) : null;
  if (!m) throw new NoShardsError(`No manifest in ${dir}: nothing to sync (expected manifest.json written by a mechint run)`);
  const keys = ['storage_backend', 's3_bucket', 's3_prefix', 's3_endpoint', 's3_force_path_style', 's3_request_timeout_ms', 's3_upload_concurrency', 's3_retry_base_ms', 's3_retry_max_ms'];
  const out: Record<string, unknown> = {};
  for (const k of keys) if (m.config?.[k] !== undefined && m.config[k] !== null) out[k] = m.config[k];
  return out;
}

function positive(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`Expected \`${flag}\` to be a number > 0; got \`${raw}\``);
  return n;
}

export function formatSync(r: SyncReport): string {
  const rate = r.seconds > 0 ? ` (${formatBytes(r.bytes / r.seconds)}/s)` : '';
  const lines = [`${r.dir} → ${r.url}: ${r.shards} shard(s) listed; uploaded ${r.uploaded} (${formatBytes(r.bytes)} in ${r.seconds.toFixed(1)} s${rate}), ${r.already_there} already there, ${r.pending} still pending`];
  if (r.lost.length > 0) lines.push(`Neither uploaded nor on local disk: ${r.lost.join(', ')}`);
  lines.push(r.done ? 'Every shard and the manifest are in the store.' : 'Not done: run `mechint sync` again once S3 answers.');
  return lines.join('\n');
}

/** Registers `mechint sync DIR` on the program. */
export function registerSyncCommand(program: Command): Command {
  const cmd = program
    .command('sync')
    .description('Upload the shards of DIR that are not yet in S3 (pending after an outage), then the manifest')
    .argument('<dir>', 'shard directory (the run\'s storage_path)');
  addS3Options(cmd)
    .option('--timeout <seconds>', 'give up after this long (what remains stays pending)')
    .option('--concurrency <n>', 'uploads at once')
    .option('--json', 'print JSON')
    .action(async (dir: string, flags: SyncFlags) => {
      const recorded = await recordedConfig(dir);
      const merged = { ...recorded, ...snake(s3ConfigFromFlags(flags)) };
      const backend = merged.storage_backend === 's3' ? 's3' : 'both';
      const config = new MechIntConfig({ ...merged, storage_backend: backend, verbose: !flags.json } as never);
      const store = new S3Store(s3StoreOptions(config, { maxAttempts: 1 }));
      try {
        const timeout = positive('--timeout', flags.timeout);
        const report = await syncDirectory(dir, {
          store,
          keepLocal: backend === 'both',
          timeoutMs: timeout === undefined ? Infinity : timeout * 1000,
          logger: createLogger(true),
          queue: {
            concurrency: positive('--concurrency', flags.concurrency) ?? config.s3UploadConcurrency,
            retryBaseMs: config.s3RetryBaseMs,
            retryMaxMs: config.s3RetryMaxMs,
          },
        });
        console.log(flags.json ? JSON.stringify(report, null, 2) : formatSync(report));
        if (!report.done) process.exitCode = 1;
      } finally {
        store.destroy();
      }
    });
  return cmd;
}

function snake(o: Record<string, unknown>): Record<string, unknown> {
  const map = SNAKE_CASE_KEYS as Record<string, string>;
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [map[k] ?? k, v]));
}
