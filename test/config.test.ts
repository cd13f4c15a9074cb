import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MechIntConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';

test('defaults equal the guide\'s Complete Configuration Options', () => {
  const c = new MechIntConfig();
  assert.deepEqual(c.sampleLayers, ['mamba_backbone.blocks.3', 'popt']);
  assert.equal(c.saveHiddenEveryNSteps, 200);
  assert.deepEqual(c.analysesToRun, ['sae', 'neuron', 'feature']);
  assert.equal(c.storageBackend, 'local');
  assert.equal(c.storagePath, './mechint_cache');
  assert.equal(c.s3Bucket, null);
  assert.equal(c.s3Prefix, 'neurofmx/activations');
  assert.equal(c.maxActivationsPerShard, 10000);
  assert.equal(c.enableFeatureSteering, false);
  assert.equal(c.verbose, true);
  assert.equal(c.perRankShards, false);
});

test('rank defaults to the RANK environment variable, else 0', () => {
  const saved = process.env.RANK;
  try {
    delete process.env.RANK;
    assert.equal(new MechIntConfig().rank, 0);
    process.env.RANK = '3';
    assert.equal(new MechIntConfig().rank, 3);
    process.env.RANK = 'x';
    assert.throws(() => new MechIntConfig(), /RANK/);
  } finally {
    if (saved === undefined) delete process.env.RANK;
    else process.env.RANK = saved;
  }
});

test('the guide\'s snake_case keys work, as a config pasted from Python', () => {
  const c = new MechIntConfig({
    sample_layers: ['layer1', 'layer2'],
    save_hidden_every_n_steps: 100,
    analyses_to_run: ['sae', 'neuron', 'circuit', 'feature', 'causal'],
    storage_backend: 'both',
    storage_path: '/tmp/x',
    s3_bucket: 'my-bucket',
    s3_prefix: 'experiments/exp001',
    max_activations_per_shard: 5000,
    enable_feature_steering: true,
    verbose: false,
    per_rank_shards: true,
  });
  assert.deepEqual(c.sampleLayers, ['layer1', 'layer2']);
  assert.equal(c.saveHiddenEveryNSteps, 100);
  assert.equal(c.storageBackend, 'both');
  assert.equal(c.s3Bucket, 'my-bucket');
  assert.equal(c.maxActivationsPerShard, 5000);
  assert.equal(c.enableFeatureSteering, true);
  assert.equal(c.perRankShards, true);
  assert.deepEqual(c.toJSON().sample_layers, ['layer1', 'layer2']);
  assert.deepEqual(new MechIntConfig(JSON.parse(JSON.stringify(c.toJSON()))).toJSON(), c.toJSON());
});

test('null sample_layers means auto-detect', () => {
  assert.equal(new MechIntConfig({ sampleLayers: null }).sampleLayers, null);
});

const invalid: [Record<string, unknown>, RegExp][] = [
  [{ storage_backend: 'ftp' }, /`storage_backend`.*one of local, s3, both.*`"ftp"`/],
  [{ saveHiddenEveryNSteps: 0 }, /`save_hidden_every_n_steps`.*integer >= 1.*`0`/],
  [{ saveHiddenEveryNSteps: 2.5 }, /`save_hidden_every_n_steps`/],
  [{ max_activations_per_shard: -1 }, /`max_activations_per_shard`.*`-1`/],
  [{ analyses_to_run: ["sae", "magic"] }, /`analyses_to_run`.*neuron, feature, sae.*`"magic"`/],
  [{ analyses_to_run: 'sae' }, /`analyses_to_run`/],
  [{ sample_layers: [] }, /`sample_layers`/],
  [{ sample_layers: [3] }, /`sample_layers`/],
  [{ verbose: 'yes' }, /`verbose`.*true or false.*`"yes"`/],
  [{ enable_feature_steering: 1 }, /`enable_feature_steering`/],
  [{ storage_path: '' }, /`storage_path`/],
  [{ storage_backend: 's3' }, /`s3_bucket`.*s3/],
  [{ s3_endpoint: 'localhost:9000' }, /`s3_endpoint`.*http/],
  [{ rank: -2 }, /`rank`/],
  [{ sampel_layers: ['a'] }, /Unknown MechIntConfig option `sampel_layers`/],
  [{ sampleLayers: ['a'], sample_layers: ['b'] }, /given twice/],
  [{ analysis_options: { sae: 3 } }, /`analysis_options`/],
];

for (const [options, message] of invalid) {
  test(`rejects ${JSON.stringify(options)} with an error naming the option`, () => {
    assert.throws(() => new MechIntConfig(options as never), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal((err as ConfigError).code, 'MECHINT_ERR_CONFIG');
      assert.match((err as Error).message, message);
      return true;
    });
  });
}
