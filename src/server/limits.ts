/**
 * Request limits that buildApp applies app-wide, in hooks, so the route plugins need not know:
 * how many uploads are received at once, and how deeply a JSON body (or a multipart `config`
 * field) may nest.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { BadRequestError, TooManyUploadsError } from '../errors.js';

/** The route whose bodies are files. */
export const UPLOAD_ROUTE = '/interpret/upload';

/** Deepest nesting of arrays and objects a request body may have. Options are at most a few levels deep. */
export const MAX_JSON_DEPTH = 64;

/**
 * An onRequest hook: at most `max` requests to the upload route are received at once; the next one
 * is answered 503 (MECHINT_ERR_TOO_MANY_UPLOADS, `Retry-After`) before its body is read. A slot is
 * freed when the response has gone or the client went away.
 */
export function uploadConcurrencyLimit(max: number, retryAfterS = 1) {
  let active = 0;
  const hook = async function limitUploads(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (request.method !== 'POST' || request.routeOptions.url !== UPLOAD_ROUTE) return;
    if (active >= max) {
      // The body is not read: close the connection after the answer rather than drain it.
      reply.header('connection', 'close');
      throw new TooManyUploadsError(`${active} uploads are already being received (the limit is ${max}: \`maxConcurrentUploads\`, \`mechint serve --max-uploads\`); retry in ${retryAfterS} s`, retryAfterS);
    }
    active++;
    let released = false;
    reply.raw.once('close', () => {
      if (!released) {
        released = true;
        active--;
      }
    });
  };
  return Object.assign(hook, { active: () => active });
}

/** Nesting depth of a parsed JSON value (0 for a scalar), without recursion. */
export function jsonDepth(value: unknown, stopAt = Infinity): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    const depth = d + 1;
    if (depth > deepest) deepest = depth;
    if (deepest > stopAt) return deepest;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (child !== null && typeof child === 'object') stack.push([child, depth]);
  }
  return deepest;
}

/** Nesting depth of JSON text (brackets outside strings), without parsing it. */
export function jsonTextDepth(text: string, stopAt = Infinity): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > deepest) deepest = depth;
      if (deepest > stopAt) return deepest;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return deepest;
}

const tooDeep = (what: string, max: number) =>
  new BadRequestError(`${what} nests arrays or objects more than ${max} levels deep; analysis options are plain objects a few levels deep`);

const isMultipart = (request: FastifyRequest) => /^multipart\//i.test(String(request.headers['content-type'] ?? ''));

/**
 * Hooks refusing a JSON body, or a multipart `config` field, nested deeper than `max` (400): the
 * JSON body in preValidation (before the schema looks at it), the multipart field in preHandler
 * (the multipart plugin parses in its own preValidation).
 */
export function jsonDepthLimit(max = MAX_JSON_DEPTH) {
  return {
    async preValidation(request: FastifyRequest): Promise<void> {
      const body = request.body;
      if (body === null || typeof body !== 'object' || isMultipart(request)) return;
      if (jsonDepth(body, max) > max) throw tooDeep('The request body', max);
    },
    async preHandler(request: FastifyRequest): Promise<void> {
      const body = request.body;
      if (body === null || typeof body !== 'object' || !isMultipart(request)) return;
      const config = (body as Record<string, unknown>).config;
      if (typeof config === 'string' && jsonTextDepth(config, max) > max) throw tooDeep('The `config` field', max);
    },
  };
}

const signals = new WeakMap<FastifyRequest, AbortSignal>();

/**
 * An onRequest hook giving each request an AbortSignal that aborts when its client goes away
 * before the answer is sent (read it with clientSignal). Fastify's own `request.signal` aborts as
 * soon as the body has been read, so it cannot tell that.
 */
export async function trackClient(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const ac = new AbortController();
  signals.set(request, ac.signal);
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
}

/**
 * The request's client signal: pass it as `signal` to JobManager.submit so a job whose client hung
 * up (even before the job was submitted) is cancelled and its worker stopped. A request the hook
 * did not see gets a signal that never aborts.
 */
export function clientSignal(request: FastifyRequest): AbortSignal {
  return signals.get(request) ?? new AbortController().signal;
}
