/**
 * A trained SAE as plain arrays: saving it as safetensors, loading it back, and encoding or
 * decoding raw rows with it (for later analyses: steering and circuits use decoder rows).
 *
 * Tensors (F32, SAELens layout; they act on raw, un-normalised rows):
 *   W_enc [d, L], b_enc [L], W_dec [L, d] (row i = latent i's unit-norm direction for TopK), b_dec [d].
 *   pre = (x − b_dec) · W_enc + b_enc;  z = ReLU(TopK_k(pre)) or ReLU(pre);  x̂ = z · W_dec + b_dec.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { initBackend, tf } from '../backend.js';
import { FormatError } from '../errors.js';
import { fromFloat32, toFloat32 } from '../formats/dtypes.js';
import { parseSafetensors, serializeSafetensors } from '../formats/safetensors.js';
import { createParams, disposeParams, type SaeArchitectureName, type SaeHyper, type SaeParamValues } from './sae-common.js';
import { getSaeArchitecture, isSaeArchitectureName } from './sae-registry.js';
import { startTopKTrainer } from './sae-topk.js';

/** Folder, beside the results, that holds one `<layer>.safetensors` per layer. */
export const SAE_WEIGHTS_DIR = 'sae';
export const SAE_FORMAT_VERSION = '1';

export interface SaeWeights extends SaeParamValues {
  architecture: SaeArchitectureName;
  dim: number;
  nLatents: number;
  /** Active latents per row for TopK; equals nLatents for ReLU. */
  k: number;
  layer?: string;
}

/** `${outputDir}/sae/<layer>.safetensors`, with characters unsafe in file names replaced by `_`. */
export function saeWeightsPath(outputDir: string, layer: string): string {
  return join(outputDir, SAE_WEIGHTS_DIR, `${layer.replace(/[^A-Za-z0-9._-]/g, '_')}.safetensors`);
}

/** Writes the weights atomically (temporary name, then rename). */
export async function saveSae(path: string, sae: SaeWeights, metadata: Record<string, string> = {}): Promise<void> {
  const { dim: d, nLatents: L } = sae;
  const chunks = serializeSafetensors(
    {
      W_enc: fromFloat32(sae.W_enc, [d, L]),
      b_enc: fromFloat32(sae.b_enc, [L]),
      W_dec: fromFloat32(sae.W_dec, [L, d]),
      b_dec: fromFloat32(sae.b_dec, [d]),
    },
    {
      ...metadata,
      format: 'mechint-sae',
      format_version: SAE_FORMAT_VERSION,
      architecture: sae.architecture,
      k: String(sae.k),
      n_latents: String(L),
      dim: String(d),
      ...(sae.layer === undefined ? {} : { layer: sae.layer }),
      convention: 'pre = (x - b_dec) @ W_enc + b_enc; z = relu(topk(pre, k)) or relu(pre); x_hat = z @ W_dec + b_dec',
    },
  );
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, chunks);
  await rename(tmp, path);
}

/** Reads weights written by `saveSae` (or any file with the same four tensors and layout). */
export async function loadSae(path: string): Promise<SaeWeights> {
  const { header, tensors } = parseSafetensors(await readFile(path), path);
  for (const name of ['W_enc', 'b_enc', 'W_dec', 'b_dec']) {
    if (!tensors[name]) throw new FormatError(`${path}: SAE weights need tensor \`${name}\`; found ${Object.keys(tensors).join(', ') || 'none'}`);
  }
  const [d, L] = tensors.W_enc!.shape as [number, number];
  const expect = { W_enc: [d, L], b_enc: [L], W_dec: [L, d], b_dec: [d] };
  for (const [name, shape] of Object.entries(expect)) {
    const got = tensors[name]!.shape;
    if (got.length !== shape.length || got.some((n, i) => n !== shape[i])) {
      throw new FormatError(`${path}: tensor \`${name}\` has shape [${got}] but W_enc [${d}, ${L}] needs [${shape}]`);
    }
  }
  const meta = header.metadata;
  const architecture = meta.architecture ?? 'topk';
  if (!isSaeArchitectureName(architecture)) throw new FormatError(`${path}: unknown SAE architecture \`${architecture}\``);
  const k = architecture === 'topk' ? Number(meta.k) : L;
  if (!Number.isInteger(k) || k < 1 || k > L) throw new FormatError(`${path}: metadata k = \`${meta.k}\` is not an integer from 1 to ${L}`);
  const copy = (name: string) => Float32Array.from(toFloat32(tensors[name]!));
  return {
    architecture, dim: d, nLatents: L, k,
    ...(meta.layer === undefined ? {} : { layer: meta.layer }),
    W_enc: copy('W_enc'), b_enc: copy('b_enc'), W_dec: copy('W_dec'), b_dec: copy('b_dec'),
  };
}

function hyperOf(sae: SaeWeights): SaeHyper {
  return { dim: sae.dim, nLatents: sae.nLatents, k: sae.k, l1Coefficient: 0, lr: 0, auxK: 0, auxCoefficient: 0, deadStepsThreshold: 1 };
}

const CHUNK_ROWS = 4096;
/**
 * Multiply-adds of the encoder product above which a TopK encode starts worker threads: each
 * loads its own tfjs + wasm (about a second), which pays off from a few seconds of work.
 */
const THREADED_ENCODE_MACS = 2 ** 34;

/** Latent activations of raw rows (`nRows × dim`), dense and row-major: `nRows × nLatents`. */
export async function encodeSae(sae: SaeWeights, rows: Float32Array, nRows = Math.floor(rows.length / sae.dim), options: { workers?: number } = {}): Promise<Float32Array> {
  await initBackend();
  const hp = hyperOf(sae);
  const workers = options.workers ?? (nRows * sae.dim * sae.nLatents >= THREADED_ENCODE_MACS ? availableParallelism() : 1);
  if (sae.architecture === 'topk' && workers > 1) return encodeTopKThreaded(sae, hp, rows, nRows, workers);
  const arch = getSaeArchitecture(sae.architecture);
  const params = createParams(sae, hp);
  const L = sae.nLatents;
  const out = new Float32Array(nRows * L);
  try {
    for (let start = 0; start < nRows; start += CHUNK_ROWS) {
      const n = Math.min(CHUNK_ROWS, nRows - start);
      const { code } = arch.encode(params, hp, rows.subarray(start * sae.dim, (start + n) * sae.dim), n);
      if (code.kind === 'dense') {
        out.set(code.values, start * L);
      } else {
        for (let r = 0; r < n; r++) {
          for (let j = 0; j < code.perRow; j++) {
            const v = code.values[r * code.perRow + j]!;
            if (v > 0) out[(start + r) * L + code.indices[r * code.perRow + j]!] = v;
          }
        }
      }
    }
  } finally {
    disposeParams(params);
  }
  return out;
}

/** The TopK encode on latent slices in worker threads (sae-parallel.ts). */
async function encodeTopKThreaded(sae: SaeWeights, hp: SaeHyper, rows: Float32Array, nRows: number, workers: number): Promise<Float32Array> {
  const trainer = await startTopKTrainer(sae, { ...hp, workers, maxRows: CHUNK_ROWS });
  const L = sae.nLatents;
  const out = new Float32Array(nRows * L);
  try {
    const { code } = trainer.encode!(rows, nRows);
    if (code.kind !== 'sparse') throw new FormatError('A TopK encode returned a dense code');
    const { values, indices, perRow } = code;
    for (let r = 0; r < nRows; r++) {
      for (let j = 0; j < perRow; j++) {
        const v = values[r * perRow + j]!;
        if (v > 0) out[r * L + indices[r * perRow + j]!] = v;
      }
    }
  } finally {
    await trainer.dispose();
  }
  return out;
}

/** Reconstructions x̂ = z · W_dec + b_dec of latent rows (`nRows × nLatents`), as `nRows × dim`. */
export async function decodeSae(sae: SaeWeights, latents: Float32Array, nRows = Math.floor(latents.length / sae.nLatents)): Promise<Float32Array> {
  await initBackend();
  const out = tf.tidy(() => tf.add(tf.matMul(tf.tensor2d(latents.subarray(0, nRows * sae.nLatents), [nRows, sae.nLatents]), tf.tensor2d(sae.W_dec, [sae.nLatents, sae.dim])), tf.tensor1d(sae.b_dec)));
  const values = out.dataSync() as Float32Array;
  out.dispose();
  return values;
}

/**
 * Weights trained on rows (x − mean) / scale, rewritten to act on raw rows. Exact because
 * ReLU and TopK commute with a positive scale: latents come out multiplied by `scale`,
 * decoder rows keep their norm.
 */
export function toRawSpace(v: SaeParamValues, mean: Float64Array, scale: number): SaeParamValues {
  const b_enc = v.b_enc.map((b) => b * scale);
  const b_dec = new Float32Array(v.b_dec.length);
  for (let j = 0; j < b_dec.length; j++) b_dec[j] = mean[j]! + scale * v.b_dec[j]!;
  return { W_enc: v.W_enc, b_enc, W_dec: v.W_dec, b_dec };
}
