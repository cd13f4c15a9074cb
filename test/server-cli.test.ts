/** `mechint serve`: binds 127.0.0.1 unless told otherwise, serves the cache, stops cleanly on SIGTERM, refuses bad flags. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tempDir } from './helpers.js';
import { plantCache } from './server-helpers.js';

const SERVE = pathToFileURL(join(import.meta.dirname, '..', 'src', 'cli', 'serve.ts')).href;

/** Runs `mechint serve ARGS` through registerServeCommand on a fresh commander program (main.ts wires the same). */
function serve(args: string[], env: NodeJS.ProcessEnv = {}) {
  const script = `
    import { Command } from 'commander';
    import { registerServeCommand } from ${JSON.stringify(SERVE)};
    const program = new Command().exitOverride();
    registerServeCommand(program);
    try { await program.parseAsync(['node', 'mechint', 'serve', ...${JSON.stringify(args)}]); }
    catch (err) { console.error('ERROR ' + (err.code ?? '') + ' ' + err.message); process.exitCode = 1; }
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const address = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', () => {
      const m = /serving (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`serve exited (${code}) before listening: ${err || out}`)));
  });
  return { child, address, exited, output: () => ({ out, err }) };
}

test('mechint serve binds 127.0.0.1 by default, serves the cache, and stops on SIGTERM', async () => {
  const cache = join(await tempDir('mechint-serve-'), 'cache');
  await plantCache(cache, 10);
  const s = serve(['--cache', cache, '--port', '0'], { MECHINT_API_KEY: '' });
  const url = await s.address;
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.match(s.output().out, /MECHINT_API_KEY/); // it says how to turn auth on
  const res = await fetch(`${url}/interpret/layers`);
  assert.equal(res.status, 200);
  assert.ok(((await res.json()) as { layers: unknown[] }).layers.length === 2);
  s.child.kill('SIGTERM');
  assert.equal(await s.exited, 0);
});

test('mechint serve refuses a bad --port and a --model that is not a model', async () => {
  const bad = serve(['--port', 'http']);
  await assert.rejects(bad.address);
  assert.match(bad.output().err, /--port/);
  const noModel = serve(['--model', join(await tempDir('mechint-serve-'), 'missing'), '--port', '0']);
  await assert.rejects(noModel.address);
  assert.match(noModel.output().err, /--model/);
});
