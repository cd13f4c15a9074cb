import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { tf } from '../src/backend.js';
import { ActivationSampler } from '../src/capture/sampler.js';
import { MetadataError } from '../src/errors.js';
import { readSafetensorsHeader } from '../src/formats/safetensors.js';
import { decodeShardMetadata, parseMetadataJson, stringifyMetadataJson } from '../src/storage/metadata.js';
import { ShardReader } from '../src/storage/shard-reader.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, smallNestedModel, tempDir } from './helpers.js';

const layers = { x: { shape: [2, 2], data: seededMatrix(2, 2, 1) } };

test('NaN, ±Infinity, -0, numbers, booleans, null and nested values in shard metadata read back as they were', async () => {
  const dir = await tempDir();
  const w = new ShardWriter({ dir });
  const metadata = { loss: NaN, best: Infinity, worst: -Infinity, zero: -0, lr: 0.25, ok: true, none: null, history: [1, NaN, { a: -Infinity }], note: 'NaN', count: '3', skipped: undefined };
  const rec = await w.write({ layers, globalStep: 5, epoch: 2, metadata });
  await w.finish();
  const reader = await ShardReader.open(dir);
  const decoded = decodeShardMetadata(reader.shards[0]!.metadata);
  assert.ok(Number.isNaN(decoded.loss));
  assert.equal(decoded.best, Infinity);
  assert.equal(decoded.worst, -Infinity);
  assert.ok(Object.is(decoded.zero, -0));
  assert.equal(decoded.lr, 0.25);
  assert.equal(decoded.ok, true);
  assert.equal(decoded.none, null);
  assert.deepEqual(decoded.history, [1, NaN, { a: -Infinity }]);
  assert.equal(decoded.note, 'NaN', 'a string stays a string');
  assert.equal(decoded.count, '3');
  assert.ok(!('skipped' in decoded));
  assert.equal(decoded.global_step, 5);
  assert.equal(decoded.epoch, 2);
  assert.equal(decoded.batch_idx, null);
  // The raw header: strings as they are, others as Python's json writes them, listed in json_keys.
  const raw = (await readSafetensorsHeader(`${dir}/${rec.file}`)).metadata;
  assert.equal(raw.loss, 'NaN');
  assert.equal(raw.note, 'NaN');
  assert.equal(raw.history, '[1,NaN,{"a":-Infinity}]');
  assert.deepEqual(JSON.parse(raw.json_keys!).sort(), ['best', 'history', 'loss', 'lr', 'none', 'ok', 'worst', 'zero']);
});

test("Python's json.loads reads the encoded values back to the same floats", { skip: spawnSync('/usr/bin/python3', ['-c', '1']).status !== 0 && 'no /usr/bin/python3' }, () => {
  const text = stringifyMetadataJson({ loss: NaN, hist: [Infinity, -Infinity, -0, 1.5] }, 'm');
  const py = spawnSync('/usr/bin/python3', ['-c', 'import json,sys,math; v=json.loads(sys.argv[1]); print(json.dumps([math.isnan(v["loss"]), v["hist"][0], v["hist"][1], math.copysign(1, v["hist"][2]), v["hist"][3]]))', text], { encoding: 'utf8' });
  assert.equal(py.status, 0, py.stderr);
  assert.equal(py.stdout.trim(), '[true, Infinity, -Infinity, -1.0, 1.5]');
  assert.deepEqual(parseMetadataJson('{"s":"NaN is a string","n":NaN}'), { s: 'NaN is a string', n: NaN });
});

test('a tensor (or typed array, Date, class instance) in metadata is refused naming the key, before the cache is touched', async () => {
  const dir = await tempDir();
  const w = new ShardWriter({ dir });
  const t = tf.tensor1d([1, 2]);
  await assert.rejects(w.write({ layers, globalStep: 0, metadata: { weights: t } }), (e: unknown) => e instanceof MetadataError && e.code === 'MECHINT_ERR_METADATA' && /`weights` is a tf\.Tensor.*arraySync/.test((e as Error).message));
  await assert.rejects(w.write({ layers, globalStep: 0, metadata: { nested: { v: new Float32Array(2) } } }), /`nested\.v` is a Float32Array \(pass Array\.from\(x\)\)/);
  await assert.rejects(w.write({ layers, globalStep: 0, metadata: { when: new Date(0) } }), /`when` is a Date/);
  await assert.rejects(w.write({ layers, globalStep: 0, metadata: { shard_id: 7 } }), /`shard_id` is set by mechint itself/);
  const rec = await w.write({ layers, globalStep: 0, metadata: { global_step: 0 } });
  assert.equal(rec.shard_id, 0, 'refused writes used no shard id');
  await w.finish();

  const model = await smallNestedModel();
  const sampler = new ActivationSampler({ layers: ['head'], saveDir: await tempDir(), verbose: false });
  sampler.registerHooks(model);
  (model.predict(tf.ones([3, 4])) as tf.Tensor).dispose();
  await assert.rejects(sampler.saveActivations(1, { acts: t }), MetadataError);
  assert.equal(sampler.getStatistics().current_cache_samples, 3, 'the cached interval is kept');
  const path = await sampler.saveActivations(1, { acts: t.arraySync() });
  assert.deepEqual(decodeShardMetadata((await readSafetensorsHeader(path!)).metadata).acts, [1, 2]);
  sampler.clearHooks();
  await sampler.writer.finish();
  t.dispose();
});
