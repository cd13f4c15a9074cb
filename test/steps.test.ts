/** Every analysis that reads captured rows takes the training steps it reads: 'all', 'last' or [from, to]. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MechIntConfig } from '../src/config.js';
import { isAnalysisError } from '../src/analysis/results.js';
import { EvalMechIntRunner } from '../src/report/eval-runner.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { tempDir } from './helpers.js';

/** Three shards of `h` [10, 2] at global steps 0, 100, 200, every value equal to step / 100. */
async function plant(): Promise<string> {
  const dir = await tempDir();
  const w = new ShardWriter({ dir });
  for (const step of [0, 100, 200]) await w.write({ layers: { h: { shape: [10, 2], data: new Float32Array(20).fill(step / 100) } }, globalStep: step });
  await w.finish();
  return dir;
}

async function neuron(dir: string, steps?: unknown) {
  const config = new MechIntConfig({ sampleLayers: ['h'], analysesToRun: ['neuron'], verbose: false, analysisOptions: steps === undefined ? {} : { neuron: { steps } } });
  const runner = new EvalMechIntRunner(null, config);
  try {
    return (await runner.runMechintEval({ hiddenShardsPath: dir })).analyses.neuron!.h!;
  } finally {
    await runner.dispose();
  }
}

test("'all' (the default), 'last' and [from, to] read the rows of those steps, and the result says which", async () => {
  const dir = await plant();
  const all = await neuron(dir);
  if (isAnalysisError(all)) throw new Error(all.error);
  assert.equal(all.n_rows, 30);
  assert.deepEqual(all.step_selection, { selection: 'all', read: [0, 100, 200] });

  const last = await neuron(dir, 'last');
  if (isAnalysisError(last)) throw new Error(last.error);
  assert.equal(last.n_rows, 10);
  assert.deepEqual(last.mean_activation, [2, 2], 'only the trained model (step 200)');
  assert.deepEqual(last.step_selection, { selection: 'last', read: [200] });

  const early = await neuron(dir, [0, 100]);
  if (isAnalysisError(early)) throw new Error(early.error);
  assert.equal(early.n_rows, 20);
  assert.ok(Math.abs(early.mean_activation[0]! - 0.5) < 1e-6);
  assert.deepEqual(early.step_selection?.read, [0, 100]);
});

test('a selection with no shards is an error naming the steps there are; a bad value is refused at construction', async () => {
  const dir = await plant();
  const none = await neuron(dir, [300, 400]);
  assert.ok(isAnalysisError(none));
  assert.match(none.error, /No shards of `h` at global steps 300–400; it has steps 0, 100, 200/);
  assert.throws(() => new MechIntConfig({ analysisOptions: { sae: { steps: 'latest' } } }), /`steps` to be 'all', 'last', or \[from, to\]/);
  assert.throws(() => new MechIntConfig({ analysisOptions: { feature: { steps: [200, 100] } } }), /from <= to/);
});

test('mechint analyze --steps last: the report says which steps it read', async () => {
  const dir = await plant();
  const out = join(dir, 'out');
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/cli.ts', 'analyze', dir, '--out', out, '--analyses', 'neuron,feature', '--steps', 'last'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const results = JSON.parse(await readFile(join(out, 'mechint_results.json'), 'utf8')) as { analyses: Record<string, { h: { n_rows: number; step_selection: unknown } }> };
  for (const a of ['neuron', 'feature']) {
    assert.equal(results.analyses[a]!.h.n_rows, 10, a);
    assert.deepEqual(results.analyses[a]!.h.step_selection, { selection: 'last', read: [200] });
  }
  assert.match(await readFile(join(out, 'mechint_report.md'), 'utf8'), /Rows of global step 200: the last step\./);
  const bad = spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/cli.ts', 'analyze', dir, '--out', out, '--steps', 'recent'], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /Expected `--steps` to be all, last, or FROM-TO/);
});
