/**
 * `mechint serve [--cache DIR] [--model DIR] [--host 127.0.0.1] [--port 8000]`: the HTTP API on
 * the activation cache. It binds 127.0.0.1 unless told otherwise; set MECHINT_API_KEY before
 * exposing it (every route but /health then needs `Authorization: Bearer <key>`).
 *
 * On SIGTERM or SIGINT it stops taking requests, gives running jobs `--shutdown-grace` seconds,
 * cancels the rest and exits; if that takes more than SHUTDOWN_SLACK_MS longer, or a second
 * signal comes, it exits at once.
 */
import type { Command } from 'commander';
import { ConfigError } from '../errors.js';
import { DEFAULT_HOST, DEFAULT_PORT, buildApp } from '../server/app.js';
import { API_KEY_ENV } from '../server/auth.js';

export interface ServeFlags {
  cache?: string;
  model?: string;
  evalData?: string;
  host: string;
  port: string;
  uploadLimitMb?: string;
  cors?: string;
  workers?: string;
  /** Redis URL: run jobs through BullMQ (`mechint worker`) instead of worker threads here. */
  queue?: string;
  maxQueued?: string;
  jobTimeout?: string;
  maxUploads?: string;
  shutdownGrace?: string;
  log?: boolean;
  /** commander's --no-dashboard sets this false. */
  dashboard?: boolean;
}

function intFlag(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(`Expected \`--${name}\` to be an integer from ${min} to ${max}; got \`${value}\``);
  return n;
}

/** Past the grace, how long closing may take before the process exits anyway. */
export const SHUTDOWN_SLACK_MS = 5000;
/** Seconds running jobs get to finish on SIGTERM unless --shutdown-grace says otherwise. */
export const DEFAULT_SHUTDOWN_GRACE_S = 5;

/** Loads the model once so a bad --model fails at startup, not on the first request. */
async function checkModel(dir: string): Promise<void> {
  const [{ initBackend, tf }, { fileSystem }, { registerNeuroFMXMiniLayers }] = await Promise.all([
    import('../backend.js'),
    import('../model/file-handler.js'),
    import('../demo/neurofmx-mini.js'),
  ]);
  await initBackend();
  // mechint's own model (the demo's checkpoints) uses custom layers: make them known to tfjs.
  registerNeuroFMXMiniLayers();
  try {
    const model = await tf.loadLayersModel(fileSystem(dir));
    model.dispose();
  } catch (err) {
    throw new ConfigError(`Cannot load \`--model ${dir}\`: expected a directory with a tfjs model.json and its weights (${(err as Error).message})`);
  }
}

/** Starts the server; resolves once it has closed (SIGINT or SIGTERM). */
export async function runServe(flags: ServeFlags): Promise<void> {
  const port = intFlag('port', flags.port, 0, 65535);
  const graceS = flags.shutdownGrace === undefined ? DEFAULT_SHUTDOWN_GRACE_S : intFlag('shutdown-grace', flags.shutdownGrace, 0, 3600);
  const jobs = {
    ...(flags.workers === undefined ? {} : { concurrency: intFlag('workers', flags.workers, 1, 256) }),
    ...(flags.jobTimeout === undefined ? {} : { timeoutMs: intFlag('job-timeout', flags.jobTimeout, 1, 7 * 24 * 3600) * 1000 }),
  };
  if (flags.model) await checkModel(flags.model);
  let queue: import('../server/job-queue.js').JobQueue | null = null;
  if (flags.queue !== undefined) {
    const { RedisJobQueue } = await import('../server/redis-queue.js');
    const redis = new RedisJobQueue({
      url: flags.queue,
      ...(jobs.timeoutMs === undefined ? {} : { timeoutMs: jobs.timeoutMs }),
      ...(flags.maxQueued === undefined ? {} : { maxQueued: intFlag('max-queued', flags.maxQueued, 1, 1_000_000) }),
    });
    try {
      await redis.ready();
    } catch (err) {
      await redis.close();
      throw err;
    }
    queue = redis;
  } else if (flags.maxQueued !== undefined) {
    Object.assign(jobs, { maxQueued: intFlag('max-queued', flags.maxQueued, 1, 1_000_000) });
  }
  const evalData = flags.evalData ? await (await import('../report/eval-data-file.js')).readEvalDataFile(flags.evalData) : null;
  const app = await buildApp({
    ...(evalData ? { evalData } : {}),
    ...(flags.cache === undefined ? {} : { cache: flags.cache }),
    ...(flags.model === undefined ? {} : { modelPath: flags.model }),
    ...(flags.uploadLimitMb === undefined ? {} : { uploadLimit: intFlag('upload-limit-mb', flags.uploadLimitMb, 1, 65536) * 1024 * 1024 }),
    ...(flags.cors === undefined ? {} : { cors: { origin: flags.cors.split(',').map((s) => s.trim()).filter(Boolean) } }),
    ...(flags.maxUploads === undefined ? {} : { maxConcurrentUploads: intFlag('max-uploads', flags.maxUploads, 1, 1024) }),
    jobs: queue ?? jobs,
    shutdownGraceMs: graceS * 1000,
    logger: flags.log ? { level: 'info' } : false,
    dashboard: flags.dashboard !== false,
  });
  const address = await app.listen({ host: flags.host, port });
  const auth = process.env[API_KEY_ENV] ? `API key required (${API_KEY_ENV})` : `no API key: set ${API_KEY_ENV} before exposing it beyond this machine`;
  console.log(`mechint serving ${address} (${flags.dashboard !== false ? `dashboard at ${address}/, ` : ''}OpenAPI at ${address}/docs; ${auth})`);
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      // A second signal means now.
      const now = () => process.exit(130);
      process.once('SIGINT', now);
      process.once('SIGTERM', now);
      const jobs = app.mechintJobs.counts();
      const running = jobs.running + jobs.queued;
      if (queue) console.error(`mechint: ${signal}: stopping; jobs in Redis stay there for the workers`);
      else if (running > 0) console.error(`mechint: ${signal}: stopping; ${running} job(s) get ${graceS} s to finish, then they are cancelled`);
      // Whatever holds the close open (a slow request), the process ends within the bound.
      const bound = setTimeout(() => {
        console.error(`mechint: the server did not close within ${graceS + SHUTDOWN_SLACK_MS / 1000} s of ${signal}; exiting`);
        process.exit(1);
      }, graceS * 1000 + SHUTDOWN_SLACK_MS);
      bound.unref();
      app.close().then(
        () => {
          clearTimeout(bound);
          resolve();
        },
        (err: unknown) => {
          console.error(`mechint: closing the server failed: ${(err as Error).message}`);
          process.exitCode = 1;
          resolve();
        },
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

export function registerServeCommand(program: Command): Command {
  return program
    .command('serve')
    .description('Serve the guide\'s /interpret API (layers, analyses, uploads, jobs) over HTTP, with a dashboard at / and OpenAPI at /docs')
    .option('--cache <dir>', 'activation cache: shard directory or s3:// URL (default ./mechint_cache)')
    .option('--model <dir>', 'tfjs model.json directory, for analyses that run the model')
    .option('--eval-data <file>', 'inputs (and targets, probe targets) for causal, circuit, steering and probe: a safetensors file as `mechint demo` writes')
    .option('--host <host>', 'address to bind; anything but 127.0.0.1 exposes the server', DEFAULT_HOST)
    .option('--port <port>', 'port (0 picks a free one)', String(DEFAULT_PORT))
    .option('--upload-limit-mb <mb>', 'largest uploaded file in MiB (default 256)')
    .option('--cors <origins>', 'comma-separated origins allowed to call the API from a browser (default: none)')
    .option('--workers <n>', 'analysis worker threads at once (default: CPUs - 1)')
    .option('--queue <url>', 'run analyses through Redis (BullMQ) with `mechint worker` processes, e.g. redis://127.0.0.1:6379 (default: worker threads here)')
    .option('--max-queued <n>', 'jobs waiting at most; more are refused (503 here, 429 with --queue)')
    .option('--job-timeout <s>', 'stop a job that runs longer than this many seconds (default: no limit)')
    .option('--max-uploads <n>', 'uploads received at once; more get 503 and Retry-After (default 4)')
    .option('--shutdown-grace <s>', `on SIGTERM, seconds running jobs get before they are cancelled (default ${DEFAULT_SHUTDOWN_GRACE_S})`)
    .option('--log', 'log requests')
    .option('--no-dashboard', 'do not serve the dashboard at /')
    .action((flags: ServeFlags) => runServe(flags));
}
