/**
 * Turns every error a route can meet (ours, Fastify's validation and body errors, multipart's
 * limits) into one body: `{ statusCode, code, error, message }` with a stable MECHINT_ERR_* code.
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { BadRequestError, InternalServerError, MechIntError, RouteNotFoundError, UnsupportedMediaError, UploadTooLargeError } from '../errors.js';

export interface ErrorBody {
  statusCode: number;
  code: string;
  error: string;
  message: string;
}

/** JSON schema of ErrorBody, for the routes' documented responses. */
export const errorBodySchema = {
  $id: 'MechIntError',
  type: 'object',
  description: 'Every error: the HTTP status, a stable MECHINT_ERR_* code (see docs/errors.md), the status text and what to fix.',
  properties: {
    statusCode: { type: 'integer' },
    code: { type: 'string' },
    error: { type: 'string' },
    message: { type: 'string' },
  },
  required: ['statusCode', 'code', 'error', 'message'],
} as const;

type ValidationItem = { instancePath?: string; keyword?: string; params?: Record<string, unknown>; message?: string };

function getPath(obj: unknown, pointer: string): unknown {
  let cur = obj;
  for (const part of pointer.split('/').filter(Boolean)) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/** "Expected `analysis_type` to be one of neuron, feature; got `x`" from an ajv error. */
function validationMessage(err: FastifyError, request: FastifyRequest): string {
  const items = (err.validation ?? []) as ValidationItem[];
  const ctx = err.validationContext ?? 'body';
  const source = ctx === 'body' ? request.body : ctx === 'params' ? request.params : ctx === 'querystring' ? request.query : request.headers;
  const first = items[0];
  if (!first) return err.message;
  const field = (first.instancePath ?? '').replace(/^\//, '').replaceAll('/', '.');
  const got = JSON.stringify(getPath(source, first.instancePath ?? '') ?? null);
  switch (first.keyword) {
    case 'enum':
      return `Expected \`${field}\` to be one of ${(first.params?.allowedValues as unknown[]).join(', ')}; got ${got}`;
    case 'required':
      return `Missing \`${String(first.params?.missingProperty)}\` in the request ${ctx}`;
    case 'additionalProperties':
      return `Unknown field \`${String(first.params?.additionalProperty)}\` in the request ${ctx}${field ? ` at \`${field}\`` : ''}`;
    case 'type':
      return `Expected \`${field || ctx}\` to be ${String(first.params?.type)}; got ${got}`;
    default:
      return `\`${field || ctx}\` ${first.message ?? 'is invalid'}; got ${got}`;
  }
}

/** Maps any error to a MechIntError (ours pass through). */
export function toMechIntError(err: unknown, request: FastifyRequest): MechIntError {
  if (err instanceof MechIntError) return err;
  const e = err as FastifyError & { part?: unknown };
  if (e.validation) return new BadRequestError(validationMessage(e, request));
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new UploadTooLargeError(`The request body is larger than the server's limit of ${request.routeOptions.bodyLimit ?? 'the configured'} bytes`);
    case 'FST_REQ_FILE_TOO_LARGE':
      return new UploadTooLargeError('The uploaded file is larger than the server\'s upload limit (`uploadLimit`, `mechint serve --upload-limit`)');
    case 'FST_PARTS_LIMIT':
    case 'FST_FILES_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return new UploadTooLargeError(`The multipart request has too many parts: send one \`file\` and the fields \`analysis_type\`, \`layer_name\`, \`config\` (${e.message})`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new UnsupportedMediaError(`Unsupported Content-Type \`${request.headers['content-type'] ?? '(none)'}\` for ${request.method} ${request.url.split('?')[0]}: send application/json, or multipart/form-data for uploads`);
  }
  const status = typeof e.statusCode === 'number' ? e.statusCode : 500;
  if (status >= 400 && status < 500) {
    // Malformed JSON, an empty body, a broken multipart stream: the client's fault, with Fastify's explanation.
    if (status === 413) return new UploadTooLargeError(e.message, { cause: err });
    if (status === 415) return new UnsupportedMediaError(e.message, { cause: err });
    return new BadRequestError(e.message, { cause: err });
  }
  return new InternalServerError('The server failed to handle the request; see its log', { cause: err });
}

export function errorBody(err: MechIntError): ErrorBody {
  return { statusCode: err.statusCode, code: err.code, error: STATUS_CODES[err.statusCode] ?? 'Error', message: err.message };
}

/** A Fastify error handler writing ErrorBody; 5xx are logged with their cause. */
export function mechintErrorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const e = toMechIntError(err, request);
  if (e.statusCode >= 500) request.log.error({ err }, e.message);
  void reply.code(e.statusCode).type('application/json; charset=utf-8').send(errorBody(e));
}

export function mechintNotFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  const e = new RouteNotFoundError(`No route ${request.method} ${request.url.split('?')[0]}; see /docs for the API`);
  void reply.code(404).send(errorBody(e));
}
