import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { open, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tf } from '../src/backend.js';
import { MechIntCallback } from '../src/capture/callback.js';
import { ManifestError, StorageError } from '../src/errors.js';
import { getLayerByPath } from '../src/model/layer-paths.js';
import { sha256File } from '../src/storage/atomic.js';
import { readManifest } from '../src/storage/manifest.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';
import { wideModel } from './fixtures/wide-model.js';

/** A tmpfs of `sizeKb` (disk full is then real ENOSPC), optionally read-only; null where mounting is not permitted. */
function mountTmpfs(sizeKb: number): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'mechint-tmpfs-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKb}k`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
  after(() => {
    spawnSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}
const NO_MOUNT = 'cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): skipped';

async function fitWith(model: tf.LayersModel, storagePath: string, steps: number) {
  const xs = tf.randomNormal([steps * 128, 32], 0, 1, 'float32', 1);
  const ys = tf.randomNormal([steps * 128, 1], 0, 1, 'float32', 2);
  let batches = 0;
  const counter = new tf.CustomCallback({ onBatchEnd: async () => void batches++ });
  const lines: string[] = [];
  const orig = { log: console.log, warn: console.warn };
  console.log = console.warn = (...a: unknown[]) => void lines.push(a.join(' '));
  const cb = new MechIntCallback({ sampleLayers: ['h1', 'h2'], saveHiddenEveryNSteps: 1, storagePath, verbose: true });
  let error: unknown = null;
  try {
    await model.fit(xs, ys, { epochs: 1, batchSize: 128, callbacks: [cb, counter], verbose: 0 });
  } catch (err) {
    error = err;
  } finally {
    Object.assign(console, orig);
    tf.dispose([xs, ys]);
  }
  return { error, batches: () => batches, lines, cb };
}

test('disk full (ENOSPC): fit ends with a StorageError, the manifest says failed with the error, one warning, no hooks left', async (t) => {
  const mnt = mountTmpfs(1200);
  if (!mnt) return t.skip(NO_MOUNT);
  const dir = join(mnt, 'cache');
  const model = await wideModel();
  const r = await fitWith(model, dir, 40);
  const err = r.error as StorageError;
  assert.ok(err instanceof StorageError, `fit rejected with ${String(err)}`);
  assert.equal(err.code, 'MECHINT_ERR_STORAGE');
  assert.equal(err.errno, 'ENOSPC');
  assert.match(err.message, /activations_shard_\d+_step_\d+\.safetensors: the disk is full \(ENOSPC\); free space/);
  assert.ok(r.batches() < 40, 'training stopped at the failure');
  assert.ok(!Object.hasOwn(getLayerByPath(model, 'h1'), 'call'), 'hooks removed although tfjs called no onTrainEnd');

  const manifest = (await readManifest(dir))!;
  assert.equal(manifest.status, 'failed');
  assert.equal(manifest.error?.code, 'MECHINT_ERR_STORAGE');
  assert.match(manifest.error!.message, /ENOSPC.*at global step \d+/);
  assert.ok(manifest.shards.length >= 1);
  for (const s of manifest.shards) assert.equal(await sha256File(join(dir, s.file)), s.sha256, `${s.file} intact`);
  const warnings = r.lines.filter((l) => /ENOSPC|disk is full/.test(l));
  assert.equal(warnings.length, 1, r.lines.join('\n'));
  assert.ok(!r.lines.some((l) => /Training done/.test(l)), 'no final line claiming success');
  assert.ok(!(await readdir(dir)).some((f) => f.includes('.tmp-')), 'the partial shard was removed');
});

test('read-only storage: fit fails at train begin with a StorageError (EROFS), before any batch, naming no manifest', async (t) => {
  const mnt = mountTmpfs(1024);
  if (!mnt) return t.skip(NO_MOUNT);
  mkdirSync(join(mnt, 'cache'));
  assert.equal(spawnSync('mount', ['-o', 'remount,ro', mnt]).status, 0);
  const model = await wideModel();
  const r = await fitWith(model, join(mnt, 'cache'), 5);
  const err = r.error as StorageError;
  assert.ok(err instanceof StorageError, `fit rejected with ${String(err)}`);
  assert.equal(err.errno, 'EROFS');
  assert.match(err.message, /read-only \(EROFS\); set `storage_path` to a writable directory/);
  assert.equal(r.batches(), 0);
  assert.ok(!Object.hasOwn(getLayerByPath(model, 'h1'), 'call'), 'no hook left');
  assert.ok(!r.lines.some((l) => /manifest/.test(l)), r.lines.join('\n'));
});

test('a corrupted manifest.json fails fit at train begin, not after the epochs', async () => {
  const dir = await tempDir();
  await writeFile(join(dir, 'manifest.json'), '{"format": "mechint-manifest", "shards": [');
  const model = await wideModel();
  const r = await fitWith(model, dir, 5);
  assert.ok(r.error instanceof ManifestError, String(r.error));
  assert.match((r.error as Error).message, /manifest\.json is not valid JSON/);
  assert.equal(r.batches(), 0);
  assert.ok(!Object.hasOwn(getLayerByPath(model, 'h1'), 'call'));
  assert.ok(!(await readdir(dir)).includes('manifest.lock'), 'the lock is released');
});

test('inspect lists the intact shards and reports one with a corrupted header by name, instead of aborting', async () => {
  const dir = await tempDir();
  const w = new ShardWriter({ dir });
  for (let s = 0; s < 3; s++) await w.write({ layers: { x: { shape: [4, 3], data: seededMatrix(4, 3, s + 1) } }, globalStep: s * 10 });
  await w.finish();
  const bad = 'activations_shard_000001_step_10.safetensors';
  const fh = await open(join(dir, bad), 'r+');
  await fh.write(Buffer.from('garbage!'), 0, 8, 8); // the JSON header no longer parses
  await fh.close();
  const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/cli.ts', 'inspect', dir, ...args], { encoding: 'utf8' });
  const run = cli('--json');
  assert.equal(run.status, 1, run.stderr);
  const report = JSON.parse(run.stdout);
  assert.deepEqual(report.shards.map((s: { file: string; checksum: string }) => [s.file, s.checksum]), [
    ['activations_shard_000000_step_0.safetensors', 'ok'],
    [bad, 'corrupted'],
    ['activations_shard_000002_step_20.safetensors', 'ok'],
  ]);
  assert.equal(report.corrupted[0].file, bad);
  assert.equal(report.corrupted[0].code, 'MECHINT_ERR_FORMAT');
  assert.deepEqual(report.layers.map((l: { name: string; rows: number }) => [l.name, l.rows]), [['x', 8]]);
  assert.match(run.stderr, new RegExp(`${bad} is corrupted: .*MECHINT_ERR_FORMAT`));
  const text = cli();
  assert.match(text.stdout, new RegExp(`Corrupted: ${bad}`));
  assert.match(text.stdout, /activations_shard_000002_step_20\.safetensors/);
});
