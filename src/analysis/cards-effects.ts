/**
 * What a latent does to the model's outputs: run the eval inputs with the latent's contribution
 * z_l · W_dec[l] subtracted from the layer's output at every row (so x̂ loses exactly that latent),
 * and compare every output head and the loss with the clean run.
 */
import { tf } from '../backend.js';
import { CaptureError } from '../errors.js';
import { withIntervention, type RecordedActivation } from '../model/interventions.js';
import { outputList, perSampleLoss, round, takeSamples, type ModelInputs } from '../model/model-runs.js';

export interface RemovalHeadEffect {
  head: string;
  /** Mean |output| of the head, clean. */
  mean_abs_before: number | null;
  /** Mean |output| with the latent's contribution removed. */
  mean_abs_after: number | null;
  /** after − before. */
  mean_abs_change: number | null;
  /** RMS of (removed − clean) over all outputs of the head. */
  rms_change: number | null;
  /** Mean change of each unit (over samples and positions); omitted for heads of more than 64 units. */
  mean_change?: (number | null)[];
}

export interface RemovalEffect {
  heads: RemovalHeadEffect[];
  /** Mean eval loss with the contribution removed − clean; null without targets. */
  loss_change: number | null;
  loss_kind: 'compiled' | 'mse' | null;
}

export interface CleanRun {
  outputs: RecordedActivation[];
  /** Mean per-sample loss of the clean run; null without targets. */
  loss: number | null;
}

function lossOf(model: tf.LayersModel, outs: tf.Tensor[], targets: tf.Tensor[] | null, start: number, size: number): number {
  if (!targets) return 0;
  return tf.tidy(() => tf.sum(perSampleLoss(model).loss(targets.map((t) => tf.slice(t, start, size)), outs)).dataSync()[0]!);
}

/**
 * Runs the model on `inputs` in batches, each under `intervention(start, size)` when given, and
 * returns its outputs and mean loss.
 */
export async function runModel(model: tf.LayersModel, layer: string, inputs: ModelInputs, targets: tf.Tensor[] | null, batchSize: number, intervention?: (start: number, size: number) => (out: tf.Tensor) => tf.Tensor): Promise<CleanRun> {
  const n = (Array.isArray(inputs) ? inputs[0]! : inputs).shape[0]!;
  const chunks: Float32Array[][] = [];
  let shapes: number[][] = [];
  let loss = 0;
  for (let start = 0; start < n; start += batchSize) {
    const size = Math.min(batchSize, n - start);
    const run = () => {
      const x = takeSamples(inputs, start, size);
      try {
        const outs = outputList(model.predict(x, { batchSize: size }) as tf.Tensor | tf.Tensor[]);
        shapes = outs.map((o) => o.shape.slice(1) as number[]);
        chunks.push(outs.map((o) => o.dataSync() as Float32Array));
        loss += lossOf(model, outs, targets, start, size);
        tf.dispose(outs);
      } finally {
        tf.dispose(Array.isArray(x) ? x : [x]);
      }
    };
    if (intervention) await withIntervention(model, { [layer]: intervention(start, size) }, run);
    else run();
  }
  const outputs = shapes.map((shape, k) => {
    const data = new Float32Array(chunks.reduce((a, c) => a + c[k]!.length, 0));
    let offset = 0;
    for (const c of chunks) (data.set(c[k]!, offset), (offset += c[k]!.length));
    return { data, shape: [n, ...shape] };
  });
  return { outputs, loss: targets ? loss / n : null };
}

/** An intervention that subtracts z[row, l] · direction from every row of samples start … start+size−1. */
export function subtractContribution(z: Float32Array, nLatents: number, latent: number, direction: Float32Array, positions: number): (start: number, size: number) => (out: tf.Tensor) => tf.Tensor {
  const D = direction.length;
  return (start, size) => (out) =>
    tf.tidy(() => {
      if (out.shape.at(-1) !== D || out.size !== size * positions * D) throw new CaptureError(`The layer's output of shape [${out.shape}] does not match the recorded activations (${positions} position(s) × ${D} units per sample)`);
      const coef = new Float32Array(size * positions);
      for (let r = 0; r < coef.length; r++) coef[r] = z[(start * positions + r) * nLatents + latent]!;
      const delta = tf.matMul(tf.tensor2d(coef, [coef.length, 1]), tf.tensor2d(direction, [1, D]));
      return tf.sub(out, tf.reshape(delta, out.shape));
    });
}

/** Per head: mean |output| before and after, RMS change and per-unit mean change. */
export function compareRuns(heads: string[], clean: CleanRun, changed: CleanRun): RemovalEffect {
  const effects = heads.map((head, k) => {
    const a = clean.outputs[k]!.data;
    const b = changed.outputs[k]!.data;
    const w = clean.outputs[k]!.shape.at(-1) ?? 1;
    let absA = 0;
    let absB = 0;
    let sq = 0;
    const unit = new Float64Array(w);
    for (let i = 0; i < a.length; i++) {
      absA += Math.abs(a[i]!);
      absB += Math.abs(b[i]!);
      const d = b[i]! - a[i]!;
      sq += d * d;
      unit[i % w]! += d;
    }
    const rows = a.length / w;
    const e: RemovalHeadEffect = {
      head,
      mean_abs_before: round(absA / a.length),
      mean_abs_after: round(absB / a.length),
      mean_abs_change: round((absB - absA) / a.length),
      rms_change: round(Math.sqrt(sq / a.length)),
    };
    if (w <= 64) e.mean_change = Array.from(unit, (u) => round(u / rows));
    return e;
  });
  const lossChange = clean.loss === null || changed.loss === null ? null : round(changed.loss - clean.loss);
  return { heads: effects, loss_change: lossChange, loss_kind: null };
}
