/** Shared by the server tests: a planted cache, a listening app on port 0, and real curl. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
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

export interface ServeProcess {
  child: ChildProcess;
  /** The URL the server printed once it listens; rejects if it exits first. */
  url: Promise<string>;
  exited: Promise<number | null>;
  stderr: () => string;
}

/** `mechint serve ARGS` as bin/mechint.js runs it, on the sources, in a child process with no API key. */
export function spawnServe(args: string[]): ServeProcess {
  const main = pathToFileURL(join(import.meta.dirname, '..', 'src', 'cli', 'main.ts')).href;
  const script = `import { main } from ${JSON.stringify(main)}; process.exitCode = await main(${JSON.stringify(['node', 'mechint', 'serve', ...args])});`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: join(import.meta.dirname, '..'), env: { ...process.env, MECHINT_API_KEY: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /serving (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`serve exited (${code}): ${err}`)));
  });
  return { child, url, exited, stderr: () => err };
}
