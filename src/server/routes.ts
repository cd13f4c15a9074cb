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
import { assertRunnable, findStoredResult, type ExecuteOutcome, type ExecuteRequest } from '../analysis/executor.js';
import { dependenciesOf } from '../analysis/definition.js';
import { analysisModule, analysisNames, requireAnalysis, runsInWorkers } from '../analysis/registry.js';
import { MemoryResultsStore, type ResultsStore } from '../analysis/results-store.js';
import { readerSource } from '../analysis/sources.js';
import type { EvalData } from '../analysis/types.js';
import { layerModules, loadModelFrom } from '../model/registry.js';
import { isS3Url } from '../storage/store.js';
import { snakeCase, type FieldMap } from '../options.js';
import { jsonSafe } from '../report/results.js';
import { viewFor } from '../report/views.js';
import { bearerAuth } from './auth.js';
import { CacheIndex } from './cache-index.js';
import { errorBodySchema, mechintErrorHandler } from './errors.js';
import { JobManager, type JobManagerOptions, type ResultShaper } from './jobs.js';
import type { JobQueue } from './job-queue.js';
import { runTask, serializeEvalData, storeFor, type AnalysisTask, type MatrixRows, type SerializedEvalData, type TaskStore } from './task.js';
import { clientSignal } from './limits.js';
import { parseUpload, removeRequestUploads, storeUploadedFile, type StoredUpload } from './upload.js';
import * as S from './schemas.js';

export interface MechIntRoutesOptions {
  /** The activation cache: a shard directory, an `s3://` URL, or a CacheIndex to share. @default config.storagePath */
  readonly cache?: string | CacheIndex;
  /**
   * The server's MechIntConfig; `analysisOptions[name]` are the defaults a request's `config` merges
   * over. @default the config the cache's manifest recorded (its sample_layers and analysis_options), so
   * the server resolves options as the training run and its report did
   */
  readonly config?: MechIntConfigInput;
  /** A model in this process. Analyses that need it then run inline (a model cannot cross into a worker). @default null */
  readonly model?: tf.LayersModel | null;
  /** A tfjs model.json (or its directory) that job workers load for analyses that need the model. */
  readonly modelPath?: string;
  /** Eval inputs (and targets) for analyses that run the model (probe, causal, circuit, steering). @default null */
  readonly evalData?: EvalData | null;
  /** A JobManager or another JobQueue (the Redis queue) to share, or options for the plugin's own JobManager. @default {} */
  readonly jobs?: JobManager | JobManagerOptions | JobQueue;
  /** Largest uploaded file, in bytes (413 beyond). @default 268_435_456 (256 MiB) */
  readonly uploadLimit?: number;
  /** Where uploads are written while they are parsed (each under a random name, removed after the response). @default a fresh directory in os.tmpdir() */
  readonly uploadDir?: string;
  /**
   * Where results and their files (SAE weights) go when the cache cannot hold them (S3, read-only,
   * uploads). Results of the cache go into it (`analysis_results/`, recorded in its manifest).
   * @default a fresh directory in os.tmpdir()
   */
  readonly outputDir?: string;
  /** Require `Authorization: Bearer <key>` on these routes (buildApp checks the key app-wide instead). @default none */
  readonly apiKey?: string;
  /**
   * Analyses that run on the event loop when the layer has at most this many values (rows × dim);
   * larger runs, and every analysis not listed, go to a worker thread, so no request holds the
   * event loop for more than about 20 ms here (neuron statistics run at ~300 M values/s; PCA and
   * k-means at ~1 M values/s).
   * @default { neuron: 4_000_000, feature: 20_000 }
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
  const given = MechIntConfig.from(opts.config ?? {});
  const index = opts.cache instanceof CacheIndex ? opts.cache : new CacheIndex(opts.cache ?? given.storagePath, { verify: opts.verifyShards ?? true });
  const config = opts.config === undefined ? await cacheConfig(index, given) : given;
  const configJson = config.toJSON();
  const ownJobs = !isJobQueue(opts.jobs);
  const jobs: JobQueue = isJobQueue(opts.jobs) ? opts.jobs : new JobManager(opts.jobs ?? {});
  const ownUploadDir = opts.uploadDir === undefined;
  const uploadDir = opts.uploadDir ?? (await mkdtemp(join(tmpdir(), 'mechint-uploads-')));
  if (!ownUploadDir) await mkdir(uploadDir, { recursive: true, mode: 0o700 });
  const ownScratch = opts.outputDir === undefined;
  const scratch = opts.outputDir ?? (await mkdtemp(join(tmpdir(), 'mechint-results-')));
  await mkdir(scratch, { recursive: true });
  const uploadLimit = opts.uploadLimit ?? 256 * 1024 * 1024;
  const inlineLimits: Readonly<Record<string, number>> = { neuron: 4_000_000, feature: 20_000, ...opts.inlineLimits };
  const evalData = opts.evalData ?? null;
  let serializedEval: SerializedEvalData | undefined;
  const names = analysisNames();
  const hasModel = opts.model != null || opts.modelPath !== undefined;
  const how = {
    model: 'start the server with `mechint serve --model DIR` (or buildApp({ modelPath }))',
    evalData: 'start the server with `mechint serve --eval-data FILE` (the eval_data.safetensors `mechint demo` writes), or pass `evalData` to buildApp',
  };
  // Results of the cache live beside its shards and in its manifest; uploads' only in this process.
  const cacheStore: TaskStore = isS3Url(index.path) ? { kind: 'memory', scratch } : { kind: 'manifest', cacheDir: index.path, scratch };
  const store = storeFor(cacheStore);
  const uploadStoreSpec: TaskStore = { kind: 'memory', scratch };
  const uploadStore = new MemoryResultsStore(scratch);
  // The model in this thread: given, or loaded once from modelPath to key results by its weights (jobs load their own).
  let localModel: Promise<tf.LayersModel> | null = opts.model ? Promise.resolve(opts.model) : null;
  const modelHere = (): Promise<tf.LayersModel> | null => (localModel ??= opts.modelPath ? loadModelFrom(opts.modelPath) : null);

  app.decorate('mechint', { index, jobs, config });
  app.setErrorHandler(mechintErrorHandler);
  if (opts.apiKey) app.addHook('onRequest', bearerAuth({ apiKey: opts.apiKey, publicPaths: [] }));
  app.addSchema(errorBodySchema);
  await app.register(multipart, {
    attachFieldsToBody: 'keyValues',
    onFile: storeUploadedFile(uploadDir),
    // One file and a few short fields; anything more is refused, not buffered. fieldSize is in bytes:
    // a `config` of up to 65,536 characters (the schema's maxLength, at most 4 bytes each) arrives
    // whole, and a longer one arrives cut short and fails maxLength (400), never silently truncated.
    limits: { fileSize: uploadLimit, files: 1, fields: 8, parts: 10, fieldSize: 256 * 1024 + 1, headerPairs: 100 },
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
    await Promise.allSettled([...saving]);
    if (ownUploadDir) await rm(uploadDir, { recursive: true, force: true });
    if (ownScratch) await rm(scratch, { recursive: true, force: true });
    if (localModel && !opts.model) (await localModel.catch(() => null))?.dispose();
  });

  /** Where a task runs: inline on this thread, or in a worker job. */
  function runsInline(analysisType: string, values: number): boolean {
    if (values <= (inlineLimits[analysisType] ?? -1)) return true;
    // An analysis registered in code (not from a plugin module) exists in this thread only.
    if (!runsInWorkers(analysisType)) return true;
    // A model object given in code lives in this thread only.
    return requireAnalysis(analysisType).needs?.model === true && opts.model != null && opts.modelPath === undefined;
  }

  function baseTask(analysisType: string, layers: string[], options: Record<string, unknown>, source: AnalysisTask['source'], taskStore: TaskStore): AnalysisTask {
    const usesModel = runsModel(analysisType);
    if (evalData && usesModel) serializedEval ??= serializeEvalData(evalData);
    return {
      analysisType,
      layers,
      options,
      config: configJson,
      source,
      store: taskStore,
      ...(opts.modelPath === undefined ? {} : { modelPath: opts.modelPath, layerModules: layerModules() }),
      ...(analysisModule(analysisType) ? { analysisModules: [analysisModule(analysisType)!] } : {}),
      ...(serializedEval && usesModel ? { evalData: serializedEval } : {}),
      blockRows: opts.blockRows ?? 8192,
    };
  }

  /** Whether the analysis (or one it needs) runs the model or reads eval data. */
  function runsModel(analysisType: string): boolean {
    const def = requireAnalysis(analysisType);
    return def.needs?.model === true || def.needs?.evalData === true || dependenciesOf(def).some(runsModel);
  }

  /** Saves still being written; closing the app waits for them. */
  const saving = new Set<Promise<void>>();

  /** Records what a worker computed (a worker only finds results; this thread writes the manifest). */
  function persist(outcome: ExecuteOutcome, into: ResultsStore): Promise<void> {
    const all = Promise.all(
      outcome.results
        .filter((r) => r.origin === 'computed' && typeof r.result.error !== 'string')
        .map((r) => into.save({ analysis: r.analysis, layer: r.layer, key: r.key, options: r.options, shards: r.shards }, r.result).then(
          () => undefined,
          (err: unknown) => app.log.warn(`Could not record the ${r.analysis} result of ${r.layer}: ${(err as Error).message}`),
        )),
    ).then(() => undefined);
    saving.add(all);
    void all.finally(() => saving.delete(all));
    return all;
  }

  /** Runs inline, or as a job (202 when async, else awaited; a client that hangs up cancels it). */
  async function dispatch(
    request: FastifyRequest,
    reply: FastifyReply,
    task: AnalysisTask,
    how: { inline: boolean; async: boolean; layerName: string | null; shape: ResultShaper; into: ResultsStore; transfer?: ArrayBuffer[]; env?: Parameters<typeof runTask>[1] },
  ): Promise<{ results: unknown; outcome: ExecuteOutcome | null } | null> {
    if (how.inline && !how.async) {
      const model = await modelHere();
      const outcome = await runTask(task, { ...(model ? { model } : {}), evalData, store: how.into, persist: true, ...how.env });
      return { results: how.shape(outcome), outcome };
    }
    let finished: ExecuteOutcome | null = null;
    let saved: Promise<void> = Promise.resolve();
    const shape: ResultShaper = (outcome) => {
      saved = persist(outcome, how.into);
      finished = outcome;
      return how.shape(outcome);
    };
    // A waiting client that hangs up (even before this point) cancels the job and stops its worker.
    const view = await jobs.submit(task, { layerName: how.layerName, shape, ...(how.async ? {} : { signal: clientSignal(request) }), ...(how.transfer ? { transfer: how.transfer } : {}) });
    if (how.async) {
      const url = `/interpret/jobs/${view.job_id}`;
      void reply.code(202).header('location', url).send({ job_id: view.job_id, state: view.state, status_url: url });
      return null;
    }
    const results = await jobs.wait(view.job_id);
    await saved; // the next request finds what this one computed
    return { results, outcome: finished };
  }

  /** What the answer says of where a result came from, and what it was computed from. */
  function provenance(outcome: ExecuteOutcome | null, analysisType: string, layer: string): Record<string, unknown> {
    const own = outcome?.results.find((r) => r.analysis === analysisType && r.layer === layer);
    const deps = outcome?.results.filter((r) => r !== own).map((r) => ({ analysis: r.analysis, layer: r.layer, origin: r.origin })) ?? [];
    return { origin: own?.origin ?? 'computed', ...(deps.length ? { depends_on: deps } : {}) };
  }

  app.get('/interpret/analyses', { schema: analysesRoute }, async () => ({
    analyses: analysisNames().map((name) => {
      const def = requireAnalysis(name);
      const needs = def.needs ?? {};
      const runnable = (!needs.model || hasModel) && (!(needs.model || needs.evalData) || evalData !== null) && dependenciesOf(def).every((d) => !requireAnalysis(d).needs?.model || hasModel);
      return {
        name,
        title: def.title,
        description: def.description,
        needs: { model: needs.model === true, eval_data: needs.evalData !== undefined && needs.evalData !== false, analyses: [...dependenciesOf(def)] },
        runnable,
        wide: viewFor(name).wide === true,
        options: Object.entries(def.options.fields as FieldMap).map(([key, f]) => ({ name: snakeCase(key), type: f.type, default: f.defaultDoc ?? (typeof f.default === 'function' ? 'derived' : f.default), description: f.doc })),
      };
    }),
  }));

  app.get('/interpret/layers', { schema: S.layersRoute }, async () => {
    const snap = await index.current();
    return { layers: snap.layers, total_shards: snap.totalShards, indexed_at: snap.builtAt };
  });

  app.post<{ Body: InterpretBody }>('/interpret', { schema: S.interpretRoute(names) }, async (request, reply) => {
    const { analysis_type: analysisType, layer_name: layerName, config: options = {} } = request.body;
    requireAnalysis(analysisType).options.parse(options); // a typo is a 400 before any work
    assertRunnable(analysisType, { model: hasModel, evalData: evalData !== null }, how);
    const { reader, snapshot } = await index.layer(layerName);
    const layer = snapshot.layers.find((l) => l.name === layerName)!;
    const contextLayers = config.sampleLayers?.filter((l) => snapshot.layers.some((s) => s.name === l)) ?? snapshot.layers.map((l) => l.name);
    const req: ExecuteRequest & { analyses: [string]; layers: [string] } = { analyses: [analysisType], layers: [layerName], contextLayers, config, options: { [analysisType]: options } };
    // A stored result for the same key answers at once, without a worker.
    const model = runsModel(analysisType) ? await modelHere() : null;
    const stored = await findStoredResult(req, { source: readerSource(reader, opts.blockRows ?? 8192), model, evalData, store });
    const task = baseTask(analysisType, [layerName], options, { kind: 'cache', path: index.path, verify: opts.verifyShards ?? true }, cacheStore);
    task.contextLayers = contextLayers;
    const out = stored
      ? { results: stored.analyses[analysisType]![layerName], outcome: stored }
      : await dispatch(request, reply, task, {
          inline: runsInline(analysisType, layer.rows * layer.dim),
          async: request.body.async === true,
          layerName,
          shape: (o) => o.analyses[analysisType]?.[layerName],
          into: store,
          env: { reader },
        });
    if (!out) return reply;
    return { analysis_type: analysisType, layer_name: layerName, results: jsonSafe(out.results), timestamp: new Date().toISOString(), ...provenance(out.outcome, analysisType, layerName) };
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
      requireAnalysis(analysisType).options.parse(options);
      assertRunnable(analysisType, { model: hasModel, evalData: evalData !== null }, how);
      const parsed = await parseUpload(body.file);
      let layers: Record<string, MatrixRows> = parsed.layers;
      if (layerName !== null) {
        const one = parsed.layers[layerName];
        if (!one) throw new LayerNotFoundError(`No tensor \`${layerName}\` in the uploaded file; it holds ${Object.keys(parsed.layers).join(', ')}`);
        layers = { [layerName]: one };
      }
      const names_ = Object.keys(layers);
      const values = Object.values(layers).reduce((a, m) => a + m.rows.length, 0);
      const task = baseTask(analysisType, names_, options, { kind: 'tensors', layers, id: parsed.sha256 }, uploadStoreSpec);
      const inlineRun = runsInline(analysisType, values);
      const out = await dispatch(request, reply, task, {
        inline: inlineRun,
        async: body.async === true,
        layerName,
        into: uploadStore,
        shape: (o) => (layerName === null ? o.analyses[analysisType] : o.analyses[analysisType]?.[layerName]),
        ...(inlineRun ? {} : { transfer: Object.values(layers).map((m) => m.rows.buffer as ArrayBuffer) }),
      });
      if (!out) return reply;
      return {
        analysis_type: analysisType,
        layer_name: layerName,
        results: jsonSafe(out.results),
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

const analysesRoute = {
  summary: 'List the analyses this server knows: name, title, what each needs, whether it can run here, its options',
  tags: ['interpret'],
  response: {
    200: {
      type: 'object',
      properties: {
        analyses: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              name: { type: 'string' }, title: { type: 'string' }, description: { type: 'string' },
              needs: { type: 'object', properties: { model: { type: 'boolean' }, eval_data: { type: 'boolean' }, analyses: { type: 'array', items: { type: 'string' } } } },
              runnable: { type: 'boolean', description: 'The server has what the analysis needs (the model, eval data)' },
              wide: { type: 'boolean' },
              options: { type: 'array', items: { type: 'object', additionalProperties: true } },
            },
          },
        },
      },
      required: ['analyses'],
    },
  },
} as const;

/** The config a cache's manifest recorded (what the training run, and so its report, used), under the given one. */
async function cacheConfig(index: CacheIndex, given: MechIntConfig): Promise<MechIntConfig> {
  const recorded = (await index.current().catch(() => null))?.reader?.manifests[0]?.config as Record<string, unknown> | undefined;
  if (!recorded) return given;
  try {
    const pick = Object.fromEntries(['sample_layers', 'analysis_options', 'analyses_to_run', 'enable_feature_steering'].filter((k) => recorded[k] !== undefined).map((k) => [k, recorded[k]]));
    return new MechIntConfig({ ...given.toJSON(), ...pick } as never);
  } catch {
    return given; // a config of another version: the defaults it does not name still hold
  }
}

/** A JobManager or any other JobQueue (not plain options). */
function isJobQueue(v: JobManager | JobManagerOptions | JobQueue | undefined): v is JobQueue {
  return v instanceof JobManager || typeof (v as { submit?: unknown } | undefined)?.submit === 'function';
}

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
    mechint: { index: CacheIndex; jobs: JobQueue; config: MechIntConfig };
  }
}
