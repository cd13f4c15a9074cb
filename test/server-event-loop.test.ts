/** Heavy analyses never hold the server's event loop: /health stays fast while ten of them run. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serializeSafetensors } from '../src/formats/safetensors.js';
import { seededMatrix, tempDir } from './helpers.js';
import { startServer } from './server-helpers.js';

test('/health p99 stays under 100 ms while ten 400k-value feature uploads are analysed', async () => {
  const cache = await tempDir();
  const { url } = await startServer({ cache, maxConcurrentUploads: 10, jobs: { concurrency: 2 } });
  const rows = 2000;
  const dim = 200;
  const file = new Blob(serializeSafetensors({ acts: { dtype: 'F32', shape: [rows, dim], data: new Uint8Array(seededMatrix(rows, dim, 3).buffer) } }) as BlobPart[]);

  let running = true;
  const latencies: number[] = [];
  const probe = (async () => {
    while (running) {
      const t0 = performance.now();
      const res = await fetch(`${url}/health`);
      await res.arrayBuffer();
      latencies.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();

  const uploads = Array.from({ length: 10 }, async () => {
    const form = new FormData();
    form.append('file', file, 'acts.safetensors');
    form.append('analysis_type', 'feature');
    form.append('layer_name', 'acts');
    form.append('config', JSON.stringify({ n_clusters: 4, n_components: 20 }));
    const res = await fetch(`${url}/interpret/upload`, { method: 'POST', body: form });
    return { status: res.status, body: (await res.json()) as { results?: { n_rows?: number } } };
  });
  const answers = await Promise.all(uploads);
  running = false;
  await probe;

  for (const a of answers) {
    assert.equal(a.status, 200, JSON.stringify(a.body).slice(0, 300));
    assert.equal(a.body.results?.n_rows, rows);
  }
  latencies.sort((a, b) => a - b);
  const p99 = latencies[Math.min(latencies.length - 1, Math.floor(0.99 * latencies.length))]!;
  assert.ok(latencies.length >= 20, `${latencies.length} health probes`);
  assert.ok(p99 < 100, `/health p99 ${p99.toFixed(1)} ms over ${latencies.length} probes (max ${latencies.at(-1)!.toFixed(1)} ms)`);
});
