import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from '../src/storage/atomic.js';
import { readManifest } from '../src/storage/manifest.js';
import { tempDir } from './helpers.js';

const child = (dir: string, epochs: number, mode = '') =>
  spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/train-child.ts', dir, String(epochs), mode], { stdio: ['ignore', 'pipe', 'pipe'] });

async function waitForShards(dir: string, n: number, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const files = await readdir(dir).catch(() => [] as string[]);
    if (files.filter((f) => f.endsWith('.safetensors')).length >= n) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no ${n} shards within ${timeoutMs} ms`);
}

test('after SIGKILL mid-training every listed shard exists and matches its sha256, and a new run continues the numbering', async () => {
  const dir = await tempDir();
  const proc = child(dir, 1000);
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  await waitForShards(dir, 6, 60_000);
  proc.kill('SIGKILL');
  await exited;

  // What a reader sees: manifest.json merged with the journal manifest.log.
  const manifest = (await readManifest(dir))!;
  assert.equal(manifest.status, 'running');
  assert.ok(manifest.shards.length >= 5);
  for (const s of manifest.shards) {
    assert.ok(!s.file.startsWith('.') && !s.file.includes('.tmp-'), `temporary file listed: ${s.file}`);
    assert.equal(await sha256File(join(dir, s.file)), s.sha256, `${s.file} does not match its sha256`);
  }
  const ids = manifest.shards.map((s) => s.shard_id);
  assert.deepEqual(ids, [...ids.keys()]);

  // The killed run's lock is stale (its pid is gone): the next run takes it over.
  const second = child(dir, 1);
  let out = '';
  let err = '';
  second.stdout.on('data', (d) => (out += d));
  second.stderr.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((resolve) => second.on('exit', resolve));
  assert.equal(code, 0, err);
  assert.match(out, /done/);
  const after = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(after.status, 'complete');
  const onDisk = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).length;
  assert.equal(after.shards.length, onDisk, 'every shard on disk is listed in manifest.json (a crash-orphaned one is adopted)');
  const newIds = after.shards.map((s: { shard_id: number }) => s.shard_id);
  assert.deepEqual(newIds, [...newIds.keys()], 'numbering continues without gaps or repeats');
  assert.ok(after.shards.length >= manifest.shards.length + 4, 'the second run added its 4 shards after the first run\'s');
  const left = await readdir(dir);
  assert.ok(!left.some((f) => f.includes('.tmp-')), 'stale temporary files removed');
  assert.ok(!left.includes('manifest.log') && !left.includes('manifest.lock'), `journal compacted and lock released at the end: ${left.filter((f) => !f.endsWith('.safetensors')).join(', ')}`);
});

test('kill -9 while saving every step loses at most the step being written: every step before it is listed and intact', async () => {
  const dir = await tempDir();
  const proc = child(dir, 1000, 'steps');
  let lastStep = -1;
  let buffered = '';
  const killed = new Promise<void>((resolve) => {
    proc.stdout.on('data', (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const l of lines) {
        const m = /^step (\d+)$/.exec(l);
        if (m) lastStep = Number(m[1]);
      }
      // Kill at once, while the next save is being written.
      if (lastStep >= 40 && proc.exitCode === null && !proc.killed) proc.kill('SIGKILL');
    });
    proc.on('exit', () => resolve());
  });
  await killed;
  assert.ok(lastStep >= 40, `the child trained ${lastStep + 1} steps`);

  const manifest = (await readManifest(dir))!;
  const steps = manifest.shards.map((s) => s.global_step).sort((a, b) => a - b);
  // "step N" is printed after step N's save started, which waited for step N-1's shard to be listed.
  for (let s = 0; s < lastStep; s++) assert.ok(steps.includes(s), `step ${s} lost (the child had reported step ${lastStep}; listed up to ${steps.at(-1)})`);
  assert.deepEqual(steps, [...steps.keys()], 'no gaps');
  for (const s of manifest.shards) assert.equal(await sha256File(join(dir, s.file)), s.sha256, `${s.file} intact`);
});

test('memory stays bounded when shard writes are slower than training steps (a save waits for the previous one)', () => {
  const dir = join(process.env.TMPDIR ?? '/tmp', `mechint-bp-${process.pid}`);
  const run = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', 'test/fixtures/backpressure-child.ts', dir, '150', '25'], { encoding: 'utf8' });
  spawnSync('rm', ['-rf', dir]);
  assert.equal(run.status, 0, run.stderr);
  const r = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { steps: number; shards: number; snapshot_bytes: number; peak_growth_bytes: number; max_pending_writes: number };
  assert.equal(r.steps, 150);
  assert.equal(r.shards, 150, 'one shard per save step: nothing coalesced, nothing dropped');
  assert.ok(r.max_pending_writes <= 1, `${r.max_pending_writes} shard writes waited at once`);
  // The cache and one snapshot being written, plus slack for the runtime: far below 150 pending snapshots.
  assert.ok(r.peak_growth_bytes < 6 * r.snapshot_bytes + 8e6, `peak growth ${(r.peak_growth_bytes / 1e6).toFixed(1)} MB for ${(r.snapshot_bytes / 1e6).toFixed(2)} MB snapshots`);
});
