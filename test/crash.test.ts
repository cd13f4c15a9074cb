import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File } from '../src/storage/atomic.js';
import { tempDir } from './helpers.js';

const child = (dir: string, epochs: number) =>
  spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/train-child.ts', dir, String(epochs)], { stdio: ['ignore', 'pipe', 'pipe'] });

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

  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(manifest.status, 'running');
  assert.ok(manifest.shards.length >= 5);
  for (const s of manifest.shards) {
    assert.ok(!s.file.startsWith('.') && !s.file.includes('.tmp-'), `temporary file listed: ${s.file}`);
    assert.equal(await sha256File(join(dir, s.file)), s.sha256, `${s.file} does not match its sha256`);
  }
  const ids = manifest.shards.map((s: { shard_id: number }) => s.shard_id);
  assert.deepEqual(ids, [...ids.keys()]);

  const second = child(dir, 1);
  let out = '';
  second.stdout.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => second.on('exit', resolve));
  assert.equal(code, 0);
  assert.match(out, /done/);
  const after = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(after.status, 'complete');
  const onDisk = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).length;
  assert.equal(after.shards.length, onDisk, 'every shard on disk is listed (a crash-orphaned one is adopted)');
  const newIds = after.shards.map((s: { shard_id: number }) => s.shard_id);
  assert.deepEqual(newIds, [...newIds.keys()], 'numbering continues without gaps or repeats');
  assert.ok(after.shards.length >= manifest.shards.length + 4, 'the second run added its 4 shards after the first run\'s');
  assert.ok(!(await readdir(dir)).some((f) => f.includes('.tmp-')), 'stale temporary files removed');
});
