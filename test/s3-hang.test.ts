import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tf } from '../src/backend.js';
import { MechIntCallback } from '../src/capture/callback.js';
import type { MechIntOptions } from '../src/config.js';
import { seededMatrix, smallNestedModel, tempDir } from './helpers.js';
import { BUCKET, inspectStore, objectHashes, startS3rverChild } from './s3-server.js';

/** Step wall times; `onStep` runs after each step. A 10 ms wait before each step stands for a data pipeline (it also turns the event loop). */
class StepTimer extends tf.Callback {
  times: number[] = [];
  private t0 = 0;
  constructor(private readonly onStep: (step: number) => void = () => {}) {
    super();
  }
  override async onBatchBegin(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 10));
    this.t0 = performance.now();
  }
  override async onBatchEnd(): Promise<void> {
    this.times.push(performance.now() - this.t0);
    this.onStep(this.times.length);
  }
}

const callback = (options: MechIntOptions) => new MechIntCallback({ sampleLayers: ['backbone.blocks.1', 'head'], verbose: false, ...options });

async function fit(cb: MechIntCallback, epochs: number, timer: StepTimer): Promise<MechIntCallback> {
  const model = await smallNestedModel();
  const xs = tf.tensor2d(seededMatrix(64, 4, 5), [64, 4]);
  const ys = tf.tensor2d(seededMatrix(64, 2, 6), [64, 2]);
  model.compile({ optimizer: tf.train.sgd(0.05), loss: 'meanSquaredError' });
  await model.fit(xs, ys, { epochs, batchSize: 4, callbacks: [cb, timer], verbose: 0 }); // 16 steps per epoch
  tf.dispose([xs, ys]);
  return cb;
}

const server = await startS3rverChild();
const REQUEST_TIMEOUT_MS = 1000;
/** A step that waited for a hung request would last at least REQUEST_TIMEOUT_MS. */
const STEP_BOUND_MS = 500;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const s3 = (prefix: string, dir: string): MechIntOptions => ({
  storageBackend: 'both',
  storagePath: dir,
  s3Bucket: BUCKET,
  s3Prefix: prefix,
  s3Endpoint: server.endpoint,
  s3ForcePathStyle: true,
  s3RequestTimeoutMs: REQUEST_TIMEOUT_MS,
  s3RetryBaseMs: 50,
  s3RetryMaxMs: 300,
});

async function expectAllInBucket(dir: string, prefix: string): Promise<number> {
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  const hashes = await objectHashes(inspectStore(server.endpoint, prefix));
  assert.deepEqual([...hashes.keys()].sort(), [...manifest.shards.map((s: { file: string }) => s.file), 'manifest.json'].sort(), 'each shard once under its own name, and the manifest');
  for (const s of manifest.shards) {
    assert.equal(s.upload, 'uploaded');
    assert.equal(hashes.get(s.file), s.sha256);
  }
  return manifest.shards.length;
}

test('a hung endpoint (SIGSTOP) never blocks a training step; uploads time out, retry, and finish once it answers', async (t) => {
  const dir = await tempDir();
  const cb = callback({ ...s3('hang/run', dir), saveHiddenEveryNSteps: 8, s3UploadTimeoutMs: 30_000 });
  let stoppedAt = 0;
  let resumedAt = 0;
  const timer = new StepTimer((step) => {
    if (step === 16) {
      server.pause();
      stoppedAt = step;
    }
    const timeouts = cb.hooks.sampler?.writer.uploads?.queue.stats.timeouts ?? 0;
    if (stoppedAt && !resumedAt && (timeouts >= 2 || step === 300)) {
      server.resume();
      resumedAt = step;
    }
  });
  const done = await fit(cb, 20, timer);
  if (!resumedAt) server.resume();

  const hung = timer.times.slice(stoppedAt, resumedAt || undefined);
  const normal = timer.times.slice(1, stoppedAt);
  const worst = Math.max(...hung);
  const stats = done.hooks.sampler!.writer.uploads!.queue.stats;
  t.diagnostic(`hung for steps ${stoppedAt}..${resumedAt}: step median ${median(hung).toFixed(1)} ms, max ${worst.toFixed(1)} ms (normal median ${median(normal).toFixed(1)} ms, max ${Math.max(...normal).toFixed(1)} ms; bound ${STEP_BOUND_MS} ms)`);
  t.diagnostic(`uploads: ${stats.uploaded} shards, ${stats.attempts} attempts, ${stats.timeouts} timeouts, ${stats.failures} failures`);
  assert.equal(timer.times.length, 320);
  assert.ok(worst < STEP_BOUND_MS, `a step took ${worst} ms while the endpoint hung`);
  assert.ok(stats.timeouts >= 1, 'an upload timed out');
  assert.ok(stats.attempts > stats.uploaded + stats.madeUploads, 'and was retried');
  assert.equal(await expectAllInBucket(dir, 'hang/run'), 41); // steps 0, 8, …, 312, and the rest at train end
});

test('a run that ends while S3 hangs leaves its shards pending; the next run in the same storage_path uploads them', async () => {
  const dir = await tempDir();
  server.pause();
  const warnings: string[] = [];
  const { log, warn } = console;
  console.log = () => {};
  console.warn = (...a: unknown[]) => void warnings.push(a.join(' '));
  let first: MechIntCallback;
  try {
    first = await fit(callback({ ...s3('hang/next', dir), saveHiddenEveryNSteps: 4, s3UploadTimeoutMs: 300, verbose: true }), 1, new StepTimer());
  } finally {
    console.log = log;
    console.warn = warn;
    server.resume();
  }
  assert.ok(warnings.some((w) => /5 shard\(s\) not uploaded .* within 300 ms.*mechint sync/.test(w)), warnings.join('\n'));
  const left = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  assert.deepEqual(left.shards.map((s: { upload: string }) => s.upload), Array(5).fill('pending'), 'steps 0, 4, 8, 12 and the rest at train end');
  assert.equal(first.hooks.sampler!.writer.uploads!.queue.stats.uploaded, 0);

  const next = await fit(callback({ ...s3('hang/next', dir), saveHiddenEveryNSteps: 4, s3UploadTimeoutMs: 30_000 }), 1, new StepTimer());
  assert.equal(await expectAllInBucket(dir, 'hang/next'), 10, "the first run's 5 shards and the next run's 5");
  assert.ok(next.hooks.sampler!.writer.uploads!.queue.stats.uploaded + next.hooks.sampler!.writer.uploads!.queue.stats.alreadyThere >= 10);
});
