/**
 * `mechintRoutes`, the guide's FastAPIIntegrationMixin as a Fastify plugin: register it on any
 * Fastify app to get `GET /interpret/layers`, `POST /interpret`, `POST /interpret/upload` and
 * `GET|DELETE /interpret/jobs/:id`, with the guide's request and response bodies.
 *
 * Small analyses (neuron, and feature on few values) run inline; the rest run in worker threads
 * through the JobManager, awaited for a synchronous request or answered 202 with `async: true`.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { tf } from '../backend.js';
import { MechIntConfig, type MechIntConfigInput } from '../config.js';
import { BadRequestError, LayerNotFoundError, UnsupportedMediaError } from '../errors.js';
import { analysisNames, getAnalysis } from '../analysis/registry.js';
import type { EvalData } from '../analysis/types.js';
import { bearerAuth } from './auth.js';
import { CacheIndex } from './cache-index.js';
import { errorBodySchema, mechintErrorHandler } from './errors.js';
import { JobManager, type JobManagerOptions, type ResultShaper } from './jobs.js';
import { assertRunnable, runTask, serializeEvalData, type AnalysisTask, type MatrixRows, type SerializedEvalData } from './task.js';
import { parseUpload, removeRequestUploads, storeUploadedFile, type StoredUpload } from './upload.js';
import * as S from './schemas.js';

export interface MechIntRoutesOptions {
  /** The activation cache: a shard directory, an `s3://` URL, or a CacheIndex to share. @default config.storagePath */
  readonly cache?: string | CacheIndex;
  /** The server's MechIntConfig; `analysisOptions[name]` are the defaults a request's `config` merges over. @default {} */
  readonly config?: MechIntConfigInput;
  /** A model in this process. Analyses that need it then run inline (a model cannot cross into a worker). @default null */
  readonly model?: tf.LayersModel | null;
  /** A tfjs model.json (or its directory) that job workers load for analyses that need the model. */
  readonly modelPath?: string;
  /** Eval inputs (and targets) for analyses that run the model (probe, causal, circuit, steering). @default null */
  readonly evalData?: EvalData | null;
  /** A JobManager to share, or options for the plugin's own. @default {} */
  readonly jobs?: JobManager | JobManagerOptions;
  /** Largest uploaded file, in bytes (413 beyond). @default 268_435_456 (256 MiB) */
  readonly uploadLimit?: number;
  /** Where uploads are written while they are parsed (each under a random name, removed after the response). @default a fresh directory in os.tmpdir() */
  readonly uploadDir?: string;
  /** Where analyses write files (SAE weights), one folder per request. @default none (not written) */
  readonly outputDir?: string;
  /** Require `Authorization: Bearer <key>` on these routes (buildApp checks the key app-wide instead). @default none */
  readonly apiKey?: string;
  /**
   * Analyses that run on the event loop when the layer has at most this many values (rows × dim);
   * larger runs, and every analysis not listed, go to a worker thread. Neuron statistics stream
   * and yield between blocks, so they stay inline far longer than PCA and k-means.
   * @default { neuron: 16_000_000, feature: 2_000_000 }
   */
  readonly inlineLimits?: Readonly<Record<string, number>>;
  /** Verify shard sha256 against the manifest the first time each is read. @default true */
  readonly verifyShards?: boolean;
  /** Rows per block read from the shards. @default 8192 */
  readonly blockRows?: number;
}

interface InterpretBody {
  analysis_type: string;
  layer_name: string;
  config?: Record<string, unknown>;
  async?: boolean;
}

interface UploadBody {
  file: StoredUpload;
  analysis_type: string;
  layer_name?: string;
  config?: string;
  async?: boolean;
}

export const mechintRoutes: FastifyPluginAsync<MechIntRoutesOptions> = async (app: FastifyInstance, opts: MechIntRoutesOptions) => {
  const config = MechIntConfig.from(opts.config ?? {});
  const configJson = config.toJSON();
  const index = opts.cache instanceof CacheIndex ? opts.cache : new CacheIndex(opts.cache ?? config.storagePath, { verify: opts.verifyShards ?? true });
  const ownJobs = !(opts.jobs instanceof JobManager);
  const jobs = opts.jobs instanceof JobManager ? opts.jobs : new JobManager(opts.jobs ?? {});
  const ownUploadDir = opts.uploadDir === undefined;
  const uploadDir = opts.uploadDir ?? (await mkdtemp(join(tmpdir(), 'mechint-uploads-')));
  if (!ownUploadDir) await mkdir(uploadDir, { recursive: true, mode: 0o700 });
  const uploadLimit = opts.uploadLimit ?? 256 * 1024 * 1024;
  const inlineLimits: Readonly<Record<string, number>> = { neuron: 16_000_000, feature: 2_000_000, ...opts.inlineLimits };
  const model = opts.model ?? null;
  const evalData = opts.evalData ?? null;
  let serializedEval: SerializedEvalData | undefined;
  const names = analysisNames();
  const hasModel = model !== null || opts.modelPath !== undefined;

  app.decorate('mechint', { index, jobs, config });
  app.setErrorHandler(mechintErrorHandler);
  if (opts.apiKey) app.addHook('onRequest', bearerAuth({ apiKey: opts.apiKey, publicPaths: [] }));
  app.addSchema(errorBodySchema);
  await app.register(multipart, {
    attachFieldsToBody: 'keyValues',
    onFile: storeUploadedFile(uploadDir),
    // One file and a few short fields; anything more is refused, not buffered.
    limits: { fileSize: uploadLimit, files: 1, fields: 8, parts: 10, fieldSize: 64 * 1024, headerPairs: 100 },
  });
  // Before the answer leaves (so a client never sees a leftover file), and again if the request ended without one.
  app.addHook('onSend', async (request, _reply, payload) => {
    await removeRequestUploads(request);
    return payload;
  });
  app.addHook('onResponse', async (request) => removeRequestUploads(request));
  // /interpret takes JSON only; a text/plain body is 415, not a confusing schema error.
  app.removeContentTypeParser(['text/plain']);
  app.addHook('onClose', async () => {
    if (ownJobs) await jobs.close();
    if (ownUploadDir) await rm(uploadDir, { recursive: true, force: true });
  });

  /** Where a task runs: inline on this thread, or in a worker job. */
  function runsInline(analysisType: string, values: number): boolean {
    if (values <= (inlineLimits[analysisType] ?? -1)) return true;
    // A model object lives in this thread only.
    return getAnalysis(analysisType)?.needsModel === true && model !== null && opts.modelPath === undefined;
  }

  function baseTask(analysisType: string, layers: string[], options: Record<string, unknown>, source: AnalysisTask['source']): AnalysisTask {
    const def = getAnalysis(analysisType)!;
    if (evalData && (def.needsModel || def.needsEvalData)) serializedEval ??= serializeEvalData(evalData);
    return {
      analysisType,
      layers,
      options: { ...config.optionsFor(analysisType), ...options },
      config: configJson,
      source,
      ...(opts.outputDir === undefined ? {} : { outputDir: join(opts.outputDir, `${analysisType}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`) }),
      ...(opts.modelPath === undefined ? {} : { modelPath: opts.modelPath }),
      ...(serializedEval && (def.needsModel || def.needsEvalData) ? { evalData: serializedEval } : {}),
      blockRows: opts.blockRows ?? 8192,
    };
  }

  /** Runs inline, or as a job (202 when async, else awaited; a client that hangs up cancels it). */
  async function dispatch(
    reply: FastifyReply,
    task: AnalysisTask,
    how: { inline: boolean; async: boolean; layerName: string | null; shape: ResultShaper; transfer?: ArrayBuffer[]; env?: Parameters<typeof runTask>[1] },
  ): Promise<{ results: unknown } | null> {
    if (how.inline && !how.async) return { results: how.shape(await runTask(task, { model, evalData, ...how.env })) };
    const view = jobs.submit(task, { layerName: how.layerName, shape: how.shape, ...(how.transfer ? { transfer: how.transfer } : {}) });
    if (how.async) {
      const url = `/interpret/jobs/${view.job_id}`;
      void reply.code(202).header('location', url).send({ job_id: view.job_id, state: view.state, status_url: url });
      return null;
    }
    const onClose = () => {
      if (!reply.raw.writableFinished) {
        try {
          jobs.cancel(view.job_id);
        } catch {
          // already forgotten
        }
      }
    };
    reply.raw.once('close', onClose);
    try {
      return { results: await jobs.wait(view.job_id) };
    } finally {
      reply.raw.off('close', onClose);
    }
  }

  app.get('/interpret/layers', { schema: S.layersRoute }, async () => {
    const snap = await index.current();
    return { layers: snap.layers, total_shards: snap.totalShards, indexed_at: snap.builtAt };
  });

  app.post<{ Body: InterpretBody }>('/interpret', { schema: S.interpretRoute(names) }, async (request, reply) => {
    const { analysis_type: analysisType, layer_name: layerName, config: options = {} } = request.body;
    assertRunnable(analysisType, hasModel, evalData !== null);
    const { reader, layer, snapshot } = await index.layer(layerName);
    const task = baseTask(analysisType, [layerName], options, { kind: 'cache', path: index.path, verify: opts.verifyShards ?? true });
    task.contextLayers = config.sampleLayers?.filter((l) => snapshot.layers.some((s) => s.name === l)) ?? snapshot.layers.map((l) => l.name);
    const out = await dispatch(reply, task, {
      inline: runsInline(analysisType, layer.rows * layer.dim),
      async: request.body.async === true,
      layerName,
      shape: (r) => r[layerName],
      env: { reader },
    });
    if (!out) return reply;
    return { analysis_type: analysisType, layer_name: layerName, results: out.results, timestamp: new Date().toISOString() };
  });

  app.post<{ Body: UploadBody }>(
    '/interpret/upload',
    {
      schema: S.uploadRoute(names),
      preValidation: async (request: FastifyRequest) => {
        if (!request.isMultipart()) {
          throw new UnsupportedMediaError('POST /interpret/upload takes multipart/form-data with a `file` part (curl -F "file=@activations.pt" -F "analysis_type=feature")');
        }
      },
    },
    async (request, reply) => {
      const body = request.body;
      const analysisType = body.analysis_type;
      const layerName = body.layer_name ?? null;
      const options = parseConfigField(body.config);
      assertRunnable(analysisType, hasModel, evalData !== null);
      const parsed = await parseUpload(body.file);
      let layers: Record<string, MatrixRows> = parsed.layers;
      if (layerName !== null) {
        const one = parsed.layers[layerName];
        if (!one) throw new LayerNotFoundError(`No tensor \`${layerName}\` in the uploaded file; it holds ${Object.keys(parsed.layers).join(', ')}`);
        layers = { [layerName]: one };
      }
      const names_ = Object.keys(layers);
      const values = Object.values(layers).reduce((a, m) => a + m.rows.length, 0);
      const task = baseTask(analysisType, names_, options, { kind: 'tensors', layers });
      const inlineRun = runsInline(analysisType, values);
      const out = await dispatch(reply, task, {
        inline: inlineRun,
        async: body.async === true,
        layerName,
        shape: (r) => (layerName === null ? r : r[layerName]),
        ...(inlineRun ? {} : { transfer: Object.values(layers).map((m) => m.rows.buffer as ArrayBuffer) }),
      });
      if (!out) return reply;
      return {
        analysis_type: analysisType,
        layer_name: layerName,
        results: out.results,
        timestamp: new Date().toISOString(),
        file: { format: parsed.format, bytes: parsed.bytes, sha256: parsed.sha256, tensors: parsed.tensors },
      };
    },
  );

  app.get<{ Params: { id: string } }>('/interpret/jobs/:id', { schema: S.jobRoute('Report a job: state, progress, and its result or error') }, async (request) => jobs.view(request.params.id));

  app.delete<{ Params: { id: string } }>(
    '/interpret/jobs/:id',
    { schema: S.jobRoute('Cancel a queued or running job (its worker is stopped); a finished job is forgotten') },
    async (request) => jobs.cancel(request.params.id),
  );
};

function parseConfigField(text: string | undefined): Record<string, unknown> {
  if (text === undefined || text.trim() === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new BadRequestError(`Expected the \`config\` field to be a JSON object such as {"n_components": 5}; got ${JSON.stringify(text.slice(0, 80))}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new BadRequestError(`Expected the \`config\` field to be a JSON object; got ${JSON.stringify(text.slice(0, 80))}`);
  return v as Record<string, unknown>;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The mechint services of the routes' scope (inside the plugin's encapsulation context). */
    mechint: { index: CacheIndex; jobs: JobManager; config: MechIntConfig };
  }
}
