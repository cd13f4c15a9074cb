/**
 * Bearer-token auth: with an API key set, a request must carry `Authorization: Bearer <key>`.
 * Keys are compared as sha256 digests with timingSafeEqual, so the time taken says nothing about
 * how much of the key matched (or its length).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ConfigError, UnauthorizedError } from '../errors.js';

/** The environment variable `mechint serve` and buildApp read the key from. */
export const API_KEY_ENV = 'MECHINT_API_KEY';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** True when `presented` equals `expected`, in time independent of where they differ. */
export function keysMatch(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

/**
 * Refuses, with a ConfigError naming `name`, a key no client could send in
 * `Authorization: Bearer <key>`: empty, holding whitespace (a newline read from a file), control
 * or non-ASCII characters, or shorter than 8 characters.
 */
export function assertSendableKey(key: unknown, name: string): asserts key is string {
  if (typeof key !== 'string') throw new ConfigError(`Expected ${name} to be a string of at least 8 characters; got ${typeof key}`);
  if (key === '') throw new ConfigError(`Expected ${name} to be a key of at least 8 characters; got an empty string (pass \`apiKey: null\` to turn auth off)`);
  if (/\s/.test(key)) {
    throw new ConfigError(`Expected ${name} to have no whitespace; got ${key.length} characters with whitespace${/\s$/.test(key) ? ' at the end (a newline from a file? trim it)' : ''}: a client could never send it in \`Authorization: Bearer <key>\``);
  }
  if (!/^[\x21-\x7e]+$/.test(key)) throw new ConfigError(`Expected ${name} to be printable ASCII (it travels in an HTTP header); got ${key.length} characters, some outside it`);
  if (key.length < 8) throw new ConfigError(`Expected ${name} to be a string of at least 8 characters; got ${key.length} characters`);
}

export interface BearerAuthOptions {
  apiKey: string;
  /** Paths (without query) that need no key. @default ['/health'] */
  publicPaths?: readonly string[];
}

/** An onRequest hook that answers 401 unless the request presents the key. */
export function bearerAuth(options: BearerAuthOptions) {
  assertSendableKey(options.apiKey, '`apiKey`');
  const open = new Set(options.publicPaths ?? ['/health']);
  const expected = options.apiKey;
  return async function checkBearer(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const path = request.url.split('?', 1)[0]!;
    if (open.has(path)) return;
    const header = request.headers.authorization;
    const match = typeof header === 'string' ? /^Bearer[ \t]+(\S+)\s*$/i.exec(header) : null;
    if (!match) {
      reply.header('www-authenticate', 'Bearer realm="mechint"');
      throw new UnauthorizedError('This server needs an API key: send `Authorization: Bearer <key>` (the key is the server\'s MECHINT_API_KEY)');
    }
    if (!keysMatch(match[1]!, expected)) {
      reply.header('www-authenticate', 'Bearer realm="mechint", error="invalid_token"');
      throw new UnauthorizedError('The API key in `Authorization: Bearer <key>` is not this server\'s key');
    }
  };
}
