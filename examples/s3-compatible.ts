/**
 * Guide: "Storage backends". Shards go to an S3-compatible store (MinIO, R2, Ceph, s3rver) with
 * storage_backend 'both': written locally first, uploaded in the background, each upload
 * confirmed by size and checksum. Then the shards are read back straight from s3://, and a run
 * made with 'local' storage is uploaded afterwards with syncDirectory (what `mechint sync` runs).
 *
 * Credentials and region come from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_REGION, AWS_PROFILE, ~/.aws/*), never from the config.
 *
 *   S3_ENDPOINT=http://127.0.0.1:9000 S3_BUCKET=mechint npx tsx examples/s3-compatible.ts
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend, MechIntCallback, MechIntConfig, readManifest, S3Store, ShardReader, syncDirectory, type Manifest, type SyncReport } from 'mechint';
import { isMain, tinyData, tinyModel } from './tiny-model.js';

export interface S3ExampleOptions {
  /** The S3-compatible endpoint, e.g. http://127.0.0.1:9000 */
  endpoint: string;
  /** An existing bucket. */
  bucket: string;
  /** Key prefix of this run. @default 'examples/run1' */
  prefix?: string;
  /** @default a fresh temporary directory */
  dir?: string;
}

export interface S3ExampleResult {
  manifest: Manifest;
  /** Layers and rows read back from s3://bucket/prefix. */
  remoteLayers: { name: string; rows: number }[];
  sync: SyncReport;
}

async function train(config: MechIntConfig): Promise<void> {
  const model = tinyModel();
  const { xs, ys } = tinyData(96);
  model.compile({ optimizer: tf.train.adam(0.01), loss: 'meanSquaredError' });
  await model.fit(xs, ys, { epochs: 2, batchSize: 16, callbacks: [new MechIntCallback(config)], verbose: 0 });
  tf.dispose([xs, ys]);
  model.dispose();
}

export async function main(options: S3ExampleOptions): Promise<S3ExampleResult> {
  await initBackend();
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'mechint-s3-')));
  const prefix = options.prefix ?? 'examples/run1';

  // 1. 'both': local shards plus background uploads. With 's3' the local copy is removed once confirmed.
  const config = new MechIntConfig({
    sampleLayers: ['mamba_backbone.blocks.3', 'popt'],
    saveHiddenEveryNSteps: 4,
    storageBackend: 'both',
    storagePath: join(dir, 'mechint_cache'),
    s3Bucket: options.bucket,
    s3Prefix: prefix,
    s3Endpoint: options.endpoint,
    s3ForcePathStyle: true, // most S3-compatible servers need path-style URLs
    s3UploadTimeoutMs: 60_000, // the end of training waits this long for pending uploads
    verbose: false,
  });
  await train(config);
  const manifest = (await readManifest(config.storagePath))!; // every shard: upload 'uploaded', remote_uri s3://…

  // 2. Read the shards back from the bucket (range GETs; nothing is downloaded whole).
  const reader = await ShardReader.open(`s3://${options.bucket}/${prefix}`, { s3: { endpoint: options.endpoint, forcePathStyle: true } });
  const remoteLayers = reader.layers().map((l) => ({ name: l.name, rows: l.rows }));

  // 3. A run written with storage_backend 'local', uploaded afterwards (`mechint sync DIR --s3-bucket … --s3-endpoint …`).
  const localConfig = new MechIntConfig({ sampleLayers: ['popt'], saveHiddenEveryNSteps: 4, storagePath: join(dir, 'offline_run'), verbose: false });
  await train(localConfig);
  const store = new S3Store({ bucket: options.bucket, prefix: `${prefix}-offline`, endpoint: options.endpoint, forcePathStyle: true });
  try {
    const sync = await syncDirectory(localConfig.storagePath, { store, keepLocal: true });
    return { manifest, remoteLayers, sync };
  } finally {
    store.destroy();
  }
}

if (isMain(import.meta.url)) {
  const endpoint = process.env.S3_ENDPOINT;
  const bucket = process.env.S3_BUCKET;
  if (!endpoint || !bucket) {
    console.error('Set S3_ENDPOINT (e.g. http://127.0.0.1:9000) and S3_BUCKET (an existing bucket), and AWS credentials for that server');
    process.exit(2);
  }
  const r = await main({ endpoint, bucket });
  console.log(`${r.manifest.shards.length} shard(s): ${r.manifest.shards.map((s) => s.upload).join(', ')}`);
  console.log(`Read back: ${r.remoteLayers.map((l) => `${l.name} × ${l.rows}`).join(', ')}`);
  console.log(`sync: uploaded ${r.sync.uploaded}, already there ${r.sync.already_there}, pending ${r.sync.pending}, done ${r.sync.done}`);
}
