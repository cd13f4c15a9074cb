import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { initBackend, tf } from '../src/backend.js';
import { generateSyntheticNeuralData, splitTrials } from '../src/demo/synthetic.js';
import {
  buildFitData, compileNeuroFMXMini, createNeuroFMXMini, evaluateBehaviorR2, loadNeuroFMXMini,
  matMulFast, NEUROFMX_MINI_DEMO_DEFAULTS as DEMO, NEUROFMX_MINI_LAYER_PATHS, selectiveScan, toModelInput,
} from '../src/demo/neurofmx-mini.js';
import { fileSystem } from '../src/model/file-handler.js';

let dir: string;
before(async () => {
  await initBackend();
  dir = await mkdtemp(path.join(tmpdir(), 'mechint-nfm-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('every default layer path exists: tokenizer, mamba_backbone.blocks.0…3, perceiver, popt, heads', () => {
  const model = createNeuroFMXMini({ nNeurons: 16, nBins: 8, dModel: 8, dState: 4 });
  assert.deepEqual(model.layers.map((l) => l.name).filter((n) => n !== 'spikes'),
    ['tokenizer', 'mamba_backbone', 'perceiver', 'popt', 'behavior_head', 'reconstruction_head']);
  const backbone = model.getLayer('mamba_backbone') as tf.LayersModel;
  assert.deepEqual(backbone.layers.map((l) => l.name).slice(1), ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.3']);
  for (const p of NEUROFMX_MINI_LAYER_PATHS) {
    const parts = p.split(/\.(?=blocks\.)/);
    const layer = parts.length === 2 ? (model.getLayer(parts[0]!) as tf.LayersModel).getLayer(parts[1]!) : model.getLayer(p);
    assert.ok(layer, p);
  }
  const x = tf.ones([3, 8, 16]);
  const [b, r] = model.predict(x) as tf.Tensor[];
  assert.deepEqual(b!.shape, [3, 8, 2]);
  assert.deepEqual(r!.shape, [3, 8, 16]);
  const popt = tf.model({ inputs: model.inputs, outputs: model.getLayer('popt').output as tf.SymbolicTensor });
  assert.deepEqual((popt.predict(x) as tf.Tensor).shape, [3, 8]); // one embedding per trial
  tf.dispose([x, b!, r!]);
});

test('the explicit-transpose matMul gradient equals tfjs\'s own', () => {
  const a = tf.randomNormal([16, 8], 0, 1, 'float32', 1);
  const w = tf.randomNormal([8, 12], 0, 1, 'float32', 2);
  const u = tf.randomNormal([16, 32], 0, 1, 'float32', 3);
  const v = tf.randomNormal([16 * 12 / 2, 8], 0, 1, 'float32', 4);
  // One operand also feeds a second product through a reshape, so gradients accumulate.
  const loss = (mm: (x: tf.Tensor, y: tf.Tensor) => tf.Tensor) => (x: tf.Tensor, y: tf.Tensor) => {
    const out = tf.mul(mm(x, y), 0.5);
    const other = mm(v, tf.reshape(tf.slice(y, [0, 0], [8, 2]), [8, 2]));
    return tf.add(tf.sum(tf.mul(tf.tanh(out), u.slice([0, 0], [16, 12]))), tf.sum(tf.square(tf.add(tf.reshape(out, [96, 2]), other))));
  };
  const plain = tf.grads(loss((x, y) => tf.matMul(x as tf.Tensor2D, y as tf.Tensor2D)))([a, w]);
  const fast = tf.grads(loss(matMulFast))([a, w]);
  for (let k = 0; k < 2; k++) {
    const diff = tf.max(tf.abs(tf.sub(plain[k]!, fast[k]!))).dataSync()[0]!;
    assert.ok(diff < 1e-4, `grad ${k} differs by ${diff}`);
  }
  tf.dispose([a, w, u, v, ...plain, ...fast]);
});

/** The recurrence, step by step in plain JS: h_t = exp(logA_t) h_{t-1} + dx_t B_t, y_t = h_t·C_t. */
function scanReference(logA: Float32Array, dx: Float32Array, bs: Float32Array, cs: Float32Array, b: number, t: number, e: number, n: number): Float32Array {
  const y = new Float32Array(b * t * e);
  for (let i = 0; i < b; i++) {
    const h = new Float64Array(e * n);
    for (let s = 0; s < t; s++) {
      for (let c = 0; c < e; c++) {
        const decay = Math.exp(Math.max(logA[(i * t + s) * e + c]!, -2));
        let out = 0;
        for (let k = 0; k < n; k++) {
          h[c * n + k] = decay * h[c * n + k]! + dx[(i * t + s) * e + c]! * bs[(i * t + s) * n + k]!;
          out += h[c * n + k]! * cs[(i * t + s) * n + k]!;
        }
        y[(i * t + s) * e + c] = out;
      }
    }
  }
  return y;
}

test('the selective scan is the step-by-step recurrence, in one chunk and across chunks', async () => {
  const [b, t, e, n] = [2, 11, 3, 4];
  const logA = tf.neg(tf.mul(tf.randomUniform([b, t, e], 0.05, 1.5, 'float32', 1), 1)) as tf.Tensor3D;
  const dx = tf.randomNormal([b, t, e], 0, 1, 'float32', 2) as tf.Tensor3D;
  const bs = tf.randomNormal([b, t, n], 0, 1, 'float32', 3) as tf.Tensor3D;
  const cs = tf.randomNormal([b, t, n], 0, 1, 'float32', 4) as tf.Tensor3D;
  const ref = scanReference(logA.dataSync() as Float32Array, dx.dataSync() as Float32Array, bs.dataSync() as Float32Array, cs.dataSync() as Float32Array, b, t, e, n);
  for (const chunk of [32, 4]) {
    const y = await selectiveScan(logA, dx, bs, cs, chunk).data();
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(y[i]! - ref[i]!) < 1e-4 * (1 + Math.abs(ref[i]!)), `chunk ${chunk} @${i}: ${y[i]} vs ${ref[i]}`);
  }
  // Autodiff through the matrix form matches autodiff through a step-by-step tfjs loop.
  const sequential = (la: tf.Tensor, d: tf.Tensor): tf.Tensor => {
    const decay = tf.exp(tf.maximum(la, -2));
    let h: tf.Tensor = tf.zeros([b, e, n]);
    const ys: tf.Tensor[] = [];
    for (let s = 0; s < t; s++) {
      const at = (x: tf.Tensor, w: number) => tf.reshape(tf.slice(x, [0, s, 0], [b, 1, w]), [b, w]);
      h = tf.add(tf.mul(h, tf.reshape(at(decay, e), [b, e, 1])), tf.mul(tf.reshape(at(d, e), [b, e, 1]), tf.reshape(at(bs, n), [b, 1, n])));
      ys.push(tf.sum(tf.mul(h, tf.reshape(at(cs, n), [b, 1, n])), -1));
    }
    return tf.stack(ys, 1);
  };
  const weights = tf.randomNormal([b, t, e], 0, 1, 'float32', 5);
  const lossOf = (f: (la: tf.Tensor, d: tf.Tensor) => tf.Tensor) => (la: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(f(la, d), weights));
  const g0 = tf.grads(lossOf(sequential))([logA, dx]);
  const g1 = tf.grads(lossOf((la, d) => selectiveScan(la as tf.Tensor3D, d as tf.Tensor3D, bs, cs, 32)))([logA, dx]);
  const g2 = tf.grads(lossOf((la, d) => selectiveScan(la as tf.Tensor3D, d as tf.Tensor3D, bs, cs, 4)))([logA, dx]);
  for (const g of [g1, g2]) {
    for (let k = 0; k < 2; k++) {
      const diff = tf.max(tf.abs(tf.sub(g[k]!, g0[k]!))).dataSync()[0]!;
      const scale = tf.max(tf.abs(g0[k]!)).dataSync()[0]!;
      assert.ok(scale > 0 && diff < 1e-3 * scale, `grad ${k}: diff ${diff} scale ${scale}`);
    }
  }
  tf.dispose([logA, dx, bs, cs, weights, ...g0, ...g1, ...g2]);
});

test('trains with the demo settings: loss falls, held-out behaviour R² ≥ 0.5, and save → load predicts the same', async () => {
  const data = generateSyntheticNeuralData({ nTrials: DEMO.nTrials, seed: 0 });
  const { train, heldOut } = splitTrials(data, { heldOutFraction: DEMO.heldOutFraction, seed: 0 });
  const model = createNeuroFMXMini({ nNeurons: data.nNeurons, nBins: data.nBins, behaviorDims: data.behaviorDims, seed: 0 });
  compileNeuroFMXMini(model, { learningRate: DEMO.learningRate });
  const fit = buildFitData(train, { maskFraction: DEMO.maskFraction, seed: 0 });
  const started = Date.now();
  const history = await model.fit(fit.inputs, fit.targets, { epochs: DEMO.epochs, batchSize: DEMO.batchSize, shuffle: true, verbose: 0 });
  const seconds = (Date.now() - started) / 1000;
  fit.dispose();
  const losses = history.history.loss as number[];
  assert.ok(losses.every(Number.isFinite));
  assert.ok(losses[losses.length - 1]! < 0.6 * losses[0]!, `loss ${losses[0]} → ${losses[losses.length - 1]}`);
  const { r2 } = await evaluateBehaviorR2(model, heldOut);
  console.log(`# NeuroFMX-mini: ${DEMO.epochs} epochs on ${train.nTrials} trials in ${seconds.toFixed(1)} s, held-out behaviour R² ${r2.toFixed(3)}`);
  assert.ok(r2 >= 0.5, `held-out behaviour R² ${r2}`);

  const where = path.join(dir, 'nfm');
  await model.save(fileSystem(where));
  assert.deepEqual((await readdir(where)).sort(), ['model.json', 'weights.bin']);
  const loaded = await loadNeuroFMXMini(path.join(where, 'model.json'));
  const x = toModelInput(heldOut);
  const a = model.predict(x) as tf.Tensor[];
  const b = loaded.predict(x) as tf.Tensor[];
  for (let k = 0; k < 2; k++) assert.deepEqual(await b[k]!.data(), await a[k]!.data());
  assert.deepEqual(loaded.layers.map((l) => l.name), model.layers.map((l) => l.name));
  tf.dispose([x, ...a, ...b]);
  loaded.dispose();
  model.dispose();
});

test('masked fit data hides whole neurons and keeps only their counts as targets', () => {
  const data = generateSyntheticNeuralData({ nTrials: 6, nNeurons: 10, nBins: 5, seed: 1 });
  const fit = buildFitData(data, { maskFraction: 0.3, seed: 2 });
  const x = fit.inputs.arraySync();
  const y = fit.targets.reconstruction_head.arraySync();
  for (let i = 0; i < 6; i++) {
    let hidden = 0;
    for (let j = 0; j < 10; j++) {
      const masked = fit.mask[i * 10 + j] === 1;
      hidden += masked ? 1 : 0;
      for (let s = 0; s < 5; s++) {
        const count = data.spikes[(i * 5 + s) * 10 + j]!;
        if (masked) {
          assert.equal(x[i]![s]![j], 0);
          assert.equal(y[i]![s]![j], count);
        } else {
          assert.equal(y[i]![s]![j], -1);
          assert.ok(Math.abs(x[i]![s]![j]! - count * 10 / 7) < 1e-5);
        }
      }
    }
    assert.equal(hidden, 3);
  }
  fit.dispose();
});
