/**
 * Where each cached sample came from, kept slot by slot beside the sampler's cache so a reservoir
 * replacement replaces its provenance too: the step (as a sequence number resolved to global
 * step, epoch and batch when the step is reported), the row within its batch, and optionally the
 * sample's model inputs, targets and id.
 *
 * Inputs, targets and ids of a forward pass may arrive before or after a layer keeps samples of
 * it (a multi-input model runs some layers before its second input is consumed; fit's targets
 * reach only the loss, after every layer ran). So each layer's kept slots of the current pass
 * are remembered as "events" and filled whenever the data arrives; a value arriving for a key the
 * pass already has starts a new pass.
 */
import { tf } from '../backend.js';
import type { DType, RawTensor } from '../formats/dtypes.js';
import type { Logger } from '../logger.js';
import type { AuxBlock } from '../storage/shard-writer.js';
import { PROVENANCE_WIDTH } from '../storage/provenance.js';

export interface StepInfo {
  step: number;
  epoch: number;
  batch: number;
}

type DataKind = 'inputs' | 'targets' | 'ids';
type Values = Float32Array | Int32Array | Float64Array;

/** A batch value read to the CPU once: `[B, ...]`. */
interface BatchValue {
  dtype: DType;
  shape: number[];
  values: Values | null;
  tensor: tf.Tensor | null;
  /** What was offered (a repeat of the same object is not a new pass). */
  source: unknown;
  explicit: boolean;
}

/** Per-sample values of one key of one layer, slot by slot. */
interface SlotValues {
  dtype: DType;
  sampleShape: number[];
  size: number;
  data: Values;
  /** 1 where the slot's value belongs to the sample in that slot. */
  filled: Uint8Array;
}

interface LayerOrigins {
  seq: Int32Array;
  row: Int32Array;
  extras: Map<string, SlotValues>;
}

interface Event {
  layer: string;
  slots: Int32Array;
  batchSize: number;
}

/** Most layer events one pass keeps waiting for data (a pass is one step's forward pass). */
const MAX_EVENTS = 4096;

function dtypeOf(t: tf.Tensor): DType {
  return t.dtype === 'float32' ? 'F32' : 'I32';
}

function readValues(t: tf.Tensor): Values {
  const v = t.dataSync();
  if (t.dtype === 'float32') return v instanceof Float32Array ? v.slice() : Float32Array.from(v as ArrayLike<number>);
  return Int32Array.from(v as ArrayLike<number>);
}

function grow<T extends Values | Uint8Array>(a: T, need: number, cap: number): T {
  if (a.length >= need) return a;
  const n = Math.min(cap, Math.max(need, 2 * a.length, 64));
  const out = new (a.constructor as new (n: number) => T)(n);
  out.set(a as never);
  return out;
}

const keyOf = (kind: DataKind, name: string): string => `${kind}\u0000${name}`;

export class CaptureOrigins {
  /** Sequence number of the step in progress. */
  private seq = 0;
  private steps = new Map<number, StepInfo>();
  private layers = new Map<string, LayerOrigins>();
  private events: Event[] = [];
  private pass = new Map<string, BatchValue>();
  private warned = new Set<string>();
  private idsSeen = false;

  constructor(
    private readonly capacity: number,
    private readonly logger: Logger,
    /** Which per-sample values are kept at all. */
    readonly keep: { inputs: boolean; targets: boolean },
  ) {}

  /** The step in progress is known now (fit's onBatchBegin, or a loop that says so first). */
  beginStep(info: StepInfo): void {
    this.steps.set(this.seq, info);
  }

  /** The step in progress ended: rows captured since the last step belong to it. */
  endStep(info: StepInfo): void {
    if (!this.steps.has(this.seq)) this.steps.set(this.seq, info);
    this.seq++;
    this.newPass(false);
  }

  /** Records which batch rows a layer kept in which slots. */
  assign(layer: string, slots: Int32Array): void {
    const o = this.originsOf(layer);
    let max = -1;
    for (const s of slots) if (s > max) max = s;
    o.seq = grow(o.seq, max + 1, this.capacity);
    o.row = grow(o.row, max + 1, this.capacity);
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i]!;
      if (s < 0) continue;
      o.seq[s] = this.seq;
      o.row[s] = i;
      for (const v of o.extras.values()) if (s < v.filled.length) v.filled[s] = 0;
    }
    if (!this.wantsData()) return;
    const event = { layer, slots, batchSize: slots.length };
    if (this.events.length >= MAX_EVENTS) this.events.shift();
    this.events.push(event);
    for (const [key, value] of this.pass) this.fill(event, key, value);
  }

  /**
   * A batch value of the current pass: a model input (by input name), a target (by output name)
   * or the per-sample ids. A different value for a key the pass already holds starts a new pass;
   * `explicit` values (given by the loop for its step) hold until the step ends and are not
   * replaced by what the hooks see.
   */
  offer(kind: DataKind, name: string, value: tf.Tensor | ArrayLike<number>, explicit = false): void {
    if (kind === 'inputs' && !this.keep.inputs) return;
    if (kind === 'targets' && !this.keep.targets) return;
    if (kind === 'ids') this.idsSeen = true;
    const key = keyOf(kind, name);
    const held = this.pass.get(key);
    if (held) {
      if (held.source === value || (held.explicit && !explicit)) return;
      this.newPass();
    }
    let v: BatchValue;
    if (value instanceof tf.Tensor) {
      if (value.rank < 1 || value.isDisposed) return;
      v = { dtype: dtypeOf(value), shape: value.shape.slice(), values: null, tensor: value, source: value, explicit };
    } else {
      const values = Float64Array.from(value);
      v = { dtype: 'F64', shape: [values.length], values, tensor: null, source: value, explicit };
    }
    this.pass.set(key, v);
    for (const e of this.events) this.fill(e, key, v);
  }

  /** True while samples of the current pass wait for their data (fit's targets come after the layers). */
  get waiting(): boolean {
    return this.events.length > 0;
  }

  /** Events are kept only when some per-sample value may come to fill them. */
  private wantsData(): boolean {
    return this.keep.inputs || this.keep.targets || this.idsSeen;
  }

  /** A new forward pass: samples kept so far no longer wait; values the loop gave for its step stay. */
  private newPass(keepExplicit = true): void {
    this.events = [];
    const kept = new Map<string, BatchValue>();
    if (keepExplicit) for (const [k, v] of this.pass) if (v.explicit) kept.set(k, v);
    this.pass = kept;
  }

  private originsOf(layer: string): LayerOrigins {
    let o = this.layers.get(layer);
    if (!o) this.layers.set(layer, (o = { seq: new Int32Array(0), row: new Int32Array(0), extras: new Map() }));
    return o;
  }

  private fill(e: Event, key: string, v: BatchValue): void {
    if (v.shape[0] !== e.batchSize) {
      this.warnOnce(`${e.layer}|${key}`, `\`${e.layer}\` kept samples of a batch of ${e.batchSize}, but ${key.replace('\u0000', ' `')}\` has ${v.shape[0]} rows; it is not stored for them`);
      return;
    }
    if (!v.values) {
      if (!v.tensor || v.tensor.isDisposed) return;
      v.values = readValues(v.tensor);
      v.tensor = null;
    }
    const o = this.originsOf(e.layer);
    const sampleShape = v.shape.slice(1);
    let size = 1;
    for (const d of sampleShape) size *= d;
    let slotValues = o.extras.get(key);
    if (slotValues && (slotValues.size !== size || slotValues.dtype !== v.dtype)) {
      this.warnOnce(`${e.layer}|${key}|shape`, `${key.replace('\u0000', ' `')}\` changed shape or type; earlier samples of \`${e.layer}\` lose it`);
      slotValues = undefined;
    }
    if (!slotValues) {
      const empty = v.dtype === 'F32' ? new Float32Array(0) : v.dtype === 'F64' ? new Float64Array(0) : new Int32Array(0);
      slotValues = { dtype: v.dtype, sampleShape, size, data: empty, filled: new Uint8Array(0) };
      o.extras.set(key, slotValues);
    }
    let max = -1;
    for (const s of e.slots) if (s > max) max = s;
    slotValues.data = grow(slotValues.data, (max + 1) * size, this.capacity * size);
    slotValues.filled = grow(slotValues.filled, max + 1, this.capacity);
    for (let i = 0; i < e.slots.length; i++) {
      const s = e.slots[i]!;
      if (s < 0 || o.seq[s] !== this.seq) continue;
      slotValues.data.set(v.values.subarray(i * size, (i + 1) * size), s * size);
      slotValues.filled[s] = 1;
    }
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.logger.warn(message);
  }

  /**
   * The aux tensors of a layer's first `count` samples: provenance per analysis row
   * (`rowsPerSample` rows per sample), and every per-sample value all of those samples have.
   */
  auxFor(layer: string, count: number, rowsPerSample: number, provenance: boolean): AuxBlock[] {
    const o = this.layers.get(layer);
    if (!o || count === 0 || o.seq.length < count) return [];
    const out: AuxBlock[] = [];
    if (provenance) {
      const table = new Int32Array(count * rowsPerSample * PROVENANCE_WIDTH);
      const unknown: StepInfo = { step: -1, epoch: -1, batch: -1 };
      for (let s = 0; s < count; s++) {
        const info = this.steps.get(o.seq[s]!) ?? unknown;
        for (let p = 0; p < rowsPerSample; p++) {
          const at = (s * rowsPerSample + p) * PROVENANCE_WIDTH;
          table[at] = info.step;
          table[at + 1] = info.epoch;
          table[at + 2] = info.batch;
          table[at + 3] = o.row[s]!;
          table[at + 4] = p;
        }
      }
      out.push({ ref: { kind: 'provenance', layer }, tensor: rawOf('I32', [count * rowsPerSample, PROVENANCE_WIDTH], table) });
    }
    for (const [key, v] of o.extras) {
      const [kind, name] = key.split('\u0000') as [DataKind, string];
      let complete = v.filled.length >= count;
      for (let s = 0; complete && s < count; s++) if (!v.filled[s]) complete = false;
      if (!complete) {
        this.warnOnce(`${layer}|${key}|partial`, `Some samples of \`${layer}\` have no ${kind === 'ids' ? 'id' : `${kind.slice(0, -1)} \`${name}\``} (it did not reach the hooks in their pass); the shard leaves it out`);
        continue;
      }
      const data = v.data.subarray(0, count * v.size);
      const shape = [count, ...v.sampleShape];
      if (kind === 'ids') out.push({ ref: { kind, layer }, tensor: idsTensor(data, shape) });
      else out.push({ ref: { kind, layer, name }, tensor: rawOf(v.dtype, shape, data) });
    }
    return out;
  }

  /** Forgets every slot (a new sampling interval); the step in progress stays known. */
  reset(): void {
    this.layers.clear();
    this.newPass(false);
    const current = this.steps.get(this.seq);
    this.steps.clear();
    if (current) this.steps.set(this.seq, current);
  }
}

function rawOf(dtype: DType, shape: number[], values: Values): RawTensor {
  const copy = values.slice();
  return { dtype, shape, data: new Uint8Array(copy.buffer, copy.byteOffset, copy.byteLength) };
}

/** Ids as int32 when every one is an int32, else as float64 (exact up to 2^53). */
function idsTensor(values: Values, shape: number[]): RawTensor {
  const ints = Array.prototype.every.call(values, (x: number) => Number.isInteger(x) && x >= -(2 ** 31) && x < 2 ** 31);
  if (ints) return rawOf('I32', shape, Int32Array.from(values));
  return rawOf('F64', shape, Float64Array.from(values));
}
