/**
 * Guide: "Python interop". Converts a directory of the original system's `.pt` shards
 * (`activations_shard_000000_step_0.pt`, torch.save of {global_step, shard_id, activations, metadata})
 * into mechint shards with a manifest, so `mechint analyze`, `inspect` and `serve` can read it.
 * Nothing in the `.pt` files is executed: a restricted unpickler accepts tensors and containers only.
 *
 *   npx tsx examples/convert-pt.ts OLD_DIR NEW_DIR
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseShardFileName, readActivationFile, ShardWriter, toFloat32, type LayerBlock } from 'mechint';
import { isMain } from './tiny-model.js';

export interface ConvertOptions {
  /** Directory holding `activations_shard_*.pt` files. */
  from: string;
  /** Directory for the safetensors shards and manifest.json. */
  to: string;
}

export async function main(options: ConvertOptions): Promise<{ converted: string[]; layers: string[] }> {
  const files = (await readdir(options.from))
    .map((file) => ({ file, parsed: parseShardFileName(file) }))
    .filter((f) => f.parsed?.ext === 'pt')
    .sort((a, b) => a.parsed!.shardId - b.parsed!.shardId);
  const writer = new ShardWriter({ dir: options.to, config: { converted_from: options.from } });
  const converted: string[] = [];
  const layers = new Set<string>();
  for (const { file, parsed } of files) {
    const { tensors, metadata } = readActivationFile(await readFile(join(options.from, file)), file);
    const blocks: Record<string, LayerBlock> = {};
    for (const [name, t] of Object.entries(tensors)) {
      if (t.shape.length < 2) continue; // a layer needs a batch dimension and units
      blocks[name] = { shape: t.shape, data: toFloat32(t).slice() };
      layers.add(name);
    }
    const epoch = Number(metadata.epoch);
    await writer.write({ layers: blocks, globalStep: parsed!.globalStep, epoch: Number.isInteger(epoch) ? epoch : null, metadata: { source_file: file } });
    converted.push(file);
  }
  await writer.finish(); // manifest status 'complete'
  return { converted, layers: [...layers].sort() };
}

if (isMain(import.meta.url)) {
  const [from, to] = process.argv.slice(2);
  if (!from || !to) {
    console.error('Usage: npx tsx examples/convert-pt.ts OLD_DIR NEW_DIR');
    process.exit(2);
  }
  const r = await main({ from, to });
  console.log(`Converted ${r.converted.length} shard(s) with layers ${r.layers.join(', ')} into ${to}`);
}
