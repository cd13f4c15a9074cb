/**
 * MechIntCallback: the guide's Lightning callback for TensorFlow.js `model.fit` / `fitDataset`.
 * Registers hooks and opens the storage path at train begin (a locked, read-only or corrupted
 * storage path fails there, before the first epoch), saves every saveHiddenEveryNSteps global
 * steps, logs at epoch end, finishes the manifest and removes hooks at train end. It combines
 * with other callbacks.
 *
 * tfjs calls no onTrainEnd when fit throws. To remove the hooks then too, the callback watches the
 * model's `isTraining` flag, which fit and fitDataset reset in a `finally` whatever happens: when
 * it drops to false without onTrainEnd having run, the hooks are removed at once and the manifest
 * records status 'failed'.
 */
import { tf } from '../backend.js';
import type { MechIntConfigInput } from '../config.js';
import { MechIntHooks } from './hooks.js';
import { checkKeys } from '../options.js';

type Logs = tf.Logs | undefined;

export class MechIntCallback extends tf.Callback {
  readonly hooks: MechIntHooks;
  /** The global step of the batch in progress (0-based), across epochs. */
  globalStep = 0;
  private epoch = 0;
  private stepsPerEpoch: number | null = null;
  private started = false;
  private trainEnded = true;
  private unwatch: (() => void) | null = null;

  /**
   * @param config a MechIntConfig, or plain options with camelCase or snake_case keys
   * @param options.hooks hooks to drive instead of new ones (e.g. a MechIntHooks subclass with a custom sampler)
   */
  constructor(config: MechIntConfigInput = {}, options: { hooks?: MechIntHooks } = {}) {
    super();
    checkKeys('MechIntCallback option', options, ['hooks']);
    this.hooks = options.hooks ?? new MechIntHooks(config);
  }

  override async onTrainBegin(_logs?: Logs): Promise<void> {
    this.trainEnded = false;
    this.watchFit(this.model);
    await this.hooks.onTrainBegin(this.model);
    const params = this.params as { steps?: number | null; samples?: number | null; batchSize?: number | null };
    if (params.steps) this.stepsPerEpoch = params.steps;
    else if (params.samples && params.batchSize) this.stepsPerEpoch = Math.ceil(params.samples / params.batchSize);
    this.started = false;
    // Only training batches are captured: fit's validation passes are not.
    if (this.hooks.sampler) this.hooks.sampler.trainingOnly = true;
  }

  override async onEpochBegin(epoch: number, _logs?: Logs): Promise<void> {
    this.epoch = epoch;
    // Resuming with `initialEpoch`: the global step continues from there.
    if (!this.started && epoch > 0 && this.stepsPerEpoch) this.globalStep = epoch * this.stepsPerEpoch;
  }

  override async onBatchBegin(batch: number, _logs?: Logs): Promise<void> {
    // The rows this batch's layers give belong to this step (docs/provenance.md).
    this.hooks.beginStep({ globalStep: this.globalStep, epoch: this.epoch, batchIdx: batch });
  }

  override async onBatchEnd(batch: number, _logs?: Logs): Promise<void> {
    this.started = true;
    // The save runs in the background: a training step never waits for disk. A failed save is
    // logged when it fails and thrown again at train end.
    // On a save step while the previous shard is still being written, this waits for it (backpressure).
    await this.hooks.stepDone(this.globalStep++, this.epoch, batch);
    // A storage failure (disk full, read-only) ends fit with that error, not a warning per step.
    if (this.hooks.failure) throw this.hooks.failure;
    // fit's loop only awaits microtasks; without a turn of the event loop the file I/O of a
    // background save would never progress. One setImmediate per step while saving is enough.
    if (this.hooks.saving) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  override async onEpochEnd(epoch: number, logs?: Logs): Promise<void> {
    this.hooks.onEpochEnd(epoch, logs);
  }

  override async onTrainEnd(_logs?: Logs): Promise<void> {
    this.trainEnded = true;
    this.stopWatching();
    await this.hooks.onTrainEnd();
  }

  /** Watches `model.isTraining`: fit sets it to false in a `finally`, also when it throws. */
  private watchFit(model: tf.LayersModel): void {
    this.stopWatching();
    const target = model as unknown as { isTraining: boolean };
    let value = target.isTraining;
    Object.defineProperty(target, 'isTraining', {
      configurable: true,
      enumerable: true,
      get: () => value,
      set: (v: boolean) => {
        value = v;
        if (v === false) this.fitEnded();
      },
    });
    this.unwatch = () => {
      Object.defineProperty(target, 'isTraining', { value, writable: true, configurable: true, enumerable: true });
    };
  }

  private stopWatching(): void {
    const undo = this.unwatch;
    this.unwatch = null;
    undo?.();
  }

  /** fit is over; without onTrainEnd it threw. */
  private fitEnded(): void {
    this.stopWatching();
    if (this.trainEnded) return;
    this.trainEnded = true;
    void this.hooks.abortRun('model.fit stopped with an error before onTrainEnd');
  }
}
