import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { COMPACT_MIN, ManifestLog } from '../src/storage/manifest-log.js';
import { emptyManifest, readManifest, type ShardRecord } from '../src/storage/manifest.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { tempDir } from './helpers.js';

const record = (i: number) => ({ file: `activations_shard_${String(i).padStart(6, '0')}_step_${i}.safetensors`, shard_id: i, global_step: i, sha256: 'a'.repeat(64), bytes: 1, upload: 'local' }) as ShardRecord;

test('one journal line per shard; readers merge manifest.json and manifest.log; compaction when the journal holds as many lines as the snapshot held shards', async () => {
  const dir = await tempDir();
  const log = new ManifestLog(dir, 'manifest.json', emptyManifest({}, 0));
  await log.compact();
  for (let i = 0; i < COMPACT_MIN + 10; i++) await log.append({ op: 'shard', shard: record(i), layers: {} });
  assert.equal(log.compactions, 2, 'the first snapshot, then one at COMPACT_MIN lines');
  const snapshot = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.equal(snapshot.shards.length, COMPACT_MIN);
  assert.equal((await readFile(join(dir, 'manifest.log'), 'utf8')).trim().split('\n').length, 10);
  assert.equal((await readManifest(dir))!.shards.length, COMPACT_MIN + 10);
  await log.close();
  assert.ok(!(await readdir(dir)).includes('manifest.log'));
  assert.equal(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')).shards.length, COMPACT_MIN + 10);
});

test('a torn last line (a crash inside the append) is ignored, and a crash between snapshot and journal removal duplicates nothing', async () => {
  const dir = await tempDir();
  const log = new ManifestLog(dir, 'manifest.json', emptyManifest({}, 0));
  await log.compact();
  for (let i = 0; i < 3; i++) await log.append({ op: 'shard', shard: record(i), layers: {} });
  await log.append({ op: 'update', file: record(1).file, patch: { upload: 'uploaded' } });
  const journal = await readFile(join(dir, 'manifest.log'), 'utf8');
  await appendFile(join(dir, 'manifest.log'), '{"seq":6,"op":"shard","shard":{"file":"activations_sh');
  const merged = (await readManifest(dir))!;
  assert.deepEqual(merged.shards.map((s) => s.shard_id), [0, 1, 2]);
  assert.equal(merged.shards[1]!.upload, 'uploaded');
  // Snapshot written (journal_seq 4), journal not yet removed: its lines are not applied twice.
  await log.compact();
  await appendFile(join(dir, 'manifest.log'), journal);
  const again = (await readManifest(dir))!;
  assert.deepEqual(again.shards.map((s) => s.shard_id), [0, 1, 2]);
  // The next writer merges, compacts and carries on.
  const w = new ShardWriter({ dir });
  const r = await w.write({ layers: { x: { shape: [1, 1], data: new Float32Array(1) } }, globalStep: 9 });
  assert.equal(r.shard_id, 3);
  await w.finish();
  assert.deepEqual(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')).shards.map((s: ShardRecord) => s.shard_id), [0, 1, 2, 3]);
});
