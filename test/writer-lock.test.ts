import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { StorageLockedError } from '../src/errors.js';
import { sha256File } from '../src/storage/atomic.js';
import { readManifest } from '../src/storage/manifest.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';

const child = (dir: string, epochs: number) =>
  spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/train-child.ts', dir, String(epochs)], { stdio: ['ignore', 'pipe', 'pipe'] });

function finished(proc: ReturnType<typeof child>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d) => (stdout += d));
  proc.stderr!.on('data', (d) => (stderr += d));
  return new Promise((resolve) => proc.on('exit', (code) => resolve({ code, stdout, stderr })));
}

async function waitForShards(dir: string, n: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if ((await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.safetensors')).length >= n) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no ${n} shards within ${timeoutMs} ms`);
}

const block = (seed: number) => ({ x: { shape: [4, 3], data: seededMatrix(4, 3, seed) } });

test('a second training process on the same storage path fails at train begin naming the first (pid, host, since); nothing of the first is lost', async () => {
  const dir = await tempDir();
  const first = child(dir, 1000);
  const firstDone = finished(first);
  await waitForShards(dir, 3, 60_000);
  const lock = JSON.parse(await readFile(join(dir, 'manifest.lock'), 'utf8'));
  assert.equal(lock.pid, first.pid);
  assert.equal(lock.hostname, hostname());

  const second = await finished(child(dir, 1));
  assert.notEqual(second.code, 0, 'the second run must fail');
  assert.match(second.stderr, /MECHINT_ERR_STORAGE_LOCKED/);
  assert.match(second.stderr, new RegExp(`pid ${first.pid} on ${hostname()} \\(training\\) since ${lock.started.replace(/[.]/g, '\\.')}`));
  assert.doesNotMatch(second.stdout, /done/);

  await waitForShards(dir, 8, 60_000);
  first.kill('SIGKILL');
  await firstDone;
  const manifest = (await readManifest(dir))!;
  assert.equal(manifest.runs.length, 1, 'the second process never opened the manifest');
  const ids = manifest.shards.map((s) => s.shard_id);
  assert.deepEqual(ids, [...ids.keys()], 'the first run\'s numbering is untouched');
  for (const s of manifest.shards) assert.equal(await sha256File(join(dir, s.file)), s.sha256, `${s.file} intact`);
  // Saving every step from step 0, the first run's shard N is step N: a second writer's would break that.
  const onDisk = (await readdir(dir)).filter((f) => f.endsWith('.safetensors'));
  for (const f of onDisk) assert.match(f, /^activations_shard_0*(\d+)_step_\1\.safetensors$/);
});

test('in one process, a second ShardWriter on the same directory is refused until the first finishes', async () => {
  const dir = await tempDir();
  const a = new ShardWriter({ dir });
  await a.write({ layers: block(1), globalStep: 0 });
  const b = new ShardWriter({ dir });
  await assert.rejects(b.write({ layers: block(2), globalStep: 1 }), (e: unknown) => e instanceof StorageLockedError && e.code === 'MECHINT_ERR_STORAGE_LOCKED' && e.holder.pid === process.pid && /writer in this process/.test(e.message));
  await a.finish();
  assert.ok(!(await readdir(dir)).includes('manifest.lock'), 'finish releases the lock');
  const rec = await b.write({ layers: block(2), globalStep: 1 });
  assert.equal(rec.shard_id, 1, 'numbering continues after the first writer');
  await b.finish();
  const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.deepEqual(m.shards.map((s: { shard_id: number }) => s.shard_id), [0, 1]);
});

test('a lock left by a dead process on this host is taken over; one from another host is not', async () => {
  const dir = await tempDir();
  // A pid that does not run: a finished child's.
  const gone = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => gone.on('exit', r));
  await writeFile(join(dir, 'manifest.lock'), JSON.stringify({ pid: gone.pid, hostname: hostname(), started: '2020-01-01T00:00:00.000Z', token: 'x', purpose: 'training' }));
  const w = new ShardWriter({ dir });
  await w.write({ layers: block(1), globalStep: 0 });
  assert.equal(JSON.parse(await readFile(join(dir, 'manifest.lock'), 'utf8')).pid, process.pid);
  await w.finish();

  await writeFile(join(dir, 'manifest.lock'), JSON.stringify({ pid: 1, hostname: 'elsewhere', started: '2020-01-01T00:00:00.000Z', token: 'y', purpose: 'training' }));
  const v = new ShardWriter({ dir });
  await assert.rejects(v.open(), (e: unknown) => e instanceof StorageLockedError && /pid 1 on elsewhere \(training\) since 2020-01-01T00:00:00\.000Z/.test((e as Error).message) && /delete .*manifest\.lock/.test((e as Error).message));
});
