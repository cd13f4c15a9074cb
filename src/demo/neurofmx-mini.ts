/**
 * NeuroFMX-mini: a small neural-population foundation model whose layer paths are the ones the
 * guide's defaults and auto-detection expect.
 *
 *   spikes [B,T,C]
 *     → tokenizer                 log1p, per-bin projection to D, learned position embedding  [B,T,D]
 *     → mamba_backbone.blocks.0…3 selective state-space blocks (nested model)                   [B,T,D]
 *     → perceiver                 M learned latents cross-attend to the time tokens              [B,M,D]
 *     → popt                      CLS token + self-attention over the latents, one per trial     [B,D]
 *     → behavior_head             per-bin readout of the backbone + trajectory readout of popt   [B,T,b]
 *   mamba_backbone → reconstruction_head   log firing rate of every neuron per bin             [B,T,C]
 *
 * Training: behaviour by MSE, reconstruction by a Poisson likelihood on masked neurons only
 * (neurons zeroed in the input; see buildFitData). Custom layers serialise once
 * registerNeuroFMXMiniLayers() has run (createNeuroFMXMini and loadNeuroFMXMini call it).
 */
import { tf } from '../backend.js';
import { ConfigError } from '../errors.js';
import { fileSystem } from '../model/file-handler.js';
import { createRng } from '../random.js';
import type { SyntheticNeuralData } from './synthetic.js';

type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;
type Shape = (number | null)[];
type Initializer = ReturnType<typeof tf.initializers.zeros>;
type ConfigDict = tf.serialization.ConfigDict;

const glorot = (seed: number): Initializer => tf.initializers.glorotUniform({ seed });
const normal = (stddev: number, seed: number): Initializer => tf.initializers.randomNormal({ mean: 0, stddev, seed });

/** x · g / rms(x) over the last axis: cheaper than LayerNorm (one mean, no centring). */
function rmsNorm(x: tf.Tensor, gain: tf.Tensor): tf.Tensor {
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, 1e-5))), gain);
}

const silu = (x: tf.Tensor): tf.Tensor => tf.mul(x, tf.sigmoid(x));

/**
 * a · b whose gradient uses explicit transposes: tfjs's own BatchMatMul gradient sets the
 * transpose flags, which are 8–17× slower on wasm (see PERFORMANCE.md). Local to these layers.
 */
export const matMulFast = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: (ts: tf.Tensor[]) => void) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as [tf.Tensor, tf.Tensor];
      const perm = (x: tf.Tensor) => (x.rank === 2 ? [1, 0] : [0, 2, 1]);
      // dy goes in as the right operand, so it must be a fresh tensor: the wasm matMul caches the
      // packed right operand by data id, and dy's data may already have served as a right operand
      // in another shape (gradients are shared through reshape/add), which gives wrong products.
      const dyFresh = tf.add(dy, 0);
      return [tf.matMul(dy as tf.Tensor3D, tf.transpose(sb, perm(sb)) as tf.Tensor3D), tf.matMul(tf.transpose(sa, perm(sa)) as tf.Tensor3D, dyFresh as tf.Tensor3D)];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;

/** Batched [b,m,k]·[b,k,n] (same batch on both sides), fast gradient. */
const matMul3 = (a: tf.Tensor3D, b: tf.Tensor3D): tf.Tensor3D => matMulFast(a, b) as tf.Tensor3D;

/** [..., in] · [in, out] + bias, keeping the leading dims; fast gradient. */
function dense(x: tf.Tensor, kernel: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
  const inDim = x.shape[x.rank - 1]!;
  const lead = x.shape.slice(0, -1);
  let y = matMulFast(tf.reshape(x, [-1, inDim]), kernel);
  if (bias) y = tf.add(y, bias);
  return tf.reshape(y, [...lead, kernel.shape[1]!]);
}

function lastDim(inputShape: Shape | Shape[]): number {
  const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as Shape;
  const d = s[s.length - 1];
  if (d == null) throw new ConfigError('NeuroFMX-mini layers need a known feature dimension');
  return d;
}

function single(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
  return Array.isArray(inputs) ? inputs[0]! : inputs;
}

// ---------------------------------------------------------------------------------------------

interface TokenizerArgs extends LayerArgs { units: number; nBins: number; seed?: number }

/** Per-bin projection of the population: log1p(counts) · W + b + position embedding. */
export class PopulationTokenizer extends tf.layers.Layer {
  static className = 'NeuroFMXPopulationTokenizer';
  readonly units: number;
  readonly nBins: number;
  readonly seed: number;
  private kernel!: tf.LayerVariable;
  private bias!: tf.LayerVariable;
  private position!: tf.LayerVariable;
  constructor(args: TokenizerArgs) {
    super(args);
    this.units = args.units;
    this.nBins = args.nBins;
    this.seed = args.seed ?? 0;
  }
  override build(inputShape: Shape | Shape[]): void {
    const c = lastDim(inputShape);
    this.kernel = this.addWeight('kernel', [c, this.units], 'float32', glorot(this.seed));
    this.bias = this.addWeight('bias', [this.units], 'float32', tf.initializers.zeros());
    this.position = this.addWeight('position', [this.nBins, this.units], 'float32', normal(0.5, this.seed + 1));
    this.built = true;
  }
  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    const s = inputShape as Shape;
    return [s[0]!, s[1]!, this.units];
  }
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = tf.log1p(tf.relu(single(inputs)));
      return tf.add(dense(x, this.kernel.read(), this.bias.read()), this.position.read());
    });
  }
  override getConfig(): ConfigDict {
    return { ...super.getConfig(), units: this.units, nBins: this.nBins, seed: this.seed };
  }
}

// ---------------------------------------------------------------------------------------------

interface SSMArgs extends LayerArgs { dInner: number; dState: number; chunkSize?: number; seed?: number }

/** Per-bin log-decay floor: bounds |L| within a chunk so exp(±L) stays finite in float32. */
const MIN_LOG_DECAY = -2;

/**
 * The selective scan of one block, for the whole sequence at once:
 *   h_t = exp(logA_t) ⊙ h_{t-1} + dx_t ⊗ B_t,   y_t = h_t · C_t      (h_t ∈ R^{E×N}, h_{-1} = 0)
 * with logA [b,t,E] (= Δ_t·a ≤ 0, floored at MIN_LOG_DECAY), dx [b,t,E] (= Δ_t·x_t), B, C [b,t,N].
 * Within a chunk of K bins the recurrence is unrolled in its equivalent matrix form,
 *   y_t = exp(L_t) Σ_{s≤t} (C_t·B_s) exp(−L_s) dx_s,   L = cumsum(logA),
 * i.e. one [K,K]·[K,E] product per trial: a handful of whole-tensor ops instead of two tiny ops
 * per bin (per-bin slicing costs ~0.5 ms an op on wasm). Chunks pass the state h on, so any
 * length works; the floor keeps |L| ≤ 2K, and exp(±64) is well inside float32.
 */
export function selectiveScan(logA: tf.Tensor3D, dx: tf.Tensor3D, bSel: tf.Tensor3D, cSel: tf.Tensor3D, chunkSize = 32): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, t, e] = logA.shape;
    const outs: tf.Tensor[] = [];
    let h: tf.Tensor | null = null; // [b,E,N] state carried between chunks
    const floored = tf.maximum(logA, MIN_LOG_DECAY) as tf.Tensor3D;
    for (let start = 0; start < t; start += chunkSize) {
      const k = Math.min(chunkSize, t - start);
      const cut = (x: tf.Tensor3D): tf.Tensor3D => (k === t ? x : tf.slice(x, [0, start, 0], [b, k, x.shape[2]]));
      const dxc = cut(dx), bc = cut(bSel), cc = cut(cSel);
      // Cumulative sum over time, taken along the last axis: tfjs's Cumsum gradient is wrong for
      // any other axis (it transposes its result), silently so when the shapes happen to match.
      const lc = tf.transpose(tf.cumsum(tf.transpose(cut(floored), [0, 2, 1]), 2), [0, 2, 1]) as tf.Tensor3D; // [b,k,E]
      const causal = tf.linalg.bandPart(tf.ones([k, k]), -1, 0);
      const mixing = tf.mul(matMul3(cc, tf.transpose(bc, [0, 2, 1]) as tf.Tensor3D), causal); // C_t·B_s for s ≤ t
      let y = tf.mul(tf.exp(lc), matMul3(mixing as tf.Tensor3D, tf.mul(tf.exp(tf.neg(lc)), dxc) as tf.Tensor3D));
      if (h !== null) {
        // The carried state decays by exp(L_t) and is read out through C_t.
        y = tf.add(y, tf.mul(tf.exp(lc), matMul3(cc, tf.transpose(h, [0, 2, 1]) as tf.Tensor3D)));
      }
      outs.push(y);
      if (start + k < t) {
        const last = tf.slice(lc, [0, k - 1, 0], [b, 1, e]); // L at the chunk's end, [b,1,E]
        const w = tf.mul(tf.exp(tf.sub(last, lc)), dxc); // [b,k,E]
        const fresh: tf.Tensor = matMul3(tf.transpose(w, [0, 2, 1]) as tf.Tensor3D, bc); // [b,E,N]
        h = h === null ? fresh : tf.add(tf.mul(tf.reshape(tf.exp(last), [b, e, 1]), h), fresh);
      }
    }
    return (outs.length === 1 ? outs[0]! : tf.concat(outs, 1)) as tf.Tensor3D;
  });
}

/**
 * A selective state-space block (Mamba-style, scalar decay per channel as in Mamba-2, without
 * the short convolution):
 *   x = silu(norm(u)·W_x),  z = norm(u)·W_z
 *   Δ = softplus(x·W_Δ + b_Δ) (input-dependent step),  B_t = x·W_B,  C_t = x·W_C
 *   h_t = exp(Δ_t a) ⊙ h_{t-1} + (Δ_t x_t) ⊗ B_t,  y_t = h_t·C_t + D ⊙ x_t   (a = −exp(A_log) < 0)
 *   out = u + (y ⊙ silu(z))·W_out
 * Separate projections instead of one split: a split along the feature axis is slow on wasm.
 */
export class SelectiveSSMBlock extends tf.layers.Layer {
  static className = 'NeuroFMXSelectiveSSM';
  readonly dInner: number;
  readonly dState: number;
  readonly chunkSize: number;
  readonly seed: number;
  private normGain!: tf.LayerVariable;
  private wX!: tf.LayerVariable;
  private wZ!: tf.LayerVariable;
  private wDt!: tf.LayerVariable;
  private dtBias!: tf.LayerVariable;
  private wB!: tf.LayerVariable;
  private wC!: tf.LayerVariable;
  private aLog!: tf.LayerVariable;
  private dSkip!: tf.LayerVariable;
  private outProj!: tf.LayerVariable;
  constructor(args: SSMArgs) {
    super(args);
    this.dInner = args.dInner;
    this.dState = args.dState;
    this.chunkSize = args.chunkSize ?? 32;
    this.seed = args.seed ?? 0;
  }
  override build(inputShape: Shape | Shape[]): void {
    const d = lastDim(inputShape);
    const e = this.dInner, n = this.dState, s = this.seed;
    this.normGain = this.addWeight('norm_gain', [d], 'float32', tf.initializers.ones());
    this.wX = this.addWeight('x_proj', [d, e], 'float32', glorot(s));
    this.wZ = this.addWeight('z_proj', [d, e], 'float32', glorot(s + 1));
    this.wDt = this.addWeight('dt_proj', [e, e], 'float32', normal(0.1 / Math.sqrt(e), s + 2));
    this.dtBias = this.addWeight('dt_bias', [e], 'float32', tf.initializers.zeros());
    this.wB = this.addWeight('B_proj', [e, n], 'float32', glorot(s + 3));
    this.wC = this.addWeight('C_proj', [e, n], 'float32', glorot(s + 4));
    this.aLog = this.addWeight('A_log', [e], 'float32', tf.initializers.zeros());
    this.dSkip = this.addWeight('D', [e], 'float32', tf.initializers.ones());
    this.outProj = this.addWeight('out_proj', [e, d], 'float32', normal(0.5 / Math.sqrt(e), s + 5));
    // Structured start: decay rates a log-spaced in [0.5, 4], step sizes log-spaced in
    // [0.02, 0.5] (reversed), so channels start with memories from about one bin to ~100 bins.
    const logSpace = (lo: number, hi: number, i: number) => Math.exp(Math.log(lo) + (Math.log(hi / lo) * i) / Math.max(1, e - 1));
    const dt = Float32Array.from({ length: e }, (_, i) => logSpace(0.02, 0.5, i));
    const rate = Float32Array.from({ length: e }, (_, i) => logSpace(0.5, 4, e - 1 - i));
    tf.tidy(() => {
      this.dtBias.write(tf.tensor1d(dt.map((v) => Math.log(Math.expm1(v)))));
      this.aLog.write(tf.tensor1d(rate.map((v) => Math.log(v))));
    });
    this.built = true;
  }
  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    return inputShape as Shape;
  }
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const u = single(inputs);
      const [b, t, d] = u.shape as [number, number, number];
      const e = this.dInner, n = this.dState;
      const un = rmsNorm(tf.reshape(u, [b * t, d]), this.normGain.read());
      const x = silu(dense(un, this.wX.read()));
      const z = dense(un, this.wZ.read());
      const dt = tf.softplus(dense(x, this.wDt.read(), this.dtBias.read())); // [bt,E]
      const a = tf.neg(tf.exp(this.aLog.read())); // [E], negative: a stable recurrence
      const to3 = (v: tf.Tensor, w: number) => tf.reshape(v, [b, t, w]) as tf.Tensor3D;
      const y = selectiveScan(
        to3(tf.mul(dt, a), e), to3(tf.mul(dt, x), e),
        to3(dense(x, this.wB.read()), n), to3(dense(x, this.wC.read()), n), this.chunkSize,
      );
      const gated = tf.mul(tf.add(tf.reshape(y, [b * t, e]), tf.mul(x, this.dSkip.read())), silu(z));
      return tf.add(u, tf.reshape(dense(gated, this.outProj.read()), [b, t, d]));
    });
  }
  override getConfig(): ConfigDict {
    return { ...super.getConfig(), dInner: this.dInner, dState: this.dState, chunkSize: this.chunkSize, seed: this.seed };
  }
}

// ---------------------------------------------------------------------------------------------

/** Weights of one pre-norm attention + feed-forward block, shared by perceiver and popt. */
interface AttnWeights {
  gAttn: tf.LayerVariable; gKv?: tf.LayerVariable; wq: tf.LayerVariable; wk: tf.LayerVariable; wv: tf.LayerVariable; wo: tf.LayerVariable;
  gFfn: tf.LayerVariable; w1: tf.LayerVariable; b1: tf.LayerVariable; w2: tf.LayerVariable;
}

function addAttnWeights(layer: tf.layers.Layer, prefix: string, d: number, seed: number, crossKv: boolean): AttnWeights {
  // addWeight is protected; these helpers are called from inside the layers' build().
  const add = (name: string, shape: number[], init: Initializer) =>
    (layer as unknown as { addWeight(n: string, s: number[], t: 'float32', i: Initializer): tf.LayerVariable }).addWeight(`${prefix}${name}`, shape, 'float32', init);
  const w: AttnWeights = {
    gAttn: add('attn_norm', [d], tf.initializers.ones()),
    wq: add('wq', [d, d], glorot(seed)),
    wk: add('wk', [d, d], glorot(seed + 1)),
    wv: add('wv', [d, d], glorot(seed + 2)),
    wo: add('wo', [d, d], glorot(seed + 3)),
    gFfn: add('ffn_norm', [d], tf.initializers.ones()),
    w1: add('ffn_w1', [d, 2 * d], glorot(seed + 4)),
    b1: add('ffn_b1', [2 * d], tf.initializers.zeros()),
    w2: add('ffn_w2', [2 * d, d], normal(0.5 / Math.sqrt(2 * d), seed + 5)),
  };
  if (crossKv) w.gKv = add('kv_norm', [d], tf.initializers.ones());
  return w;
}

/** softmax(q · kᵀ / √d) · v with explicit transposes (the transposed-flag matMul is slow on wasm). */
function attend(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D): tf.Tensor3D {
  const scores = tf.mul(matMul3(q, tf.transpose(k, [0, 2, 1]) as tf.Tensor3D), 1 / Math.sqrt(q.shape[2]));
  return matMul3(tf.softmax(scores) as tf.Tensor3D, v);
}

function feedForward(x: tf.Tensor, w: AttnWeights): tf.Tensor {
  const hidden = tf.relu(dense(rmsNorm(x, w.gFfn.read()), w.w1.read(), w.b1.read()));
  return tf.add(x, dense(hidden, w.w2.read()));
}

interface PerceiverArgs extends LayerArgs { nLatents: number; seed?: number }

/** Cross-attention from M learned latent queries to the time tokens, then a feed-forward block. */
export class PerceiverCrossAttention extends tf.layers.Layer {
  static className = 'NeuroFMXPerceiver';
  readonly nLatents: number;
  readonly seed: number;
  private latents!: tf.LayerVariable;
  private w!: AttnWeights;
  constructor(args: PerceiverArgs) {
    super(args);
    this.nLatents = args.nLatents;
    this.seed = args.seed ?? 0;
  }
  override build(inputShape: Shape | Shape[]): void {
    const d = lastDim(inputShape);
    this.latents = this.addWeight('latents', [this.nLatents, d], 'float32', normal(1, this.seed));
    this.w = addAttnWeights(this, '', d, this.seed + 1, true);
    this.built = true;
  }
  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    const s = inputShape as Shape;
    return [s[0]!, this.nLatents, s[s.length - 1]!];
  }
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const tokens = single(inputs);
      const b = tokens.shape[0]!, d = tokens.shape[2]!, m = this.nLatents;
      const w = this.w;
      const kv = rmsNorm(tokens, w.gKv!.read());
      const lat = this.latents.read();
      const q = tf.tile(tf.reshape(dense(rmsNorm(lat, w.gAttn.read()), w.wq.read()), [1, m, d]), [b, 1, 1]) as tf.Tensor3D;
      const o = attend(q, dense(kv, w.wk.read()) as tf.Tensor3D, dense(kv, w.wv.read()) as tf.Tensor3D);
      // The latents are only queries: no residual from them, so the output is all trial content.
      return feedForward(dense(o, w.wo.read()), w);
    });
  }
  override getConfig(): ConfigDict {
    return { ...super.getConfig(), nLatents: this.nLatents, seed: this.seed };
  }
}

interface PopTArgs extends LayerArgs { nLayers: number; seed?: number }

/**
 * Population-transformer-style aggregator: a learned CLS token joins the perceiver latents,
 * nLayers of self-attention mix them, and the normalised CLS token is the trial embedding [B,D].
 */
export class PopTAggregator extends tf.layers.Layer {
  static className = 'NeuroFMXPopT';
  readonly nLayers: number;
  readonly seed: number;
  private cls!: tf.LayerVariable;
  private outGain!: tf.LayerVariable;
  private blocks: AttnWeights[] = [];
  constructor(args: PopTArgs) {
    super(args);
    this.nLayers = args.nLayers;
    this.seed = args.seed ?? 0;
  }
  override build(inputShape: Shape | Shape[]): void {
    const d = lastDim(inputShape);
    this.cls = this.addWeight('cls', [1, 1, d], 'float32', normal(0.02, this.seed)); // small: the trial's tokens, not the constant, dominate at start
    this.blocks = Array.from({ length: this.nLayers }, (_, i) => addAttnWeights(this, `l${i}_`, d, this.seed + 10 * (i + 1), false));
    this.outGain = this.addWeight('out_norm', [d], 'float32', tf.initializers.ones());
    this.built = true;
  }
  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    const s = inputShape as Shape;
    return [s[0]!, s[s.length - 1]!];
  }
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const lat = single(inputs);
      const b = lat.shape[0]!, d = lat.shape[2]!;
      let x: tf.Tensor = tf.concat([tf.tile(this.cls.read(), [b, 1, 1]), lat], 1);
      for (const w of this.blocks) {
        const n = rmsNorm(x, w.gAttn.read());
        const o = attend(dense(n, w.wq.read()) as tf.Tensor3D, dense(n, w.wk.read()) as tf.Tensor3D, dense(n, w.wv.read()) as tf.Tensor3D);
        x = feedForward(tf.add(x, dense(o, w.wo.read())), w);
      }
      const clsOut = tf.reshape(tf.slice(x, [0, 0, 0], [b, 1, d]), [b, d]);
      return rmsNorm(clsOut, this.outGain.read());
    });
  }
  override getConfig(): ConfigDict {
    return { ...super.getConfig(), nLayers: this.nLayers, seed: this.seed };
  }
}

interface ReadoutArgs extends LayerArgs { nBins: number; outDims: number; perBin?: boolean; seed?: number }

/**
 * Behaviour decoder with two inputs, [tokens [B,T,D], trial embedding [B,D]] → [B,T,b]:
 *   y_t = (embedding · W_traj)_t + c_t            (default: the trial embedding alone)
 *   y_t = tokens_t · W_bin + (embedding · W_traj)_t + c_t   (perBin)
 * Reading the whole trajectory from the popt embedding makes popt carry the trial's latent
 * dynamics (as NeuroFMX's decoders read its aggregator); with a per-bin path from the backbone the
 * model decodes slightly better but leaves popt nearly unused.
 */
export class BehaviorReadout extends tf.layers.Layer {
  static className = 'NeuroFMXBehaviorReadout';
  readonly nBins: number;
  readonly outDims: number;
  readonly perBin: boolean;
  readonly seed: number;
  private binKernel: tf.LayerVariable | null = null;
  private trajKernel!: tf.LayerVariable;
  private bias!: tf.LayerVariable;
  constructor(args: ReadoutArgs) {
    super(args);
    this.nBins = args.nBins;
    this.outDims = args.outDims;
    this.perBin = args.perBin ?? false;
    this.seed = args.seed ?? 0;
  }
  override build(inputShape: Shape | Shape[]): void {
    const [tokShape, embShape] = inputShape as Shape[];
    const dTok = lastDim(tokShape!), dEmb = lastDim(embShape!);
    const k = this.nBins * this.outDims;
    if (this.perBin) this.binKernel = this.addWeight('bin_kernel', [dTok, this.outDims], 'float32', glorot(this.seed));
    this.trajKernel = this.addWeight('traj_kernel', [dEmb, k], 'float32', glorot(this.seed + 1));
    this.bias = this.addWeight('bias', [k], 'float32', tf.initializers.zeros());
    this.built = true;
  }
  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    return [(inputShape as Shape[])[0]![0]!, this.nBins, this.outDims];
  }
  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const [tokens, emb] = inputs as tf.Tensor[];
      const b = emb!.shape[0]!;
      const traj = tf.reshape(dense(emb!, this.trajKernel.read(), this.bias.read()), [b, this.nBins, this.outDims]);
      return this.binKernel ? tf.add(dense(tokens!, this.binKernel.read()), traj) : traj;
    });
  }
  override getConfig(): ConfigDict {
    return { ...super.getConfig(), nBins: this.nBins, outDims: this.outDims, perBin: this.perBin, seed: this.seed };
  }
}

// ---------------------------------------------------------------------------------------------

const CUSTOM_LAYERS = [PopulationTokenizer, SelectiveSSMBlock, PerceiverCrossAttention, PopTAggregator, BehaviorReadout];
let registered = false;

/** Registers the custom layers with tfjs serialisation (idempotent). Needed before loading a saved model. */
export function registerNeuroFMXMiniLayers(): void {
  if (registered) return;
  for (const cls of CUSTOM_LAYERS) tf.serialization.registerClass(cls);
  registered = true;
}

export interface NeuroFMXMiniOptions {
  /** Neurons per bin C (input width). @default 64 */
  nNeurons?: number;
  /** Time bins T per trial. @default 32 */
  nBins?: number;
  /** Behaviour dimensions decoded per bin. @default 2 */
  behaviorDims?: number;
  /** Width D of tokens, latents and the trial embedding. @default 32 */
  dModel?: number;
  /** Channels E inside each state-space block. @default 32 */
  dInner?: number;
  /** State size N per channel. @default 8 */
  dState?: number;
  /** Number of state-space blocks (`mamba_backbone.blocks.0` … `blocks.{n-1}`). @default 4 */
  nBlocks?: number;
  /** Learned perceiver latents M. @default 8 */
  nPerceiverLatents?: number;
  /** Self-attention layers in `popt`. @default 2 */
  nPoptLayers?: number;
  /** Add a per-bin readout of the backbone to the behaviour head (popt then carries little). @default false */
  behaviorPerBin?: boolean;
  /** Seed of the weight initialisation. @default 0 */
  seed?: number;
}

/** The layer paths of a default NeuroFMX-mini, in forward order. */
export const NEUROFMX_MINI_LAYER_PATHS = [
  'tokenizer',
  'mamba_backbone.blocks.0',
  'mamba_backbone.blocks.1',
  'mamba_backbone.blocks.2',
  'mamba_backbone.blocks.3',
  'perceiver',
  'popt',
  'behavior_head',
  'reconstruction_head',
] as const;

/**
 * Settings the demo trains with. Measured on this project's 2-core machine (wasm, one core):
 * about 1.5 s an epoch for 320 training trials, held-out behaviour R² ≈ 0.9 after 8–10 epochs.
 */
export const NEUROFMX_MINI_DEMO_DEFAULTS = {
  nTrials: 400,
  heldOutFraction: 0.2,
  epochs: 10,
  batchSize: 16,
  learningRate: 3e-3,
  maskFraction: 0.2,
} as const;

function optInt(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new ConfigError(`Expected \`${name}\` to be an integer >= ${min}, got \`${String(value)}\``);
  return value;
}

/** Builds an untrained NeuroFMX-mini. Call `await initBackend()` first. */
export function createNeuroFMXMini(options: NeuroFMXMiniOptions = {}): tf.LayersModel {
  registerNeuroFMXMiniLayers();
  const c = optInt('nNeurons', options.nNeurons ?? 64, 1);
  const t = optInt('nBins', options.nBins ?? 32, 1);
  const bDims = optInt('behaviorDims', options.behaviorDims ?? 2, 1);
  const d = optInt('dModel', options.dModel ?? 32, 2);
  const e = optInt('dInner', options.dInner ?? d, 1);
  const n = optInt('dState', options.dState ?? 8, 1);
  const nBlocks = optInt('nBlocks', options.nBlocks ?? 4, 1);
  const m = optInt('nPerceiverLatents', options.nPerceiverLatents ?? 8, 1);
  const nPopt = optInt('nPoptLayers', options.nPoptLayers ?? 2, 1);
  const seed = optInt('seed', options.seed ?? 0, 0);

  const bbIn = tf.input({ shape: [t, d], name: 'mamba_backbone_input' });
  let h = bbIn;
  for (let i = 0; i < nBlocks; i++) {
    h = new SelectiveSSMBlock({ name: `blocks.${i}`, dInner: e, dState: n, seed: seed + 100 * (i + 1) }).apply(h) as tf.SymbolicTensor;
  }
  const backbone = tf.model({ inputs: bbIn, outputs: h, name: 'mamba_backbone' });

  const spikes = tf.input({ shape: [t, c], name: 'spikes' });
  const tokens = new PopulationTokenizer({ name: 'tokenizer', units: d, nBins: t, seed: seed + 1 }).apply(spikes) as tf.SymbolicTensor;
  const hidden = backbone.apply(tokens) as tf.SymbolicTensor;
  const latents = new PerceiverCrossAttention({ name: 'perceiver', nLatents: m, seed: seed + 1000 }).apply(hidden) as tf.SymbolicTensor;
  const embedding = new PopTAggregator({ name: 'popt', nLayers: nPopt, seed: seed + 2000 }).apply(latents) as tf.SymbolicTensor;
  const behavior = new BehaviorReadout({ name: 'behavior_head', nBins: t, outDims: bDims, perBin: options.behaviorPerBin ?? false, seed: seed + 3000 }).apply([hidden, embedding]) as tf.SymbolicTensor;
  const recon = tf.layers.dense({
    name: 'reconstruction_head', units: c, kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 4000 }),
  }).apply(hidden) as tf.SymbolicTensor;
  return tf.model({ inputs: spikes, outputs: [behavior, recon], name: 'neurofmx_mini' });
}

/**
 * Poisson negative log-likelihood of log-rates `yPred` on the entries where `yTrue >= 0`
 * (masked neurons); entries of -1 are ignored. Returns one value per trial.
 */
export function maskedPoissonLoss(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const mask = tf.cast(tf.greaterEqual(yTrue, 0), 'float32');
    const counts = tf.relu(yTrue);
    const logRate = tf.clipByValue(yPred, -10, 8); // keeps exp() finite early in training
    const nll = tf.mul(tf.sub(tf.exp(logRate), tf.mul(counts, logRate)), mask);
    const axes = Array.from({ length: yTrue.rank - 1 }, (_, i) => i + 1);
    return tf.div(tf.sum(nll, axes), tf.maximum(tf.sum(mask, axes), 1));
  });
}

/**
 * Mean squared error, one value per trial. Both losses must reduce to [B]: tfjs adds the
 * unreduced per-output losses before averaging, so a [B,T] and a [B] loss would not broadcast.
 */
export function meanSquaredErrorLoss(yTrue: tf.Tensor, yPred: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const axes = Array.from({ length: yTrue.rank - 1 }, (_, i) => i + 1);
    return tf.mean(tf.squaredDifference(yTrue, yPred), axes);
  });
}

export interface CompileOptions {
  /** Adam learning rate. @default 3e-3 */
  learningRate?: number;
  /** Weight of the behaviour MSE. @default 1 */
  behaviorWeight?: number;
  /** Weight of the masked Poisson reconstruction loss. @default 0.5 */
  reconstructionWeight?: number;
}

/**
 * Compiles with Adam, MSE on behaviour and a masked Poisson likelihood on reconstruction. tfjs
 * has no `lossWeights`, so the weights scale the loss functions themselves (the logged
 * `behavior_head_loss` / `reconstruction_head_loss` are the weighted terms).
 */
export function compileNeuroFMXMini(model: tf.LayersModel, options: CompileOptions = {}): void {
  const lr = options.learningRate ?? NEUROFMX_MINI_DEMO_DEFAULTS.learningRate;
  if (!(lr > 0 && Number.isFinite(lr))) throw new ConfigError(`Expected \`learningRate\` to be a finite number > 0, got \`${String(lr)}\``);
  const weight = (name: string, v: number): number => {
    if (!(v >= 0 && Number.isFinite(v))) throw new ConfigError(`Expected \`${name}\` to be a finite number >= 0, got \`${String(v)}\``);
    return v;
  };
  const wb = weight('behaviorWeight', options.behaviorWeight ?? 1);
  const wr = weight('reconstructionWeight', options.reconstructionWeight ?? 0.5);
  const scaled = (fn: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, w: number) =>
    w === 1 ? fn : (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.mul(fn(a, b), w));
  model.compile({
    optimizer: tf.train.adam(lr),
    loss: { behavior_head: scaled(meanSquaredErrorLoss, wb), reconstruction_head: scaled(maskedPoissonLoss, wr) },
  });
}

/** Spike counts as the model's input tensor [N,T,C] (no masking). */
export function toModelInput(data: SyntheticNeuralData): tf.Tensor3D {
  return tf.tensor3d(data.spikes, data.shapes.spikes);
}

export interface FitData {
  /** Spike counts with the masked neurons zeroed and the others scaled by C/(C-k), [N,T,C]. */
  inputs: tf.Tensor3D;
  /** Targets by output name: behaviour [N,T,b]; counts of masked neurons and -1 elsewhere [N,T,C]. */
  targets: { behavior_head: tf.Tensor3D; reconstruction_head: tf.Tensor3D };
  /** 1 where a neuron of a trial was masked, [N,C]. */
  mask: Uint8Array;
  dispose(): void;
}

export interface FitDataOptions {
  /** Fraction of neurons hidden per trial (whole neuron, every bin). @default 0.2 */
  maskFraction?: number;
  /** Seed of the mask. @default 0 */
  seed?: number;
}

/**
 * Inputs and targets for `model.fit(inputs, targets)`: per trial a random set of neurons is
 * zeroed in the input, and the reconstruction target keeps only their counts (others -1).
 */
export function buildFitData(data: SyntheticNeuralData, options: FitDataOptions = {}): FitData {
  const frac = options.maskFraction ?? NEUROFMX_MINI_DEMO_DEFAULTS.maskFraction;
  if (!(frac >= 0 && frac < 1)) throw new ConfigError(`Expected \`maskFraction\` to be a number in [0, 1), got \`${String(frac)}\``);
  const { nTrials: nTr, nBins: t, nNeurons: c } = data;
  const rng = createRng((options.seed ?? 0) ^ 0x3a5c);
  const k = Math.round(frac * c);
  const mask = new Uint8Array(nTr * c);
  const order = Array.from({ length: c }, (_, i) => i);
  for (let i = 0; i < nTr; i++) {
    rng.shuffle(order);
    for (let j = 0; j < k; j++) mask[i * c + order[j]!] = 1;
  }
  // Visible neurons are scaled up by C/(C-k), as in inverted dropout, so the summed input drive
  // matches that of unmasked data at evaluation time.
  const scale = k > 0 ? c / (c - k) : 1;
  const x = new Float32Array(data.spikes.length);
  const y = new Float32Array(data.spikes.length).fill(-1);
  for (let i = 0; i < nTr; i++) {
    for (let s = 0; s < t; s++) {
      const off = (i * t + s) * c;
      for (let j = 0; j < c; j++) {
        const v = data.spikes[off + j]!;
        if (mask[i * c + j]) y[off + j] = v;
        else x[off + j] = v * scale;
      }
    }
  }
  const inputs = tf.tensor3d(x, data.shapes.spikes);
  const targets = {
    behavior_head: tf.tensor3d(data.behavior, data.shapes.behavior),
    reconstruction_head: tf.tensor3d(y, data.shapes.spikes),
  };
  return {
    inputs, targets, mask,
    dispose: () => tf.dispose([inputs, targets.behavior_head, targets.reconstruction_head]),
  };
}

/** Coefficient of determination per output dimension; `r2` is their mean. */
export function rSquared(yTrue: Float32Array, yPred: Float32Array, dims: number): { r2: number; perDim: number[] } {
  const rows = yTrue.length / dims;
  const perDim: number[] = [];
  for (let k = 0; k < dims; k++) {
    let mean = 0;
    for (let r = 0; r < rows; r++) mean += yTrue[r * dims + k]!;
    mean /= rows;
    let ssRes = 0, ssTot = 0;
    for (let r = 0; r < rows; r++) {
      ssRes += (yTrue[r * dims + k]! - yPred[r * dims + k]!) ** 2;
      ssTot += (yTrue[r * dims + k]! - mean) ** 2;
    }
    perDim.push(ssTot > 0 ? 1 - ssRes / ssTot : 0);
  }
  return { r2: perDim.reduce((a, b) => a + b, 0) / dims, perDim };
}

/** Behaviour decoding R² of the model on the given (e.g. held-out) trials, inputs unmasked. */
export async function evaluateBehaviorR2(model: tf.LayersModel, data: SyntheticNeuralData, batchSize = 64): Promise<{ r2: number; perDim: number[] }> {
  const x = toModelInput(data);
  try {
    const out = model.predict(x, { batchSize }) as tf.Tensor[];
    const pred = (await out[0]!.data()) as Float32Array;
    tf.dispose(out);
    return rSquared(data.behavior, pred, data.behaviorDims);
  } finally {
    x.dispose();
  }
}

/** Loads a saved NeuroFMX-mini from a directory or model.json path (or any tfjs IOHandler/URL). */
export async function loadNeuroFMXMini(source: string | tf.io.IOHandler): Promise<tf.LayersModel> {
  registerNeuroFMXMiniLayers();
  const handler = typeof source === 'string' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(source) ? fileSystem(source) : source;
  return tf.loadLayersModel(handler);
}

/** The model registry's entry point (registerLayerModule): makes NeuroFMX-mini's layers loadable, also in worker threads. */
export const registerLayers = registerNeuroFMXMiniLayers;

/** The model registry's hook for a loaded model: a NeuroFMX-mini gets its training losses back (tfjs cannot serialise them). */
export function prepareModel(model: tf.LayersModel): void {
  const names = new Set(model.layers.map((l) => l.name));
  if (NEUROFMX_MINI_LAYER_PATHS.every((p) => names.has(p.split('.')[0]!)) && !(model.lossFunctions?.length > 0)) compileNeuroFMXMini(model);
}
