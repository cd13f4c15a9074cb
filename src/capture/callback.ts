/**
 * MechIntCallback: the guide's Lightning callback for TensorFlow.js `model.fit` / `fitDataset`.
 * Registers hooks at train begin, saves every saveHiddenEveryNSteps global steps, logs at epoch
 * end, finishes the manifest and removes hooks at train end. It combines with other callbacks.
 */
import { tf } from '../backend.js';
import type { MechIntConfigInput } from '../config.js';
import { MechIntHooks } from './hooks.js';

type Logs = tf.Logs | undefined;

export class MechIntCallback extends tf.Callback {
  readonly hooks: MechIntHooks;
  /** The global step of the batch in progress (0-based), across epochs. */
  globalStep = 0;
  private epoch = 0;
  private stepsPerEpoch: number | null = null;
  private started = false;

  /**
   * @param config a MechIntConfig, or plain options with camelCase or snake_case keys
   * @param options.hooks hooks to drive instead of new ones (e.g. a MechIntHooks subclass with a custom sampler)
   */
  constructor(config: MechIntConfigInput = {}, options: { hooks?: MechIntHooks } = {}) {
    super();
    this.hooks = options.hooks ?? new MechIntHooks(config);
  }

  override async onTrainBegin(_logs?: Logs): Promise<void> {
    this.hooks.registerHooks(this.model);
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

  override async onBatchEnd(batch: number, _logs?: Logs): Promise<void> {
    this.started = true;
    // The save runs in the background: a training step never waits for disk. A failed save is
    // logged when it fails and thrown again at train end.
    this.hooks.stepDone(this.globalStep++, this.epoch, batch);
    // fit's loop only awaits microtasks; without a turn of the event loop the file I/O of a
    // background save would never progress. One setImmediate per step while saving is enough.
    if (this.hooks.saving) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  override async onEpochEnd(epoch: number, logs?: Logs): Promise<void> {
    this.hooks.onEpochEnd(epoch, logs);
  }

  override async onTrainEnd(_logs?: Logs): Promise<void> {
    await this.hooks.onTrainEnd();
  }
}
