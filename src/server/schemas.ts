/**
 * JSON schemas of the routes: they validate requests (unknown analysis types and malformed bodies
 * are 400 before any handler runs), serialize responses fast, and generate the OpenAPI document.
 */
const errorRef = { $ref: 'MechIntError#' } as const;
const errors = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, errorRef]));

const anyObject = { type: 'object', additionalProperties: true } as const;

const layer = {
  type: 'object',
  properties: {
    name: { type: 'string', description: 'Dotted layer path, e.g. `mamba_backbone.blocks.3`' },
    shape: { type: 'array', items: { type: 'integer' }, description: 'Shape of one sample, without the batch dimension' },
    dim: { type: 'integer', description: 'Length of one analysis row (the last dimension)' },
    dtype: { type: 'string' },
    rows: { type: 'integer', description: 'Rows of `dim` over all shards ([B,T,D] counts B·T)' },
    samples: { type: 'integer', description: 'Samples (first dimension) over all shards' },
    shards: { type: 'integer' },
    steps: { type: 'array', items: { type: 'integer' }, description: 'Global steps of the shards holding this layer' },
  },
  required: ['name', 'shape', 'dim', 'dtype', 'rows', 'samples', 'shards', 'steps'],
} as const;

export const layersRoute = {
  summary: 'List available layers',
  description: 'The layers in the activation cache with shape, rows, dtype, shards and steps. The index is rebuilt only when the cache changes.',
  tags: ['interpret'],
  response: {
    200: {
      type: 'object',
      properties: {
        layers: { type: 'array', items: layer },
        total_shards: { type: 'integer' },
        indexed_at: { type: 'string', format: 'date-time' },
      },
      required: ['layers', 'total_shards', 'indexed_at'],
    },
    ...errors(401, 500),
  },
} as const;

const analysisResult = (extra: Record<string, unknown> = {}) => ({
  type: 'object',
  properties: {
    analysis_type: { type: 'string' },
    layer_name: { type: ['string', 'null'] },
    results: { description: 'The analysis result (the guide\'s keys: mean_activation, explained_variance, final_l0, ...); layer → result for a multi-tensor upload', ...anyObject },
    timestamp: { type: 'string', format: 'date-time' },
    origin: { type: 'string', enum: ['computed', 'stored', 'given'], description: '`stored`: answered from a result already recorded for the same key (analysis, layer, options, shards, model, eval data); `computed`: computed for this request' },
    depends_on: { type: 'array', items: anyObject, description: 'Results this one was computed from (steering ← the layer\'s SAE), each with its origin' },
    ...extra,
  },
  required: ['analysis_type', 'layer_name', 'results', 'timestamp'],
});

const accepted = {
  description: 'Queued as a job (`async: true`); poll `status_url`',
  type: 'object',
  properties: { job_id: { type: 'string' }, state: { type: 'string' }, status_url: { type: 'string' } },
  required: ['job_id', 'state', 'status_url'],
} as const;

export function interpretRoute(names: string[]) {
  return {
    summary: 'Run analysis on cached activations',
    description: `Runs one analysis (${names.join(', ')}) on one layer of the cache. Long analyses run in a worker thread; with \`async: true\` the answer is 202 and a job id.`,
    tags: ['interpret'],
    body: {
      type: 'object',
      properties: {
        analysis_type: { type: 'string', enum: names },
        layer_name: { type: 'string', minLength: 1, maxLength: 512 },
        config: { description: 'Options of the analysis (snake_case or camelCase), merged over the server config\'s', ...anyObject, default: {} },
        async: { type: 'boolean', default: false, description: 'Answer 202 with a job id instead of waiting for the result' },
      },
      required: ['analysis_type', 'layer_name'],
      additionalProperties: false,
    },
    response: { 200: analysisResult(), 202: accepted, ...errors(400, 401, 404, 409, 415, 422, 500, 503) },
  };
}

export function uploadRoute(names: string[]) {
  return {
    summary: 'Upload and analyze activations',
    description: 'multipart/form-data: `file` (safetensors, .npy or a torch.save .pt, checked by content), `analysis_type`, optional `layer_name` (one tensor of the file; default all), `config` (a JSON object) and `async`.',
    tags: ['interpret'],
    consumes: ['multipart/form-data'],
    body: {
      type: 'object',
      properties: {
        file: { description: 'The activation file', type: 'object', additionalProperties: true },
        analysis_type: { type: 'string', enum: names },
        layer_name: { type: 'string', minLength: 1, maxLength: 512 },
        config: { type: 'string', maxLength: 65536, description: 'A JSON object of analysis options' },
        async: { type: 'boolean' },
      },
      required: ['file', 'analysis_type'],
      additionalProperties: false,
    },
    response: {
      200: analysisResult({
        file: {
          type: 'object',
          properties: {
            format: { type: 'string' },
            bytes: { type: 'integer' },
            sha256: { type: 'string' },
            tensors: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, shape: { type: 'array', items: { type: 'integer' } }, dtype: { type: 'string' } } } },
          },
        },
      }),
      202: accepted,
      ...errors(400, 401, 404, 409, 413, 415, 422, 500, 503),
    },
  };
}

const jobView = {
  type: 'object',
  properties: {
    job_id: { type: 'string' },
    state: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'cancelled'] },
    analysis_type: { type: 'string' },
    layer_name: { type: ['string', 'null'] },
    created: { type: 'string' },
    started: { type: ['string', 'null'] },
    finished: { type: ['string', 'null'] },
    progress: {
      type: 'object',
      properties: { fraction: { type: 'number' }, stage: { type: 'string' }, layer: { type: 'string' }, epoch: { type: 'integer' }, epochs: { type: 'integer' } },
    },
    result: analysisResult(),
    error: errorRef,
  },
  required: ['job_id', 'state', 'analysis_type', 'layer_name', 'created', 'progress'],
} as const;

export function jobRoute(summary: string) {
  return {
    summary,
    tags: ['jobs'],
    params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } }, required: ['id'] },
    response: { 200: jobView, ...errors(401, 404) },
  };
}

export const healthRoute = {
  summary: 'Liveness: answers at once, needs no API key',
  tags: ['health'],
  response: {
    200: {
      type: 'object',
      properties: {
        status: { type: 'string' },
        uptime_s: { type: 'number' },
        jobs: { type: 'object', additionalProperties: { type: 'integer' }, description: 'Jobs by state' },
        worker_threads: { type: 'integer', description: 'Analysis worker threads alive now (a cancelled job\'s thread is gone within moments)' },
        queue: {
          type: 'object',
          description: 'With `mechint serve --queue`: whether Redis answers, and its waiting and active jobs',
          properties: { kind: { type: 'string' }, connected: { type: 'boolean' }, waiting: { type: 'integer' }, active: { type: 'integer' } },
        },
      },
      required: ['status'],
    },
  },
} as const;
