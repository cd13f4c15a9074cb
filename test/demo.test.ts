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

/** The Markdown between a heading and the next one of the same or a higher level. */
function mdSection(md: string, heading: string): string {
  const at = md.indexOf(`${heading}\n`);
  assert.ok(at >= 0, `the report has ${heading}`);
  const level = heading.indexOf(' ');
  const rest = md.slice(at + heading.length + 1);
  const next = rest.search(new RegExp(`^#{1,${level}} `, 'm'));
  return next < 0 ? rest : rest.slice(0, next);
}

/**
 * The demo report's cards: a section and a feature browser per SAE layer, each true latent's best
 * card r beside the probe's R² for it, and no top activation without its example (a link to the
 * card that shows them, or the shard row to find it by).
 */
function checkCardsReport(md: string, html: string, results: { analyses: Record<string, Record<string, any>> }): void {
  const saeLayers = Object.keys(results.analyses.sae!);
  assert.deepEqual(Object.keys(results.analyses.cards!).sort(), [...saeLayers].sort(), 'cards for every SAE layer');
  const cardsMd = mdSection(md, '## Latent cards');
  const saeMd = mdSection(md, '## Sparse autoencoders');
  for (const layer of saeLayers) {
    const cards = results.analyses.cards![layer].cards as { index: number; covariates: Record<string, number> }[];
    assert.ok(cards.length > 0, `${layer} has cards`);
    const section = mdSection(cardsMd, `### \`${layer}\``);
    const trueLatents = Object.keys(cards[0]!.covariates).filter((k) => /^latent_\d+$/.test(k));
    assert.equal(trueLatents.length, 4, 'the demo plants 4 latents');
    const rows = section.split('\n').filter((l) => /^\| `latent_\d+` \|/.test(l));
    assert.deepEqual(rows.map((l) => /`(latent_\d+)`/.exec(l)![1]), trueLatents, `${layer}: one best-card-vs-probe row per true latent`);
    const probe = results.analyses.probe![layer].targets.latents.r2_per_dim as number[];
    rows.forEach((l, j) => {
      assert.match(l, /\]\(#card-[a-z0-9-]+\)/, `${layer} ${trueLatents[j]}: links its best card`);
      assert.ok(l.includes(`${probe[j]!.toFixed(3)} (\`latents[${j}]\`)`), `${layer} ${trueLatents[j]}: the probe R² ${probe[j]} beside it: ${l}`);
    });
    assert.ok(html.includes(`<table class="cards" data-table="cards" data-layer="${layer}">`), `report.html has the feature browser of ${layer}`);
    for (const c of cards) assert.ok(html.includes(`data-card-id="card-${layer.replace(/[^A-Za-z0-9]+/g, '-').toLowerCase()}-${c.index}"`), `report.html has the page of ${layer} card ${c.index}`);
    // The SAE section's top latents: each row links its card or names its shard rows.
    const saeLayer = mdSection(saeMd, `### \`${layer}\``);
    const top = saeLayer.slice(saeLayer.indexOf('Most used latents')).split('\n').filter((l) => /^\| \d+ \| [\d.]+% \|/.test(l));
    assert.ok(top.length > 0, `${layer}: top latents listed`);
    for (const l of top) assert.ok(/\]\(#card-/.test(l) || /\.safetensors` step \d+ row \d+/.test(l), `${layer}: a top activation with no example: ${l}`);
  }
  // Every card link lands on an anchor: in report.md the card's examples, in report.html its page.
  for (const [, id] of md.matchAll(/\]\(#(card-[a-z0-9-]+)\)/g)) assert.ok(md.includes(`<a id="${id}"></a>`), `report.md anchors #${id}`);
  for (const [, id] of html.matchAll(/href="#(card-[a-z0-9-]+)"/g)) assert.ok(html.includes(`id="${id}"`), `report.html has #${id}`);
}

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
  checkCardsReport(await readFile(summary.report, 'utf8'), await readFile(summary.html, 'utf8'), results);
  const firstCount = manifest.shards.length;
  const second = run();
  assert.equal(second.status, 0, second.stderr);
  const after = JSON.parse(await readFile(join(out, 'mechint_cache', 'manifest.json'), 'utf8'));
  const ids = after.shards.map((s: { shard_id: number }) => s.shard_id);
  assert.ok(ids.length > firstCount);
  assert.deepEqual(ids, [...ids.keys()]);
  assert.equal((await readdir(join(out, 'mechint_cache'))).filter((f) => f.endsWith('.safetensors')).length, ids.length);
});
