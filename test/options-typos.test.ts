/** Every options object is checked when it is given: a typo is a ConfigError naming the key and the nearest valid one. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ConfigError } from '../src/errors.js';
import { MechIntConfig } from '../src/config.js';
import { analysisNames, getAnalysis } from '../src/analysis/registry.js';
import { snakeCase } from '../src/options.js';
import { EvalMechIntRunner } from '../src/report/eval-runner.js';
import { ActivationSampler } from '../src/capture/sampler.js';
import { MechIntCallback } from '../src/capture/callback.js';
import { JobManager } from '../src/server/jobs.js';
import { buildApp } from '../src/server/app.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';

const typo = (label: string, bad: string, near: string) => (e: unknown) => {
  assert.ok(e instanceof ConfigError, String(e));
  assert.equal(e.code, 'MECHINT_ERR_CONFIG');
  assert.ok(e.message.includes(`Unknown ${label} \`${bad}\`; did you mean \`${near}\`?`), e.message);
  return true;
};

/** A one-letter swap of a key: `n_latents` → `n_latnets`. */
function misspell(key: string): string {
  const i = Math.max(1, Math.floor(key.length / 2));
  return key.length < 3 ? `${key}x` : key.slice(0, i - 1) + key[i] + key[i - 1] + key.slice(i + 1);
}

test('MechIntConfig: top-level keys, analyses_to_run and each analysis\' options', () => {
  assert.throws(() => new MechIntConfig({ sample_layer: ['a'] } as never), typo('MechIntConfig option', 'sample_layer', 'sample_layers'));
  assert.throws(() => new MechIntConfig({ saveHiddenEveryNStep: 5 } as never), typo('MechIntConfig option', 'saveHiddenEveryNStep', 'saveHiddenEveryNSteps'));
  assert.throws(() => new MechIntConfig({ analysesToRun: ['neurons'] }), /`analyses_to_run`.*did you mean `neuron`\?.*`"neurons"`/);
  assert.throws(() => new MechIntConfig({ analysisOptions: { saes: { k: 2 } } }), /Unknown analysis in `analysis_options` `saes`; did you mean `sae`\?/);
  assert.throws(() => new MechIntConfig({ analysisOptions: { sae: { n_latnets: 10 } } }), typo('SAE option', 'n_latnets', 'n_latents'));
  // Every option of every built-in analysis: its misspelling is refused with the right suggestion.
  for (const name of analysisNames()) {
    const schema = getAnalysis(name)!.options;
    for (const key of Object.keys(schema.fields)) {
      const snake = snakeCase(key);
      const bad = misspell(snake);
      if (bad === snake || Object.keys(schema.fields).some((k) => snakeCase(k) === bad || k === bad)) continue;
      assert.throws(() => new MechIntConfig({ analysisOptions: { [name]: { [bad]: 1 } } }), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.match(e.message, new RegExp(`Unknown ${schema.label} \`${bad}\`; did you mean \`${snake}\`\\?`), `${name}.${bad}: ${e.message}`);
        return true;
      });
    }
  }
});

test('EvalMechIntRunner options and runMechintEval arguments', async () => {
  assert.throws(() => new EvalMechIntRunner(null, {}, { blockRow: 10 } as never), typo('EvalMechIntRunner option', 'blockRow', 'blockRows'));
  const runner = new EvalMechIntRunner(null, { verbose: false });
  await assert.rejects(runner.runMechintEval({ hiddenShardPath: '.' } as never), typo('runMechintEval argument', 'hiddenShardPath', 'hiddenShardsPath'));
});

test('ActivationSampler, MechIntCallback, JobManager and buildApp options', async () => {
  assert.throws(() => new ActivationSampler({ maxSamplesPerShards: 4 } as never), typo('ActivationSampler option', 'maxSamplesPerShards', 'maxSamplesPerShard'));
  assert.throws(() => new MechIntCallback({ verbose: false }, { hook: null } as never), typo('MechIntCallback option', 'hook', 'hooks'));
  assert.throws(() => new JobManager({ concurency: 2 } as never), typo('JobManager option', 'concurency', 'concurrency'));
  await assert.rejects(buildApp({ modelpath: 'x' } as never), typo('buildApp option', 'modelpath', 'modelPath'));
});

test('mechint analyze: unknown analyses and layers are refused up front, in terms of the flags', async () => {
  const dir = await tempDir();
  const w = new ShardWriter({ dir });
  await w.write({ layers: { 'blocks.3': { shape: [6, 2], data: seededMatrix(6, 2, 1) } }, globalStep: 0 });
  await w.finish();
  const cli = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/cli.ts', ...args], { encoding: 'utf8' });
  const a = cli('analyze', dir, '--out', `${dir}/out`, '--analyses', 'neuron,featur');
  assert.equal(a.status, 1);
  assert.match(a.stderr, /Unknown analysis `featur` in --analyses; did you mean `feature`\?/);
  const l = cli('analyze', dir, '--out', `${dir}/out`, '--analyses', 'neuron', '--layers', 'blocks.4');
  assert.equal(l.status, 1);
  assert.match(l.stderr, /Unknown layer `blocks\.4` in --layers; did you mean `blocks\.3`\?/);
});
