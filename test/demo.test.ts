import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { initBackend, tf } from '../src/backend.js';
import { autoDetectLayers, listLayerPaths } from '../src/model/layer-paths.js';
import { DEFAULTS } from '../src/config.js';
import { createNeuroFMXMini } from '../src/demo/neurofmx-mini.js';
import { runDemo } from '../src/demo/run.js';
import { runProbeAnalysis } from '../src/analysis/probe.js';
import { tempDir } from './helpers.js';

test('NeuroFMX-mini has the guide\'s default layer paths, and auto-detection picks the Mamba blocks, perceiver and popt', async () => {
  await initBackend();
  const model = createNeuroFMXMini();
  const paths = listLayerPaths(model);
  for (const p of DEFAULTS.sampleLayers) assert.ok(paths.includes(p), `missing ${p}`);
  assert.deepEqual(autoDetectLayers(model).paths, ['mamba_backbone.blocks.0', 'mamba_backbone.blocks.1', 'mamba_backbone.blocks.2', 'mamba_backbone.blocks.3', 'perceiver', 'popt']);
  model.dispose();
});

test('the demo with default training: behaviour decodes (R² ≥ 0.5) and popt encodes the true latents far above the shuffled control', async () => {
  const out = await tempDir();
  const s = await runDemo({ out, saeEpochs: 1 });
  assert.ok(s.heldOutBehaviorR2 >= 0.5, `held-out behaviour R² ${s.heldOutBehaviorR2}`);
  const probe = s.results.analyses.probe as Record<string, { targets: Record<string, { r2: number; control_r2_shuffled: number }> }>;
  const popt = probe.popt!.targets.latents!;
  const inputs = tf.tensor3d(s.heldOut.spikes, s.heldOut.shapes.spikes);
  const tokenizer = await runProbeAnalysis({}, { layer: 'tokenizer', model: s.model, evalData: { inputs, probeTargets: { latents: { data: s.heldOut.latents, shape: s.heldOut.shapes.latents } } } });
  inputs.dispose();
  const control = tokenizer.targets.latents!.control_r2_shuffled;
  assert.ok(Math.abs(control) < 0.1, `shuffled control at tokenizer ${control}`);
  assert.ok(popt.r2 > control + 0.4, `popt latents R² ${popt.r2} vs control ${control}`);
  // The backbone carries the latents bin by bin.
  assert.ok(probe['mamba_backbone.blocks.3']!.targets.latents!.r2 > 0.5);
  console.log(`# demo: train ${s.trainSeconds.toFixed(1)} s, analyses ${s.analysisSeconds.toFixed(1)} s, behaviour R² ${s.heldOutBehaviorR2.toFixed(3)}, popt latents R² ${popt.r2.toFixed(3)}, tokenizer shuffled ${control.toFixed(3)}`);
});

test('mechint demo (built CLI) writes shards, manifest, checkpoint, results and report with no failed analysis, and a second run continues the numbering', async () => {
  const out = await tempDir();
  const run = () => spawnSync(process.execPath, ['bin/mechint.js', 'demo', '--out', out, '--epochs', '2', '--trials', '60', '--sae-epochs', '1', '--json'], { encoding: 'utf8' });
  const first = run();
  assert.equal(first.status, 0, first.stderr);
  assert.equal(first.stderr, '', 'nothing on stderr (no banner, no warnings)');
  const summary = JSON.parse(first.stdout);
  const manifest = JSON.parse(await readFile(join(out, 'mechint_cache', 'manifest.json'), 'utf8'));
  assert.equal(manifest.status, 'complete');
  assert.deepEqual(Object.keys(manifest.layers).sort(), ['mamba_backbone.blocks.3', 'perceiver', 'popt']);
  assert.ok((await stat(join(out, 'checkpoints', 'best', 'model.json'))).isFile());
  const results = JSON.parse(await readFile(summary.results, 'utf8'));
  for (const [name, byLayer] of Object.entries(results.analyses as Record<string, Record<string, { error?: string }>>)) {
    assert.equal((byLayer as { error?: string }).error, undefined, `${name} failed`);
    for (const [layer, r] of Object.entries(byLayer)) assert.equal(r.error, undefined, `${name} on ${layer}: ${r.error}`);
  }
  assert.ok(['sae', 'neuron', 'feature', 'probe'].every((a) => a in results.analyses));
  assert.ok((await readFile(summary.report, 'utf8')).includes('## Linear probes'));
  const firstCount = manifest.shards.length;
  const second = run();
  assert.equal(second.status, 0, second.stderr);
  const after = JSON.parse(await readFile(join(out, 'mechint_cache', 'manifest.json'), 'utf8'));
  const ids = after.shards.map((s: { shard_id: number }) => s.shard_id);
  assert.ok(ids.length > firstCount);
  assert.deepEqual(ids, [...ids.keys()]);
  assert.equal((await readdir(join(out, 'mechint_cache'))).filter((f) => f.endsWith('.safetensors')).length, ids.length);
});
