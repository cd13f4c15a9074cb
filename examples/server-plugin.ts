/**
 * Guide: "HTTP API". The guide's FastAPIIntegrationMixin is the Fastify plugin `mechintRoutes`:
 * register it on your own Fastify app, next to your own routes. (`mechint serve` and `buildApp`
 * give you a ready app with /health, OpenAPI at /docs and MECHINT_API_KEY auth instead.)
 *
 *   npx tsx examples/server-plugin.ts
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify from 'fastify';
import { mechintRoutes, ShardWriter } from 'mechint';
import { isMain } from './tiny-model.js';

export interface ServerPluginOptions {
  /** A shard directory to serve; by default one with two planted shards is made. */
  cache?: string;
  /** @default 0 (a free port) */
  port?: number;
  /** Keep serving after the example requests (when run directly). @default false */
  keepOpen?: boolean;
}

export interface ServerPluginResult {
  url: string;
  layers: { name: string; dim: number; rows: number }[];
  neuron: { analysis_type: string; layer_name: string; results: { n_units: number; dead_units: number[] } };
  feature: { results: { explained_variance: number[] } };
  own: unknown;
  close: () => Promise<void>;
}

/** Two shards with a layer `popt` of 4 units (unit 3 never fires) and `mamba_backbone.blocks.3` of 8. */
export async function plantCache(dir: string): Promise<void> {
  const writer = new ShardWriter({ dir });
  let a = 3;
  const rand = () => (a = (a * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  for (const globalStep of [0, 200]) {
    const popt = Float32Array.from({ length: 64 * 4 }, (_, i) => (i % 4 === 3 ? 0 : rand()));
    const block = Float32Array.from({ length: 64 * 8 }, () => rand() - 0.5);
    await writer.write({ layers: { popt: { shape: [64, 4], data: popt }, 'mamba_backbone.blocks.3': { shape: [64, 8], data: block } }, globalStep });
  }
  await writer.finish();
}

export async function main(options: ServerPluginOptions = {}): Promise<ServerPluginResult> {
  let cache = options.cache;
  if (cache === undefined) {
    cache = join(await mkdtemp(join(tmpdir(), 'mechint-server-')), 'mechint_cache');
    await plantCache(cache);
  }

  const app = Fastify();
  // Your own routes stay yours.
  app.get('/predict', async () => ({ prediction: [0.1, 0.9] }));
  // The guide's endpoints: GET /interpret/layers, POST /interpret, POST /interpret/upload, GET|DELETE /interpret/jobs/:id.
  await app.register(mechintRoutes, {
    cache,
    config: { analysisOptions: { feature: { n_clusters: 2 } } }, // server-side defaults a request's `config` merges over
    uploadLimit: 16 * 1024 * 1024,
    // apiKey: process.env.MECHINT_API_KEY, // require `Authorization: Bearer <key>` on these routes
  });
  const url = await app.listen({ host: '127.0.0.1', port: options.port ?? 0 });

  const layers = ((await (await fetch(`${url}/interpret/layers`)).json()) as { layers: ServerPluginResult['layers'] }).layers;
  const post = async (body: unknown) => {
    const res = await fetch(`${url}/interpret`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`POST /interpret answered ${res.status}: ${await res.text()}`);
    return res.json();
  };
  const neuron = (await post({ analysis_type: 'neuron', layer_name: 'popt', config: {} })) as ServerPluginResult['neuron'];
  const feature = (await post({ analysis_type: 'feature', layer_name: 'mamba_backbone.blocks.3', config: { n_components: 3 } })) as ServerPluginResult['feature'];
  const own = await (await fetch(`${url}/predict`)).json();

  const close = () => app.close();
  if (!options.keepOpen) await close();
  return { url, layers, neuron, feature, own, close };
}

if (isMain(import.meta.url)) {
  const r = await main({ port: 8000, keepOpen: true });
  console.log(`Layers: ${r.layers.map((l) => `${l.name} [${l.dim}] × ${l.rows}`).join(', ')}`);
  console.log(`popt dead units: ${r.neuron.results.dead_units.join(', ')}`);
  console.log(`Serving ${r.url}; try: curl ${r.url}/interpret/layers   (Ctrl-C stops)`);
  process.once('SIGINT', () => void r.close());
}
