/** NaN and ±Infinity in activations are never silently lost: rows holding them are excluded, counted and reported. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MechIntConfig } from '../src/config.js';
import { isAnalysisError } from '../src/analysis/results.js';
import { defineAnalysis } from '../src/analysis/definition.js';
import { registerAnalysis, unregisterAnalysis } from '../src/analysis/registry.js';
import { defineOptions } from '../src/options.js';
import { EvalMechIntRunner } from '../src/report/eval-runner.js';
import { ShardWriter } from '../src/storage/shard-writer.js';
import { seededMatrix, tempDir } from './helpers.js';

const DIM = 8;
const ROWS = 400;

/** `mixed`: 400 rows of which rows 3, 50 and 399 hold NaN, +Inf and -Inf (two values in row 50); `broken`: every row NaN. */
async function plant(dir: string): Promise<{ finite: Float32Array }> {
  const data = seededMatrix(ROWS, DIM, 5).map((v) => Math.max(0, v));
  data[3 * DIM + 1] = NaN;
  data[50 * DIM + 0] = Infinity;
  data[50 * DIM + 7] = NaN;
  data[399 * DIM + 4] = -Infinity;
  const writer = new ShardWriter({ dir });
  await writer.write({ layers: { mixed: { shape: [ROWS, DIM], data }, broken: { shape: [10, DIM], data: new Float32Array(10 * DIM).fill(NaN) } }, globalStep: 0 });
  await writer.finish();
  const bad = new Set([3, 50, 399]);
  const finite: number[] = [];
  for (let r = 0; r < ROWS; r++) if (!bad.has(r)) finite.push(...data.subarray(r * DIM, (r + 1) * DIM));
  return { finite: Float32Array.from(finite) };
}

test('rows with NaN or ±Inf are excluded and counted; the statistics are those of the finite rows', async () => {
  const dir = await tempDir();
  const { finite } = await plant(join(dir, 'cache'));
  const config = new MechIntConfig({ sampleLayers: ['mixed', 'broken'], analysesToRun: ['neuron', 'sae'], verbose: false, analysisOptions: { sae: { n_latents: 16, k: 2, epochs: 2, batch_size: 64 } } });
  const runner = new EvalMechIntRunner(null, config);
  const { analyses } = await runner.runMechintEval({ hiddenShardsPath: join(dir, 'cache') });

  const neuron = analyses.neuron!.mixed!;
  if (isAnalysisError(neuron)) throw new Error(neuron.error);
  assert.deepEqual(neuron.non_finite, { values: 4, rows_excluded: 3, rows_read: ROWS });
  assert.equal(neuron.n_rows, ROWS - 3);
  const n = ROWS - 3;
  for (let j = 0; j < DIM; j++) {
    let sum = 0;
    for (let r = 0; r < n; r++) sum += finite[r * DIM + j]!;
    assert.ok(Math.abs(neuron.mean_activation[j]! - sum / n) < 1e-6, `unit ${j} mean over the finite rows`);
  }

  const sae = analyses.sae!.mixed!;
  if (isAnalysisError(sae)) throw new Error(sae.error);
  assert.equal(sae.n_rows, ROWS - 3);
  assert.ok(sae.dead_fraction < 1, `an SAE on the finite rows has live latents (dead ${sae.dead_fraction})`);
  assert.ok(Number.isFinite(sae.final_loss));

  // A layer with nothing finite stops with an error that names it and the count.
  for (const name of ['neuron', 'sae']) {
    const r = analyses[name]!.broken!;
    assert.ok(isAnalysisError(r), `${name} on broken`);
    assert.equal(r.code, 'MECHINT_ERR_NON_FINITE');
    assert.match(r.error, /Every row of `broken` \(10\) holds NaN or ±Infinity \(80 values\)/);
  }
  await runner.dispose();
});

test('results JSON spells non-finite numbers "NaN", "Infinity" and "-Infinity"', async () => {
  const dir = await tempDir();
  await plant(join(dir, 'cache'));
  registerAnalysis(defineAnalysis({
    name: 'edges',
    title: 'Edge values',
    description: 'returns non-finite numbers',
    options: defineOptions('edges option', {}),
    run: async () => ({ nan: NaN, inf: Infinity, neg: -Infinity, none: null, ok: 1.5 }),
  }));
  try {
    const runner = new EvalMechIntRunner(null, new MechIntConfig({ sampleLayers: ['mixed'], analysesToRun: ['edges'], verbose: false }));
    await runner.runMechintEval({ hiddenShardsPath: join(dir, 'cache') });
    const files = await runner.exportResults(join(dir, 'out'));
    const json = JSON.parse(await readFile(files.json, 'utf8'));
    const r = json.analyses.edges.mixed;
    assert.deepEqual([r.nan, r.inf, r.neg, r.none, r.ok], ['NaN', 'Infinity', '-Infinity', null, 1.5]);
    await runner.dispose();
  } finally {
    unregisterAnalysis('edges');
  }
});

test('excluding a row keeps every later row at its own row offset and provenance', async () => {
  const { finiteRows } = await import('../src/analysis/finite-rows.js');
  const rows = Float32Array.from({ length: 6 * 2 }, (_, i) => Math.floor(i / 2));
  rows[2 * 2] = NaN; // row 2
  rows[5 * 2 + 1] = Infinity; // row 5
  const provenance = Int32Array.from({ length: 6 * 5 }, (_, i) => (i % 5 === 3 ? 100 + Math.floor(i / 5) : 0));
  const count = { values: 0, rows: 0, seen: 0 };
  const blocks = [];
  for await (const b of finiteRows(async function* () { yield { rows, nRows: 6, dim: 2, shard: 's', rowOffset: 10, provenance }; }, count)()) blocks.push(b);
  // Each kept row's value is its index in the block: offset + i must point back at it.
  const kept = blocks.flatMap((b) => Array.from({ length: b.nRows }, (_, i) => ({ at: b.rowOffset! + i, value: b.rows[i * 2]!, prov: b.provenance![i * 5 + 3]! })));
  assert.deepEqual(kept, [0, 1, 3, 4].map((r) => ({ at: 10 + r, value: r, prov: 100 + r })));
  assert.deepEqual(count, { values: 2, rows: 2, seen: 6 });
});
