/**
 * Turns every error a route can meet (ours, Fastify's validation and body errors, multipart's
 * limits) into one body: `{ statusCode, code, error, message }` with a stable MECHINT_ERR_* code.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
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

const isMultipartRequest = (request: FastifyRequest) => /^multipart\//i.test(String(request.headers['content-type'] ?? ''));

/** A short JSON preview of a value for a message: never more than `max` characters, never throws (a 5,000-deep array overflows JSON.stringify). */
export function preview(value: unknown, max = 80): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? '[...]' : typeof value === 'object' && value !== null ? '{...}' : String(value);
  }
  return text.length > max ? `${text.slice(0, max)}... (${text.length} characters)` : text;
}

/** A path for a message: at most 60 characters, the length said when cut. */
const clip = (path: string) => (path.length > 60 ? `${path.slice(0, 60)}... (${path.length} characters)` : path);

/** "Expected `analysis_type` to be one of neuron, feature; got `x`" from an ajv error. */
function validationMessage(err: FastifyError, request: FastifyRequest): string {
  const items = (err.validation ?? []) as ValidationItem[];
  const ctx = err.validationContext ?? 'body';
  const source = ctx === 'body' ? request.body : ctx === 'params' ? request.params : ctx === 'querystring' ? request.query : request.headers;
  const first = items[0];
  if (!first) return err.message;
  const field = (first.instancePath ?? '').replace(/^\//, '').replaceAll('/', '.');
  const got = preview(getPath(source, first.instancePath ?? '') ?? null);
  switch (first.keyword) {
    case 'maxLength': {
      // A multipart field over the parser's fieldSize (256 KiB) arrives cut short, so its length is then a lower bound.
      const value = getPath(source, first.instancePath ?? '');
      const text = typeof value === 'string' ? value : '';
      const cut = isMultipartRequest(request) && Buffer.byteLength(text) > 256 * 1024;
      return `Expected \`${field || ctx}\` to be at most ${String(first.params?.limit)} characters; got ${[...text].length}${cut ? ' or more' : ''}${isMultipartRequest(request) ? ' (the server refuses a longer field, it never cuts it short)' : ''}`;
    }
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
      return new UploadTooLargeError(`The request body is larger than the server's limit of ${request.routeOptions.bodyLimit ?? 'the configured'} bytes (\`bodyLimit\` of buildApp); send activation files to POST /interpret/upload, whose limit is \`mechint serve --upload-limit-mb N\``);
    case 'FST_REQ_FILE_TOO_LARGE':
      return new UploadTooLargeError('The uploaded file is larger than the server\'s upload limit: start it with a larger `mechint serve --upload-limit-mb N` (`uploadLimit` in bytes for buildApp)');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new BadRequestError(`A path parameter of ${request.method} ${clip(request.url.split('?')[0]!)} is too long; job ids are 36-character UUIDs`, { cause: err });
    case 'FST_ERR_BAD_URL':
      return new BadRequestError(`The path ${clip(request.url.split('?')[0]!)} is not a valid URL component (bad percent-encoding)`, { cause: err });
    case 'FST_PARTS_LIMIT':
    case 'FST_FILES_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return new UploadTooLargeError(`The multipart request has too many parts: send one \`file\` and the fields \`analysis_type\`, \`layer_name\`, \`config\` (${e.message})`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new UnsupportedMediaError(`Unsupported Content-Type \`${request.headers['content-type'] ?? '(none)'}\` for ${request.method} ${request.url.split('?')[0]}: send application/json, or multipart/form-data for uploads`);
  }
  if (isBrokenMultipart(e, request)) {
    return new BadRequestError(`The multipart body is malformed or cut short (${e.message}); send it again with curl -F "file=@activations.pt" -F "analysis_type=feature"`, { cause: err });
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

/**
 * The multipart parser (busboy) reports a truncated or malformed body as a plain Error without a
 * status or code ("Unexpected end of multipart data", "Boundary not found"), made in its own code.
 * File system errors carry a `code` (ENOSPC) and stay 500, as does a bug in a handler.
 */
function isBrokenMultipart(e: FastifyError, request: FastifyRequest): boolean {
  if (!isMultipartRequest(request) || !(e instanceof Error)) return false;
  if (typeof e.statusCode === 'number' || typeof e.code === 'string') return false;
  return /[\\/]busboy[\\/]/.test(e.stack ?? '');
}

export function errorBody(err: MechIntError): ErrorBody {
  return { statusCode: err.statusCode, code: err.code, error: STATUS_CODES[err.statusCode] ?? 'Error', message: err.message };
}

/** A Fastify error handler writing ErrorBody; 5xx are logged with their cause. */
export function mechintErrorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const e = toMechIntError(err, request);
  if (e.statusCode >= 500) request.log.error({ err }, e.message);
  if (e.statusCode === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', String((e as { retryAfterS?: number }).retryAfterS ?? 1));
  void reply.code(e.statusCode).type('application/json; charset=utf-8').send(errorBody(e));
}

/** Fastify's `frameworkErrors`: errors the router raises before any route runs, as our error body. */
export function mechintFrameworkErrors(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  mechintErrorHandler(err, request, reply);
}

/** Fastify's `clientErrorHandler`: a request that cannot even be parsed as HTTP gets our body, then the socket closes. */
export function mechintClientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'MECHINT_ERR_BAD_REQUEST', 'The request was not received in time']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'MECHINT_ERR_BAD_REQUEST', 'The request headers are larger than the server allows']
        : [400, 'MECHINT_ERR_BAD_REQUEST', 'The request is not valid HTTP or was cut short'];
  const body = JSON.stringify({ statusCode: status, code, error: STATUS_CODES[status], message });
  if (socket.writable) socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  socket.destroy(err);
}

export function mechintNotFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  const e = new RouteNotFoundError(`No route ${request.method} ${request.url.split('?')[0]}; see /docs for the API`);
  void reply.code(404).send(errorBody(e));
}
