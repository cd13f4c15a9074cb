/**
 * Files other tools load, written beside the results by `exportResults`:
 * - `saelens/<layer>/`: SAELens's on-disk layout for each trained SAE: `cfg.json`,
 *   `sae_weights.safetensors` (`W_enc` [d_in, d_sae], `b_enc` [d_sae], `W_dec` [d_sae, d_in],
 *   `b_dec` [d_in]) and `sparsity.safetensors` (`sparsity`: log10 feature density, floored at
 *   -10 for latents that never fired). The weights act on raw activations, so
 *   `normalize_activations` is 'none' whatever mechint trained on.
 * - `cards/<layer>.jsonl`: one latent card per line, with Neuronpedia's field names where they
 *   apply (`index`, `frac_nonzero`, `freq_hist`, `maxActApprox`, `activations` with `values`,
 *   `topkCosSim`) and mechint's own fields beside them.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CardsResult } from '../analysis/cards.js';
import { isAnalysisError, type AnalysisResults } from '../analysis/results.js';
import type { SaeResult } from '../analysis/sae.js';
import { fromFloat32 } from '../formats/dtypes.js';
import { parseSafetensors, serializeSafetensors } from '../formats/safetensors.js';

export const SAELENS_DIR = 'saelens';
export const CARDS_DIR = 'cards';
export const SAELENS_WEIGHTS_FILE = 'sae_weights.safetensors';
export const SAELENS_SPARSITY_FILE = 'sparsity.safetensors';
export const SAELENS_CFG_FILE = 'cfg.json';
/** log10 density written for a latent that never fired. */
export const SPARSITY_FLOOR = -10;

/** A layer name as one path segment. */
export const layerSlug = (layer: string): string => layer.replace(/[^A-Za-z0-9._-]/g, '_');

/** Writes the SAELens folder of one SAE result; returns the files written, relative to `out`. */
export async function writeSaelensSae(out: string, layer: string, r: SaeResult, weightsFile: string): Promise<string[]> {
  const bytes = new Uint8Array(await readFile(weightsFile));
  const { header, tensors } = parseSafetensors(bytes, weightsFile);
  const rel = `${SAELENS_DIR}/${layerSlug(layer)}`;
  const dir = join(out, rel);
  await mkdir(dir, { recursive: true });
  const meta = header.metadata;
  const d = r.dim;
  const L = r.n_latents;
  const cfg = {
    architecture: r.architecture === 'topk' ? 'topk' : 'standard',
    d_in: d,
    d_sae: L,
    ...(r.architecture === 'topk' ? { k: r.k } : {}),
    dtype: 'float32',
    device: 'cpu',
    apply_b_dec_to_input: true,
    normalize_activations: 'none',
    hook_name: layer,
    layer,
    model_name: null,
    mechint: {
      trained_on: r.normalize,
      input_scale: meta.input_scale === undefined ? null : Number(meta.input_scale),
      note: 'weights act on raw activations: pre = (x - b_dec) @ W_enc + b_enc; z = relu(topk(pre, k)) or relu(pre); x_hat = z @ W_dec + b_dec',
      n_rows: r.n_rows,
      final_l0: r.final_l0,
      explained_variance: r.explained_variance,
      dead_fraction: r.dead_fraction,
    },
  };
  const order = ['W_enc', 'b_enc', 'W_dec', 'b_dec'];
  const weights = Object.fromEntries(order.map((name) => [name, tensors[name]!]));
  const sparsity = Float32Array.from({ length: L }, (_, l) => {
    const f = r.latent_frequencies?.[l] ?? 0;
    return f > 0 ? Math.max(SPARSITY_FLOOR, Math.log10(f)) : SPARSITY_FLOOR;
  });
  await writeFile(join(dir, SAELENS_CFG_FILE), JSON.stringify(cfg, null, 2) + '\n');
  await writeFile(join(dir, SAELENS_WEIGHTS_FILE), serializeSafetensors(weights, { format: 'pt' }));
  await writeFile(join(dir, SAELENS_SPARSITY_FILE), serializeSafetensors({ sparsity: fromFloat32(sparsity, [L]) }, { format: 'pt' }));
  return [SAELENS_CFG_FILE, SAELENS_WEIGHTS_FILE, SAELENS_SPARSITY_FILE].map((f) => `${rel}/${f}`);
}

/** The JSON Lines of one layer's cards. */
export function cardsJsonl(layer: string, r: CardsResult): string {
  return r.cards
    .map((c) =>
      JSON.stringify({
        layer,
        index: c.index,
        frac_nonzero: c.density,
        freq_hist: c.histogram,
        maxActApprox: c.max_activation,
        activations: c.top_examples.map((e) => ({
          sample: e.sample,
          position: e.position,
          values: e.values ?? [e.value],
          maxValue: e.value,
          maxValueTokenIndex: e.values ? e.position : 0,
          context: e.context,
        })),
        topkCosSim: { indices: c.neighbours.map((x) => x.index), values: c.neighbours.map((x) => x.cosine) },
        description: c.description,
        best_covariate: c.best_covariate,
        covariates: c.covariates,
        covariate_controls: c.covariate_controls,
        mean_activation: c.mean_activation,
        mean_active_activation: c.mean_active_activation,
        output_effects: c.output_effects,
      }),
    )
    .map((line) => `${line}\n`)
    .join('');
}

/**
 * Writes the SAELens folders (every SAE result with weights) and the cards' JSON Lines into
 * `out`; `weightsFile(layer, result)` gives the absolute path of a result's weights. Returns the
 * files written, relative to `out`.
 */
export async function writeInteropExports(out: string, results: AnalysisResults, weightsFile: (layer: string, r: SaeResult) => string | null): Promise<string[]> {
  const files: string[] = [];
  for (const [layer, r] of Object.entries(results.sae ?? {})) {
    if (isAnalysisError(r)) continue;
    const file = weightsFile(layer, r as SaeResult);
    if (!file) continue;
    try {
      files.push(...(await writeSaelensSae(out, layer, r as SaeResult, file)));
    } catch (err) {
      // A stored result whose weights are gone still exports everything else.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  for (const [layer, r] of Object.entries(results.cards ?? {})) {
    if (isAnalysisError(r) || !Array.isArray((r as CardsResult).cards)) continue;
    const rel = `${CARDS_DIR}/${layerSlug(layer)}.jsonl`;
    await mkdir(join(out, CARDS_DIR), { recursive: true });
    await writeFile(join(out, rel), cardsJsonl(layer, r as CardsResult));
    files.push(rel);
  }
  return files;
}
