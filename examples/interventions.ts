/**
 * Guide: "Advanced usage: interventions". Run a model with layer outputs changed, scoped and
 * always undone: zero or mean ablation of units, patching activations recorded on other inputs,
 * adding a direction (steering), and recording layer outputs on given inputs.
 *
 *   npx tsx examples/interventions.ts
 */
import * as tf from '@tensorflow/tfjs';
import { ablateUnits, addDirection, initBackend, patchActivations, predictAll, recordActivations, steer, withIntervention, type SteeringCurve } from 'mechint';
import { isMain, tinyData, tinyModel } from './tiny-model.js';

export interface InterventionsResult {
  /** RMS change of the outputs when popt's units 0 and 1 are zeroed. */
  zeroAblationRms: number;
  /** The same with the units set to their mean activation (usually smaller). */
  meanAblationRms: number;
  /** Fraction of the clean − corrupted output difference restored by patching popt's clean activations into the corrupted run. */
  patchRestored: number;
  /** Output change per unit of α along popt's unit-0 direction. */
  steering: SteeringCurve;
  /** The model computes exactly what it did before any intervention. */
  unchanged: boolean;
}

export async function main(): Promise<InterventionsResult> {
  await initBackend();
  const model = tinyModel();
  const clean = tinyData(32, 3).xs;
  const corrupted = tinyData(32, 4).xs;
  const layer = 'popt';
  try {
    const base = predictAll(model, clean)[0]!;

    // Record popt on the clean inputs: { data, shape } with batch first.
    const recorded = (await recordActivations(model, [layer], clean))[layer]!;
    const width = recorded.shape.at(-1)!;
    const means = Array.from({ length: width }, (_, u) => {
      let s = 0;
      for (let r = 0; r < recorded.shape[0]!; r++) s += recorded.data[r * width + u]!;
      return s / recorded.shape[0]!;
    });

    // Ablation: units 0 and 1 zeroed, then set to their means. predict runs inside the scope.
    const zeroed = await withIntervention(model, { [layer]: ablateUnits([0, 1]) }, () => predictAll(model, clean)[0]!);
    const meaned = await withIntervention(model, { [layer]: ablateUnits([0, 1], means) }, () => predictAll(model, clean)[0]!);

    // Patching: run the corrupted inputs with popt replaced by its clean activations.
    const corruptOut = predictAll(model, corrupted)[0]!;
    const patched = await withIntervention(model, { [layer]: patchActivations(recorded) }, () => predictAll(model, corrupted)[0]!);
    let num = 0;
    let den = 0;
    for (let i = 0; i < base.data.length; i++) {
      const d = base.data[i]! - corruptOut.data[i]!;
      num += (patched.data[i]! - corruptOut.data[i]!) * d;
      den += d * d;
    }

    // Steering: add α × a direction at popt, for several α (one forward pass per chunk of α values).
    const direction = Array.from({ length: width }, (_, u) => (u === 0 ? 1 : 0));
    const steering = await steer(model, layer, direction, [-1, 0, 1, 2], clean);
    // A single steered run, scoped like the others.
    await withIntervention(model, { [layer]: addDirection(direction, 2) }, () => predictAll(model, clean));

    const after = predictAll(model, clean)[0]!;
    return {
      zeroAblationRms: rms(zeroed.data, base.data),
      meanAblationRms: rms(meaned.data, base.data),
      patchRestored: den > 0 ? num / den : NaN,
      steering,
      unchanged: after.data.every((v, i) => v === base.data[i]),
    };
  } finally {
    tf.dispose([clean, corrupted]);
    model.dispose();
  }
}

function rms(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s / a.length);
}

if (isMain(import.meta.url)) {
  const r = await main();
  console.log(`zero ablation RMS ${r.zeroAblationRms.toFixed(4)}, mean ablation RMS ${r.meanAblationRms.toFixed(4)}`);
  console.log(`patching restores ${(100 * r.patchRestored).toFixed(1)}% of the clean − corrupted difference`);
  console.log(`steering slope per output unit: ${r.steering.heads[0]!.slope.join(', ')}`);
  console.log(`model unchanged afterwards: ${r.unchanged}`);
}
