/**
 * A user's first minutes: a plain tfjs script that imports mechint trains with MechIntCallback
 * without calling initBackend(), a backend the user chose is kept, their own uncaught errors print
 * as Node prints them (no kilobytes of the wasm glue's minified code first), a fresh server answers
 * its first concurrent requests, and `mechint --version` says the version.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tempDir } from './helpers.js';
import { plantCache, spawnServe } from './server-helpers.js';

const ROOT = join(import.meta.dirname, '..');
const INDEX = pathToFileURL(join(ROOT, 'src', 'index.ts')).href;
const MAIN = pathToFileURL(join(ROOT, 'src', 'cli', 'main.ts')).href;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs an ES module script in a fresh Node (tsx for mechint's sources), from the repository root so `@tensorflow/tfjs` resolves. */
function runScript(script: string, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`script ran past ${timeoutMs} ms: ${stderr.slice(0, 500)}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const FIT = `
  const model = tf.sequential({ layers: [tf.layers.dense({ units: 8, inputShape: [4], activation: 'relu', name: 'hidden' }), tf.layers.dense({ units: 1, name: 'out' })] });
  model.compile({ optimizer: 'adam', loss: 'meanSquaredError' });
  const xs = tf.randomNormal([64, 4]);
  const ys = tf.randomNormal([64, 1]);
`;

test('a plain tfjs script that imports mechint trains with MechIntCallback and captures, without calling initBackend()', async () => {
  const dir = join(await tempDir('mechint-first-'), 'cache');
  const run = await runScript(`
    import * as tf from '@tensorflow/tfjs';
    import { MechIntCallback, MechIntConfig } from ${JSON.stringify(INDEX)};
    ${FIT}
    const config = new MechIntConfig({ sampleLayers: ['hidden'], storagePath: ${JSON.stringify(dir)}, saveHiddenEveryNSteps: 2, verbose: false });
    const history = await model.fit(xs, ys, { epochs: 2, batchSize: 16, verbose: 0, callbacks: [new MechIntCallback(config)] });
    console.log(JSON.stringify({ backend: tf.getBackend(), epochs: history.epoch.length }));
  `);
  assert.equal(run.code, 0, run.stderr);
  const out = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { backend: string; epochs: number };
  assert.equal(out.backend, 'wasm');
  assert.equal(out.epochs, 2);
  assert.ok(!run.stderr.includes('Hi, looks like'), 'no tfjs cpu banner');
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { shards: unknown[] };
  assert.ok(manifest.shards.length >= 1, 'shards were written');
  assert.ok((await readdir(dir)).some((f) => f.endsWith('.safetensors')));
});

test('a backend the user chose before importing mechint is kept', async () => {
  const run = await runScript(`
    import * as tf from '@tensorflow/tfjs';
    await tf.setBackend('cpu');
    const { initBackend } = await import(${JSON.stringify(INDEX)});
    const before = tf.getBackend();
    await initBackend();
    ${FIT}
    await model.fit(xs, ys, { epochs: 1, verbose: 0 });
    console.log(JSON.stringify({ before, after: tf.getBackend() }));
  `);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout.trim().split('\n').at(-1)!), { before: 'cpu', after: 'cpu' });
});

test('a user\'s own uncaught error or unhandled rejection prints its message, with no wasm glue code before it', async () => {
  const cases = {
    sync: `throw new Error('my own bug 42');`,
    later: `setTimeout(() => { throw new Error('my own bug 42'); }, 10);`,
    rejection: `Promise.reject(new Error('my own bug 42'));`,
    afterFit: `${FIT} await model.fit(xs, ys, { epochs: 1, verbose: 0 }); throw new Error('my own bug 42');`,
  };
  for (const [name, body] of Object.entries(cases)) {
    const run = await runScript(`
      import * as tf from '@tensorflow/tfjs';
      import { MechIntConfig } from ${JSON.stringify(INDEX)};
      new MechIntConfig({});
      ${body}
    `);
    assert.equal(run.code, 1, `${name}: exit code ${run.code}`);
    assert.match(run.stderr, /Error: my own bug 42/, name);
    assert.ok(run.stderr.length < 3000, `${name}: ${run.stderr.length} characters on stderr: ${run.stderr.slice(0, 300)}`);
    assert.ok(!/tf-backend-wasm/.test(run.stderr), `${name}: stderr points into the wasm glue: ${run.stderr.slice(0, 300)}`);
    assert.ok(run.stderr.split('\n').every((line) => line.length < 500), `${name}: no huge line`);
  }
});

test('a fresh server answers its first concurrent requests, of every kind, all with 200', async () => {
  const cache = join(await tempDir('mechint-first-'), 'cache');
  await plantCache(cache, 50);
  const serve = spawnServe(['--cache', cache, '--port', '0', '--no-dashboard']);
  try {
    const url = await serve.url;
    const requests = [
      { analysis_type: 'neuron', layer_name: 'layer1' },
      { analysis_type: 'feature', layer_name: 'layer1', config: { n_clusters: 2 } },
      { analysis_type: 'feature', layer_name: 'blocks.seq', config: { n_clusters: 2 } },
      { analysis_type: 'neuron', layer_name: 'blocks.seq' },
      { analysis_type: 'sae', layer_name: 'layer1', config: { n_latents: 8, k: 2, epochs: 1 } },
      { analysis_type: 'feature', layer_name: 'layer1', config: { n_clusters: 3 } },
      { analysis_type: 'neuron', layer_name: 'layer1' },
      { analysis_type: 'feature', layer_name: 'blocks.seq', config: { n_clusters: 3 } },
    ];
    const answers = await Promise.all([
      ...requests.map(async (body) => {
        const res = await fetch(`${url}/interpret`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        return { body, status: res.status, text: await res.text() };
      }),
      fetch(`${url}/interpret/layers`).then(async (res) => ({ body: 'layers', status: res.status, text: await res.text() })),
    ]);
    for (const a of answers) assert.equal(a.status, 200, `${JSON.stringify(a.body)}: ${a.text.slice(0, 300)}`);
  } finally {
    serve.child.kill('SIGTERM');
    await serve.exited;
  }
});

test('mechint --version prints the package version', async () => {
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const run = await runScript(`import { main } from ${JSON.stringify(MAIN)}; process.exitCode = await main(['node', 'mechint', '--version']);`);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.trim(), pkg.version);
  // bin/mechint.js answers it without loading TensorFlow.js (or needing dist/).
  const bin = await new Promise<Run>((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'mechint.js'), '--version'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
  assert.equal(bin.code, 0, bin.stderr);
  assert.equal(bin.stdout.trim(), pkg.version);
});
