/** Analyses that run the model (causal, circuit) work over HTTP when the server has a model and eval data. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tf } from '../src/backend.js';
import { fileSystem } from '../src/model/file-handler.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { recordActivations } from '../src/model/interventions.js';
import { smallNestedModel, tempDir } from './helpers.js';
import { postJson, startServer } from './server-helpers.js';

const root = await tempDir('mechint-server-model-');
const model = await smallNestedModel(3);
const modelDir = join(root, 'model');
await model.save(fileSystem(modelDir));
const inputs = tf.randomNormal([48, 4], 0, 1, 'float32', 7);
const targets = tf.randomNormal([48, 2], 0, 1, 'float32', 8);
model.compile({ optimizer: 'sgd', loss: 'meanSquaredError' });

// Shards of the model's own activations on the eval inputs.
const layers = ['backbone.blocks.0', 'backbone.blocks.1'];
const recorded = await recordActivations(model, layers, inputs);
const writer = new ShardWriter({ dir: join(root, 'cache') });
await writer.write({
  layers: Object.fromEntries(layers.map((l) => [l, { shape: recorded[l]!.shape, data: recorded[l]!.data }])),
  globalStep: 0,
});
await writer.finish();

const { url } = await startServer({ cache: join(root, 'cache'), modelPath: modelDir, evalData: { inputs, targets }, config: { sampleLayers: layers } });

test('causal runs in a worker that loads the model from --model', async () => {
  const res = await postJson(`${url}/interpret`, { analysis_type: 'causal', layer_name: 'backbone.blocks.1', config: { max_units: 4 } });
  assert.equal(res.status, 200, JSON.stringify(res.json).slice(0, 500));
  const r = res.json.results as { n_units: number; unit_effects: unknown[] };
  assert.equal(r.n_units, 8);
  assert.ok(r.unit_effects.length > 0);
});

test('circuit relates the layer to the next sampled one', async () => {
  const res = await postJson(`${url}/interpret`, { analysis_type: 'circuit', layer_name: 'backbone.blocks.0', config: {} });
  assert.equal(res.status, 200, JSON.stringify(res.json).slice(0, 500));
  assert.match(JSON.stringify(res.json.results), /backbone\.blocks\.1/);
});
