/**
 * `mechint worker --queue redis://HOST:PORT [--concurrency N]`: runs the analysis jobs a
 * `mechint serve --queue` server puts in Redis, on any machine that reaches Redis and the cache
 * (the same shared path, or the same s3:// URL). Stops on SIGTERM or SIGINT: running jobs get
 * `--shutdown-grace` seconds, then they are left to another worker (BullMQ gives them back once
 * their lock lapses).
 */
import type { Command } from 'commander';
import { ConfigError } from '../errors.js';

export interface WorkerFlags {
  queue: string;
  queueName?: string;
  concurrency?: string;
  lockMs?: string;
  stalledMs?: string;
  shutdownGrace?: string;
  log?: boolean;
}

function intFlag(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(`Expected \`--${name}\` to be an integer from ${min} to ${max}; got \`${value}\``);
  return n;
}

/** Runs the worker; resolves once it has stopped (SIGINT or SIGTERM). */
export async function runWorker(flags: WorkerFlags): Promise<void> {
  const [{ startQueueWorker }, { initBackend }, { registerNeuroFMXMiniLayers }] = await Promise.all([
    import('../server/queue-worker.js'),
    import('../backend.js'),
    import('../demo/neurofmx-mini.js'),
  ]);
  const concurrency = flags.concurrency === undefined ? 1 : intFlag('concurrency', flags.concurrency, 1, 256);
  const graceS = flags.shutdownGrace === undefined ? 30 : intFlag('shutdown-grace', flags.shutdownGrace, 0, 3600);
  await initBackend();
  registerNeuroFMXMiniLayers(); // the demo's checkpoints use mechint's own layers
  const worker = startQueueWorker({
    url: flags.queue,
    concurrency,
    ...(flags.queueName === undefined ? {} : { queueName: flags.queueName }),
    ...(flags.lockMs === undefined ? {} : { lockDurationMs: intFlag('lock-ms', flags.lockMs, 100, 3_600_000) }),
    ...(flags.stalledMs === undefined ? {} : { stalledIntervalMs: intFlag('stalled-ms', flags.stalledMs, 100, 3_600_000) }),
    ...(flags.log ? { onJob: (e) => console.log(JSON.stringify({ job: e.id, analysis: e.analysis, state: e.state, ms: e.ms, ...(e.error ? { error: e.error } : {}) })) } : {}),
  });
  await worker.ready();
  console.log(`mechint worker on ${flags.queue} (${concurrency} job(s) at once)`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      const now = () => process.exit(130);
      process.once('SIGINT', now);
      process.once('SIGTERM', now);
      const bound = setTimeout(() => void worker.close(true).finally(resolve), graceS * 1000);
      bound.unref();
      void worker.close().finally(() => {
        clearTimeout(bound);
        resolve();
      });
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

export function registerWorkerCommand(program: Command): Command {
  return program
    .command('worker')
    .description('Run the analysis jobs of `mechint serve --queue` from Redis (on any machine that reaches Redis and the cache)')
    .requiredOption('--queue <url>', 'Redis URL: redis://HOST:PORT[/DB]')
    .option('--concurrency <n>', 'jobs this process runs at once (default 1)')
    .option('--queue-name <name>', 'BullMQ queue name (default mechint-analyses)')
    .option('--lock-ms <ms>', 'job lock duration: a worker dead this long gives its job back (default 30000)')
    .option('--stalled-ms <ms>', 'how often to look for jobs of dead workers (default 30000)')
    .option('--shutdown-grace <s>', 'on SIGTERM, seconds running jobs get to finish (default 30)')
    .option('--log', 'print one JSON line per finished job')
    .action((flags: WorkerFlags) => runWorker(flags));
}
