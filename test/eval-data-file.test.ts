import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { initBackend, tf } from '../src/backend.js';
import { readEvalDataFile, writeEvalDataFile } from '../src/report/eval-data-file.js';
import { FormatError } from '../src/errors.js';
import { tempDir } from './helpers.js';

test('eval data round-trips through one safetensors file: inputs, targets per output, probe targets', async () => {
  await initBackend();
  const dir = await tempDir();
  const inputs = tf.tensor3d(Float32Array.from({ length: 24 }, (_, i) => i), [2, 3, 4]);
  const t0 = tf.tensor2d([[1, 2], [3, 4]]);
  const t1 = tf.tensor1d([5, 6]);
  const latents = { data: Float32Array.from([0.5, -0.5, 1, 2]), shape: [2, 2] };
  await writeEvalDataFile(join(dir, 'e.safetensors'), { inputs, targets: [t0, t1], probeTargets: { latents } });
  const back = await readEvalDataFile(join(dir, 'e.safetensors'));
  assert.deepEqual(Array.from((back.inputs as tf.Tensor).dataSync()), Array.from(inputs.dataSync()));
  assert.deepEqual((back.inputs as tf.Tensor).shape, [2, 3, 4]);
  const targets = back.targets as tf.Tensor[];
  assert.equal(targets.length, 2);
  assert.deepEqual(Array.from(targets[0]!.dataSync()), [1, 2, 3, 4]);
  assert.deepEqual(targets[1]!.shape, [2]);
  assert.deepEqual(back.probeTargets, { latents });
});

test('an eval data file without inputs is refused, naming what it holds', async () => {
  const dir = await tempDir();
  await writeEvalDataFile(join(dir, 'x.safetensors'), { inputs: tf.ones([1, 2]), probeTargets: {} });
  // Rename the tensor by writing a file that holds only targets.
  const { serializeSafetensors } = await import('../src/formats/safetensors.js');
  const { fromFloat32 } = await import('../src/formats/dtypes.js');
  await writeFile(join(dir, 'y.safetensors'), Buffer.concat(serializeSafetensors({ targets: fromFloat32(new Float32Array(2), [2]) })));
  await assert.rejects(readEvalDataFile(join(dir, 'y.safetensors')), (e: unknown) => e instanceof FormatError && /no `inputs`.*holds targets/.test((e as Error).message));
});
