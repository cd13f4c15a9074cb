/**
 * Installing mechint: TensorFlow.js is a peer dependency (the user's own copy is used, never a
 * second one), and `npm ci` on this Node prints no EBADENGINE warning. The consumer-project check
 * (npm pack, install next to the user's tfjs, `npm ls`, a fit with MechIntCallback) needs the npm
 * registry or a warm cache and takes a minute: it runs with MECHINT_TEST_PACK=1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './helpers.js';

const execFileP = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');
const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
const TFJS = ['@tensorflow/tfjs', '@tensorflow/tfjs-backend-wasm'];

async function npm(args: string[], cwd: string, timeoutMs = 300_000): Promise<{ stdout: string; stderr: string }> {
  return execFileP('npm', args, { cwd, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_update_notifier: 'false' } });
}

const hasNpm = await execFileP('npm', ['--version']).then(() => true, () => false);

test('TensorFlow.js and its wasm backend are peer dependencies (and dev dependencies here), not dependencies', () => {
  for (const name of TFJS) {
    assert.ok(pkg.peerDependencies?.[name], `${name} is a peer dependency`);
    assert.equal(pkg.dependencies?.[name], undefined, `${name} is not a dependency (a user's tfjs would be installed twice)`);
    assert.equal(pkg.devDependencies?.[name], pkg.peerDependencies?.[name], `${name} is installed for development with the same range`);
  }
});

test('npm ci from the lockfile prints no EBADENGINE warning on this Node', { skip: !hasNpm && 'npm is not on PATH' }, async () => {
  const dir = await tempDir('mechint-ci-');
  await copyFile(join(ROOT, 'package.json'), join(dir, 'package.json'));
  await copyFile(join(ROOT, 'package-lock.json'), join(dir, 'package-lock.json'));
  // A dry run reads the lockfile's engines and warns as a real install would, without the network.
  const { stdout, stderr } = await npm(['ci', '--dry-run', '--ignore-scripts', '--offline', '--no-audit', '--no-fund'], dir);
  const warnings = `${stdout}\n${stderr}`.split('\n').filter((l) => /EBADENGINE/.test(l));
  assert.deepEqual(warnings, [], `on Node ${process.version}`);
});

test('a consumer that installed tfjs first gets mechint without a second tfjs, and trains with MechIntCallback', { skip: (process.env.MECHINT_TEST_PACK !== '1' && 'set MECHINT_TEST_PACK=1 (needs the npm registry or a warm cache, about a minute)') || (!hasNpm && 'npm is not on PATH') }, async () => {
  const dir = await tempDir('mechint-consumer-');
  await npm(['run', 'build'], ROOT).catch(() => undefined); // dist/ as `npm pack` would ship it (prepare)
  await npm(['pack', '--ignore-scripts', '--pack-destination', dir], ROOT);
  const tarball = (await readdir(dir)).find((f) => f.endsWith('.tgz'))!;
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
  const offline = ['--prefer-offline', '--no-audit', '--no-fund'];
  const first = await npm(['install', ...offline, `@tensorflow/tfjs@${pkg.peerDependencies!['@tensorflow/tfjs']}`], dir);
  const second = await npm(['install', ...offline, `./${tarball}`], dir);
  const output = [first, second].map((r) => `${r.stdout}\n${r.stderr}`).join('\n');
  assert.ok(!/EBADENGINE/.test(output), output.split('\n').filter((l) => /EBADENGINE/.test(l)).join('\n'));

  const { stdout } = await npm(['ls', '@tensorflow/tfjs', '--all', '--json'], dir);
  const copies = new Set<string>();
  const walk = (deps: Record<string, { version?: string; dependencies?: Record<string, unknown> }> | undefined, path: string) => {
    for (const [name, d] of Object.entries(deps ?? {})) {
      if (name === '@tensorflow/tfjs' && d.version) copies.add(d.version);
      walk(d.dependencies as never, `${path}/${name}`);
    }
  };
  walk((JSON.parse(stdout) as { dependencies?: never }).dependencies, '');
  assert.equal(copies.size, 1, `one @tensorflow/tfjs: ${[...copies].join(', ')}`);
  const tfjsDirs = (await execFileP('find', [join(dir, 'node_modules'), '-type', 'd', '-path', '*/@tensorflow/tfjs'])).stdout.trim().split('\n');
  assert.deepEqual(tfjsDirs, [join(dir, 'node_modules', '@tensorflow', 'tfjs')]);

  await writeFile(
    join(dir, 'train.js'),
    `import * as tf from '@tensorflow/tfjs';
import { MechIntCallback, MechIntConfig } from 'mechint';
const model = tf.sequential({ layers: [tf.layers.dense({ units: 8, inputShape: [4], activation: 'relu', name: 'hidden' }), tf.layers.dense({ units: 1 })] });
model.compile({ optimizer: 'adam', loss: 'meanSquaredError' });
await model.fit(tf.randomNormal([32, 4]), tf.randomNormal([32, 1]), { epochs: 1, verbose: 0, callbacks: [new MechIntCallback(new MechIntConfig({ sampleLayers: ['hidden'], storagePath: 'cache', saveHiddenEveryNSteps: 1, verbose: false }))] });
console.log(tf.getBackend());
`,
  );
  const run = await execFileP(process.execPath, ['train.js'], { cwd: dir });
  assert.equal(run.stdout.trim(), 'wasm');
  assert.ok((await readdir(join(dir, 'cache'))).includes('manifest.json'));
});
