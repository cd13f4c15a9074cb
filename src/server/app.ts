/**
 * `buildApp(options)`: a Fastify app with the mechint routes, `/health`, OpenAPI (`/docs/json`,
 * UI at `/docs`), bearer auth when an API key is set, CORS only when configured, and errors as
 * `{ statusCode, code, error, message }`. It does not listen; `mechint serve` and tests do.
 */
import cors, { type FastifyCorsOptions } from '@fastify/cors';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { ConfigError } from '../errors.js';
import { API_KEY_ENV, bearerAuth } from './auth.js';
import { CacheIndex } from './cache-index.js';
import { DASHBOARD_PUBLIC_PATHS, dashboardRoutes } from './dashboard.js';
import { mechintErrorHandler, mechintNotFoundHandler } from './errors.js';
import { JobManager, type JobManagerOptions } from './jobs.js';
import { mechintRoutes, type MechIntRoutesOptions } from './routes.js';
import { healthRoute } from './schemas.js';

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
  /** Job workers and retention. @default {} */
  readonly jobs?: JobManagerOptions;
  /** Largest JSON body, in bytes. @default 1_048_576 */
  readonly bodyLimit?: number;
  /** Fastify's logger option. @default false */
  readonly logger?: FastifyServerOptions['logger'];
  /** Serve the OpenAPI document at `/docs/json` and the UI at `/docs`. @default true */
  readonly docs?: boolean;
  /** Serve the dashboard at `/` (its page and script need no key; the page asks for it). @default false (`mechint serve` turns it on) */
  readonly dashboard?: boolean;
}

/**
 * @example
 * const app = await buildApp({ cache: './mechint_cache' });
 * await app.listen({ host: DEFAULT_HOST, port: DEFAULT_PORT });
 */
export async function buildApp(options: BuildAppOptions = {}): Promise<FastifyInstance> {
  const apiKey = options.apiKey === undefined ? process.env[API_KEY_ENV] || null : options.apiKey;
  if (apiKey !== null && (typeof apiKey !== 'string' || apiKey.length < 8)) {
    throw new ConfigError(`Expected \`apiKey\` (or ${API_KEY_ENV}) to be a string of at least 8 characters; got ${typeof apiKey === 'string' ? `${apiKey.length} characters` : typeof apiKey}`);
  }
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    // Unknown body fields are errors, not silently dropped; no type coercion beyond Fastify's defaults.
    ajv: { customOptions: { removeAdditional: false, allErrors: false } },
  });
  app.setErrorHandler(mechintErrorHandler);
  app.setNotFoundHandler(mechintNotFoundHandler);

  if (apiKey !== null) app.addHook('onRequest', bearerAuth({ apiKey, publicPaths: ['/health', ...(options.dashboard ? DASHBOARD_PUBLIC_PATHS : [])] }));
  if (options.cors) await app.register(cors, options.cors === true ? { origin: true } : options.cors);

  if (options.docs ?? true) {
    await app.register(swagger, {
      openapi: {
        openapi: '3.0.3',
        info: { title: 'mechint', description: 'Mechanistic interpretability analyses of activations captured from TensorFlow.js models', version: '0.1.0' },
        ...(apiKey !== null ? { components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } }, security: [{ bearer: [] }] } : {}),
      },
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
  }

  const jobs = new JobManager(options.jobs ?? {});
  const started = Date.now();
  app.get('/health', { schema: healthRoute }, async () => ({ status: 'ok', uptime_s: (Date.now() - started) / 1000, jobs: jobs.counts() }));

  const { apiKey: _k, cors: _c, jobs: _j, bodyLimit: _b, logger: _l, docs: _d, dashboard: _db, ...routeOptions } = options;
  await app.register(mechintRoutes, { ...routeOptions, jobs });
  if (options.dashboard) await app.register(dashboardRoutes, { auth: apiKey !== null });
  app.addHook('onClose', async () => jobs.close());
  return app;
}

export { CacheIndex, JobManager };
