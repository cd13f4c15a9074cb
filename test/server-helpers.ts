/** Shared by the server tests: a planted cache, a listening app on port 0, and real curl. */
import { execFile } from 'node:child_process';
import { after } from 'node:test';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { buildApp, type BuildAppOptions } from '../src/server/app.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix } from './helpers.js';

const execFileP = promisify(execFile);

/**
 * Two shards: `layer1` [n, 6] with units 4 and 5 always 0 (dead) and the rest ≥ 0;
 * `blocks.seq` [n, 3, 4].
 */
export async function plantCache(dir: string, rowsPerShard = 50, shards = 2): Promise<{ layer1: Float32Array }> {
  const writer = new ShardWriter({ dir });
  const all: number[] = [];
  for (let s = 0; s < shards; s++) {
    const layer1 = seededMatrix(rowsPerShard, 6, 11 + s).map((v, i) => (i % 6 >= 4 ? 0 : Math.max(0, v + 0.2)));
    all.push(...layer1);
    await writer.write({
      layers: { layer1: { shape: [rowsPerShard, 6], data: layer1 }, 'blocks.seq': { shape: [rowsPerShard, 3, 4], data: seededMatrix(rowsPerShard * 3, 4, 21 + s) } },
      globalStep: s * 200,
    });
  }
  await writer.finish();
  return { layer1: Float32Array.from(all) };
}

/** buildApp + listen on 127.0.0.1:0; closed after the test file. */
export async function startServer(options: BuildAppOptions): Promise<{ app: FastifyInstance; url: string }> {
  const app = await buildApp({ apiKey: null, ...options });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  after(() => app.close());
  return { app, url };
}

export interface CurlResult {
  status: number;
  body: string;
  json: () => Record<string, unknown>;
}

/** Runs the real curl (never blocking this process' event loop, which serves the request). */
export async function curl(args: string[], cwd?: string): Promise<CurlResult> {
  const { stdout } = await execFileP('curl', ['-sS', '-w', '\n%{http_code}', ...args], { cwd, maxBuffer: 64 * 1024 * 1024 });
  const cut = stdout.lastIndexOf('\n');
  const body = stdout.slice(0, cut);
  return { status: Number(stdout.slice(cut + 1)), body, json: () => JSON.parse(body) as Record<string, unknown> };
}

export async function hasCurl(): Promise<boolean> {
  return execFileP('curl', ['--version']).then(() => true, () => false);
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

export async function getJson(url: string, init: RequestInit = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, init);
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
