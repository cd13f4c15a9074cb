import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { EvalMechIntRunner } from '../src/report/eval-runner.js';
import { MechIntConfig } from '../src/config.js';
import { isAnalysisError } from '../src/analysis/results.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { parseSafetensors } from '../src/formats/safetensors.js';
import { seededMatrix, tempDir } from './helpers.js';

/** Two shards: `relu_layer` [n, 6] with units 4 and 5 always 0 (dead); `seq` [n, 3, 4]. */
async function plantShards(dir: string, rowsPerShard = 40): Promise<{ relu: Float32Array; seq: Float32Array }> {
  const writer = new ShardWriter({ dir });
  const reluAll: number[] = [];
  const seqAll: number[] = [];
  for (let s = 0; s < 2; s++) {
    const raw = seededMatrix(rowsPerShard, 6, 11 + s);
    const relu = raw.map((v, i) => (i % 6 >= 4 ? 0 : Math.max(0, v + 0.1)));
    const seq = seededMatrix(rowsPerShard * 3, 4, 21 + s);
    reluAll.push(...relu);
    seqAll.push(...seq);
    await writer.write({ layers: { relu_layer: { shape: [rowsPerShard, 6], data: relu }, seq: { shape: [rowsPerShard, 3, 4], data: seq } }, globalStep: s * 100 });
  }
  await writer.finish();
  return { relu: Float32Array.from(reluAll), seq: Float32Array.from(seqAll) };
}

test('runMechintEval returns { config, analyses } keyed by analysis then layer, with the guide\'s result keys', async () => {
  const dir = await tempDir();
  const planted = await plantShards(join(dir, 'cache'));
  const config = new MechIntConfig({ sampleLayers: null, analysesToRun: ['neuron', 'feature', 'sae', 'causal'], verbose: false, analysisOptions: { sae: { epochs: 2, n_latents: 8, k: 2, batch_size: 16 } } });
  const runner = new EvalMechIntRunner(null, config, { blockRows: 7 });
  const results = await runner.runMechintEval({ hiddenShardsPath: join(dir, 'cache') });
  assert.deepEqual(Object.keys(results), ['config', 'analyses']);
  assert.deepEqual(Object.keys(results.analyses), ['neuron', 'feature', 'sae', 'causal']);
  // Results are typed per analysis: narrowing away the error case is all a user writes.
  const neuron = results.analyses.neuron!.relu_layer!;
  if (isAnalysisError(neuron)) throw new Error(neuron.error);
  // Against a direct computation over both shards.
  const n = planted.relu.length / 6;
  const mean0 = Array.from({ length: n }, (_, r) => planted.relu[r * 6]!).reduce((a, b) => a + b) / n;
  assert.ok(Math.abs(neuron.mean_activation[0]! - mean0) < 1e-6);
  assert.deepEqual(neuron.dead_units, [4, 5]);
  assert.equal(neuron.n_rows, 80);
  // [B,T,D] is read as rows of D.
  assert.equal((results.analyses.neuron!.seq as { n_rows: number }).n_rows, 240);
  const feature = results.analyses.feature!.seq as { explained_variance: number[]; n_components: number };
  assert.equal(feature.n_components, 4);
  const sae = results.analyses.sae!.relu_layer as { final_l0: number; training_stats: Record<string, number[]> };
  assert.equal(sae.training_stats['relu_layer/loss']!.length, 2);
  assert.ok(sae.final_l0 <= 2 + 1e-9);
  // An analysis that needs a model records why, per the guide's contract, and the others ran.
  const causal = results.analyses.causal!.relu_layer!;
  assert.ok(isAnalysisError(causal));
  assert.match(causal.error, /causal analysis needs the model/);
  assert.equal(causal.code, 'MECHINT_ERR_MODEL_REQUIRED');

  const files = await runner.exportResults(join(dir, 'out'));
  const json = JSON.parse(await readFile(files.json, 'utf8'));
  assert.deepEqual(Object.keys(json.analyses), ['neuron', 'feature', 'sae', 'causal']);
  assert.equal(json.analyses.sae.relu_layer.weights_file, 'sae/relu_layer.safetensors');
  const weights = parseSafetensors(new Uint8Array(await readFile(join(dir, 'out', 'sae', 'relu_layer.safetensors'))));
  assert.deepEqual(Object.keys(weights.tensors).sort(), ['W_dec', 'W_enc', 'b_dec', 'b_enc']);
  const md = await readFile(files.markdown, 'utf8');
  assert.ok(!md.includes('```'), 'no code fences in the report');
  assert.match(md, /### `relu_layer`/);
  assert.match(md, /2 dead unit\(s\).*: 4, 5/);
  assert.match(md, /\| PC \| explained variance \| cumulative \|/);
  assert.match(md, /\| final L0 \| explained variance \|/);
  const manifest = JSON.parse(await readFile(join(dir, 'cache', 'manifest.json'), 'utf8'));
  assert.equal(manifest.analysis_history.length, 1);
  assert.deepEqual(manifest.analysis_history[0].analyses, ['neuron', 'feature', 'sae', 'causal']);
  await runner.dispose();
});

test('an analysis that fails on one layer records { error } for it and the rest still run', async () => {
  const dir = await tempDir();
  await plantShards(dir);
  const runner = new EvalMechIntRunner(null, { sampleLayers: ['relu_layer', 'missing_layer'], analysesToRun: ['neuron', 'feature'], verbose: false });
  const results = await runner.runMechintEval({ hiddenShardsPath: dir });
  assert.equal((results.analyses.neuron!.relu_layer as { n_units: number }).n_units, 6);
  const err = results.analyses.neuron!.missing_layer as { error: string; code: string };
  assert.match(err.error, /missing_layer.*relu_layer, seq/);
  assert.equal(err.code, 'MECHINT_ERR_LAYER_NOT_FOUND');
  assert.ok((results.analyses.feature!.relu_layer as { explained_variance: number[] }).explained_variance.length > 0);
  await runner.dispose();
});

test('loadActivations and runNeuronAnalysis are public (the guide\'s troubleshooting calls)', async () => {
  const dir = await tempDir();
  await plantShards(dir);
  const runner = new EvalMechIntRunner(null, { sampleLayers: null, verbose: false });
  const acts = await runner.loadActivations(dir);
  assert.deepEqual(acts.layers().map((l) => l.name), ['relu_layer', 'seq']);
  const res = await runner.runNeuronAnalysis(acts);
  assert.deepEqual(Object.keys(res), ['relu_layer', 'seq']);
  await runner.dispose();
});

test('a shard whose bytes changed after it was listed is refused with a checksum error', async () => {
  const dir = await tempDir();
  await plantShards(dir);
  const file = (await readdir(dir)).find((f) => f.endsWith('.safetensors'))!;
  const { open } = await import('node:fs/promises');
  const fh = await open(join(dir, file), 'r+');
  await fh.write(Buffer.from([1, 2, 3, 4]), 0, 4, (await fh.stat()).size - 4);
  await fh.close();
  const runner = new EvalMechIntRunner(null, { sampleLayers: ['relu_layer'], analysesToRun: ['neuron'], verbose: false });
  const results = await runner.runMechintEval({ hiddenShardsPath: dir });
  assert.equal((results.analyses.neuron!.relu_layer as { code: string }).code, 'MECHINT_ERR_SHARD_CHECKSUM');
  await runner.dispose();
});

test('mechint analyze (built CLI) writes results and report; a path without shards exits non-zero with a clear message', async () => {
  const dir = await tempDir();
  await plantShards(join(dir, 'cache'));
  const ok = spawnSync(process.execPath, ['bin/mechint.js', 'analyze', join(dir, 'cache'), '--out', join(dir, 'res'), '--analyses', 'neuron,feature,sae', '--sae-epochs', '1', '--sae-latents', '8', '--sae-k', '2', '--json'], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  const summary = JSON.parse(ok.stdout);
  assert.deepEqual(summary.layers, ['relu_layer', 'seq']);
  assert.deepEqual(summary.errors, []);
  assert.deepEqual((await readdir(join(dir, 'res'))).sort(), ['charts', 'mechint_report.md', 'mechint_results.json', 'report.html', 'sae', 'saelens']);
  assert.ok(!ok.stderr.includes('Hi, looks like'), 'no tfjs banner');
  const none = spawnSync(process.execPath, ['bin/mechint.js', 'analyze', join(dir, 'res'), '--out', join(dir, 'x')], { encoding: 'utf8' });
  assert.notEqual(none.status, 0);
  assert.match(none.stderr, /^mechint: No shards in .*res/m);
  assert.ok(!/\n\s+at /.test(none.stderr), 'no stack trace');
});
