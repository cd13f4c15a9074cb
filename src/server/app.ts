/**
 * `buildApp(options)`: a Fastify app with the mechint routes, `/health`, OpenAPI (`/docs/json`,
 * UI at `/docs`), bearer auth when an API key is set, CORS only when configured, and errors as
 * `{ statusCode, code, error, message }`. It does not listen; `mechint serve` and tests do.
 *
 * Hooks run in this order on every route: CORS (a browser's preflight is answered before auth, and
 * every answer carries the CORS headers), bearer auth, the upload concurrency limit, then the JSON
 * depth limit. Closing the app stops new jobs and cancels running ones after `shutdownGraceMs`.
 */
import cors, { type FastifyCorsOptions } from '@fastify/cors';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { ConfigError } from '../errors.js';
import { VERSION } from '../version.js';
import { API_KEY_ENV, assertSendableKey, bearerAuth } from './auth.js';
import { CacheIndex } from './cache-index.js';
import { DASHBOARD_PUBLIC_PATHS, dashboardRoutes } from './dashboard.js';
import { mechintClientErrorHandler, mechintErrorHandler, mechintFrameworkErrors, mechintNotFoundHandler } from './errors.js';
import { JobManager, type JobManagerOptions } from './jobs.js';
import { reportsHealth, type JobQueue } from './job-queue.js';
import { jsonDepthLimit, trackClient, uploadConcurrencyLimit } from './limits.js';
import { mechintRoutes, type MechIntRoutesOptions } from './routes.js';
import { healthRoute } from './schemas.js';
import { checkKeys } from '../options.js';

/** `mechint serve` binds here unless told otherwise: the server is not exposed by default. */
export const DEFAULT_HOST = '127.0.0.1';
/** The guide's examples use port 8000. */
export const DEFAULT_PORT = 8000;

export interface BuildAppOptions extends Omit<MechIntRoutesOptions, 'apiKey' | 'jobs'> {
  /**
   * Every route but `/health` needs `Authorization: Bearer <key>`. `null` turns auth off even
   * when the environment has a key. @default process.env.MECHINT_API_KEY (off when unset or empty)
   */
  readonly apiKey?: string | null;
  /** Cross-origin access for browsers: @fastify/cors options, or `true` for any origin. @default false (no CORS headers) */
  readonly cors?: boolean | FastifyCorsOptions;
  /**
   * Job workers and retention of the in-process JobManager, or a JobQueue to run jobs through
   * instead (a `RedisJobQueue`: `mechint serve --queue`); the app closes it when it closes. @default {}
   */
  readonly jobs?: JobManagerOptions | JobQueue;
  /** Largest JSON body, in bytes. @default 1_048_576 */
  readonly bodyLimit?: number;
  /** Fastify's logger option. @default false */
  readonly logger?: FastifyServerOptions['logger'];
  /** Serve the OpenAPI document at `/docs/json` and the UI at `/docs`. @default true */
  readonly docs?: boolean;
  /** Serve the dashboard at `/` (its page and script need no key; the page asks for it). @default false (`mechint serve` turns it on) */
  readonly dashboard?: boolean;
  /**
   * Uploads (`POST /interpret/upload`) received at once; one more is answered 503
   * (MECHINT_ERR_TOO_MANY_UPLOADS) with `Retry-After` before its body is read. @default 4
   */
  readonly maxConcurrentUploads?: number;
  /** On close, how long running jobs may go on to finish before they are cancelled, in ms. @default 0 (cancel at once) */
  readonly shutdownGraceMs?: number;
}

/**
 * The key that turns auth on: `options.apiKey`, else MECHINT_API_KEY (off when unset or empty).
 * A key that cannot be sent in `Authorization: Bearer <key>` (whitespace, control or non-ASCII
 * characters) or is shorter than 8 characters is refused here, at start, not on every request.
 */
export function resolveApiKey(option: string | null | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (option === null) return null;
  const fromEnv = option === undefined;
  const key: unknown = fromEnv ? env[API_KEY_ENV] : option;
  if (fromEnv && (key === undefined || key === '')) return null;
  assertSendableKey(key, fromEnv ? API_KEY_ENV : '`apiKey`');
  return key;
}

/**
 * @example
 * const app = await buildApp({ cache: './mechint_cache' });
 * await app.listen({ host: DEFAULT_HOST, port: DEFAULT_PORT });
 */
const BUILD_APP_KEYS = Object.keys({ cache: 1, config: 1, model: 1, modelPath: 1, evalData: 1, uploadLimit: 1, uploadDir: 1, outputDir: 1, inlineLimits: 1, verifyShards: 1, blockRows: 1, apiKey: 1, cors: 1, jobs: 1, bodyLimit: 1, logger: 1, docs: 1, dashboard: 1, maxConcurrentUploads: 1, shutdownGraceMs: 1 } satisfies Record<keyof BuildAppOptions, 1>);

export async function buildApp(options: BuildAppOptions = {}): Promise<FastifyInstance> {
  checkKeys('buildApp option', options, BUILD_APP_KEYS);
  const apiKey = resolveApiKey(options.apiKey);
  const maxUploads = options.maxConcurrentUploads ?? 4;
  if (!Number.isInteger(maxUploads) || maxUploads < 1) throw new ConfigError(`Expected \`maxConcurrentUploads\` to be an integer >= 1; got \`${String(maxUploads)}\``);
  const graceMs = options.shutdownGraceMs ?? 0;
  if (typeof graceMs !== 'number' || !Number.isFinite(graceMs) || graceMs < 0) throw new ConfigError(`Expected \`shutdownGraceMs\` to be a finite number >= 0; got \`${String(graceMs)}\``);
  const given = options.jobs !== undefined && typeof (options.jobs as { submit?: unknown }).submit === 'function' ? (options.jobs as JobQueue) : null;
  // With a queue given, the in-process JobManager stays idle (it starts no thread until a job is submitted to it).
  const jobs = new JobManager(given ? {} : ((options.jobs as JobManagerOptions | undefined) ?? {}));
  const queue: JobQueue = given ?? jobs;
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    // Unknown body fields are errors, not silently dropped; no type coercion beyond Fastify's defaults.
    ajv: { customOptions: { removeAdditional: false, allErrors: false } },
    // Errors the router raises before any route (a 5,000-character path parameter, a bad URL
    // encoding) and broken connections get our error body too.
    frameworkErrors: mechintFrameworkErrors,
    clientErrorHandler: mechintClientErrorHandler,
  });
  app.setErrorHandler(mechintErrorHandler);
  app.setNotFoundHandler(mechintNotFoundHandler);

  // CORS first: its hook answers a preflight (OPTIONS) before auth runs, and puts the headers on a 401 too.
  if (options.cors) await app.register(cors, options.cors === true ? { origin: true } : options.cors);
  if (apiKey !== null) app.addHook('onRequest', bearerAuth({ apiKey, publicPaths: ['/health', ...(options.dashboard ? DASHBOARD_PUBLIC_PATHS : [])] }));
  app.addHook('onRequest', trackClient);
  app.addHook('onRequest', uploadConcurrencyLimit(maxUploads));
  const depth = jsonDepthLimit();
  app.addHook('preValidation', depth.preValidation);
  app.addHook('preHandler', depth.preHandler);

  if (options.docs ?? true) {
    await app.register(swagger, {
      openapi: {
        openapi: '3.0.3',
        info: { title: 'mechint', description: 'Mechanistic interpretability analyses of activations captured from TensorFlow.js models', version: VERSION },
        ...(apiKey !== null ? { components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } }, security: [{ bearer: [] }] } : {}),
      },
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
  }

  app.decorate('mechintJobs', jobs);
  app.decorate('mechintQueue', queue);
  const started = Date.now();
  app.get('/health', { schema: healthRoute }, async () => {
    const base = { status: 'ok', uptime_s: (Date.now() - started) / 1000, worker_threads: jobs.liveWorkers() };
    if (!reportsHealth(queue)) return { ...base, jobs: jobs.counts() };
    const q = await queue.health();
    return { ...base, status: q.connected ? 'ok' : 'degraded', jobs: q.connected ? await Promise.resolve(queue.counts()).catch(() => ({})) : {}, queue: q };
  });

  const { apiKey: _k, cors: _c, jobs: _j, bodyLimit: _b, logger: _l, docs: _d, dashboard: _db, maxConcurrentUploads: _u, shutdownGraceMs: _g, ...routeOptions } = options;
  await app.register(mechintRoutes, { ...routeOptions, jobs: queue });
  if (options.dashboard) await app.register(dashboardRoutes, { auth: apiKey !== null });
  // preClose runs before the server waits for in-flight requests: a synchronous request waiting on
  // a job is answered (its job cancelled after the grace) instead of holding the close open.
  app.addHook('preClose', async () => {
    await Promise.all([jobs.close({ graceMs }), queue.close({ graceMs })]);
  });
  app.addHook('onClose', async () => {
    await Promise.all([jobs.close(), queue.close()]);
  });
  return app;
}

export { CacheIndex, JobManager };
export { clientSignal } from './limits.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The app's JobManager (buildApp): counts, cancel, close. */
    mechintJobs: JobManager;
    /** Where the app's jobs run: its JobManager, or the JobQueue given as `jobs` (Redis). */
    mechintQueue: JobQueue;
  }
}
