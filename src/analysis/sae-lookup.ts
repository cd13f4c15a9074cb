/** Finding the SAE an earlier `sae` analysis trained for a layer (circuit and steering use its latents). */
import { isAbsolute, join } from 'node:path';
import type { AnalysisContext } from './types.js';
import { loadSae, type SaeWeights } from './sae-weights.js';

/** The `weights_file` of `previous.sae[layer]`, made absolute against the output directory; null when there is none. */
export function saeWeightsFileFor(ctx: Pick<AnalysisContext, 'previous' | 'outputDir'>, layer: string): string | null {
  const r = ctx.previous.sae?.[layer] as { weights_file?: unknown } | undefined;
  const file = r?.weights_file;
  if (typeof file !== 'string' || file === '') return null;
  return isAbsolute(file) || !ctx.outputDir ? file : join(ctx.outputDir, file);
}

/** The SAE of `previous.sae[layer]`, loaded; null when the sae analysis did not run (or failed) on that layer. */
export async function previousSae(ctx: Pick<AnalysisContext, 'previous' | 'outputDir'>, layer: string): Promise<SaeWeights | null> {
  const file = saeWeightsFileFor(ctx, layer);
  return file ? loadSae(file) : null;
}
