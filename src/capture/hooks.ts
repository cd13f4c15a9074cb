/**
 * MechIntHooks: the orchestrator of the guide. It builds the sampler from a MechIntConfig,
 * registers hooks, saves a shard every `saveHiddenEveryNSteps` global steps, and at the end of
 * training saves what is left, marks the manifest complete and removes the hooks.
 *
 * Backpressure: a save step that comes while the previous shard is still being written waits for
 * that write before taking its snapshot (training pauses only then). So at most one snapshot
 * waits for the disk (memory stays within two shards' worth per layer), shards keep one per save
 * step, and a kill -9 loses at most the shard being written and the samples captured since.
 *
 * Storage failures (disk full, read-only) stop capture at once: `failure` holds the StorageError,
 * the manifest records it (status 'failed'), and the fit callback throws it at the next step.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { tf } from '../backend.js';
import { MechIntConfig, type MechIntConfigInput } from '../config.js';
import { CaptureError, MechIntError } from '../errors.js';
import type { Logger } from '../logger.js';
import { remoteFromConfig } from '../storage/remote-config.js';
import { ActivationSampler, captureLogger, type BatchData } from './sampler.js';

export interface TrainingStepInfo extends BatchData {
  globalStep: number;
  epoch?: number;
  batchIdx?: number;
  /** Anything else a loop wants to pass (outputs, batch, trainer): accepted and ignored, as in the guide. */
  [key: string]: unknown;
}

function stepInfo(step: number, epoch?: number, batch?: number): { step: number; epoch: number; batch: number } {
  const int = (v: number | undefined) => (typeof v === 'number' && Number.isInteger(v) ? v : -1);
  return { step: int(step), epoch: int(epoch), batch: int(batch) };
}

function asMechIntError(err: unknown): MechIntError {
  return err instanceof MechIntError ? err : new CaptureError(`Saving activations failed: ${(err as Error)?.message ?? String(err)}`);
}

export class MechIntHooks {
  readonly config: MechIntConfig;
  sampler: ActivationSampler | null = null;
  /** Paths of the shards saved in this run. */
  savedShards: string[] = [];
  protected readonly logger: Logger;
  private lastStep: number | null = null;
  private lastEpoch: number | null = null;
  private saves = new Set<Promise<unknown>>();
  private failed: MechIntError | null = null;
  private aborting: Promise<void> | null = null;

  constructor(config: MechIntConfigInput = {}) {
    this.config = MechIntConfig.from(config);
    this.logger = captureLogger(this.config.verbose);
  }

  /** The error that stopped capture (a storage failure), or null. */
  get failure(): MechIntError | null {
    return this.failed;
  }

  /** Makes the sampler a subclass may replace (the guide's "Custom Activation Processing"). */
  protected createSampler(): ActivationSampler {
    return new ActivationSampler({
      layers: this.config.sampleLayers,
      saveDir: this.config.storagePath,
      maxSamplesPerShard: this.config.maxActivationsPerShard,
      rank: this.config.rank,
      perRankShards: this.config.perRankShards,
      verbose: this.config.verbose,
      config: this.config.toJSON(),
      missingLayers: this.config.missingLayers,
      shardFormat: this.config.shardFormat,
      provenance: this.config.captureProvenance,
      captureInputs: this.config.captureInputs,
      captureTargets: this.config.captureTargets,
    });
  }

  /**
   * Optional, before a custom loop's forward pass: names the step whose rows are about to be
   * captured, and may hand over the batch's `inputs`, `targets` and per-sample `ids` (kept for
   * the rows the reservoir keeps; docs/provenance.md). fit's callback calls it at onBatchBegin.
   */
  beginStep(info: TrainingStepInfo): void {
    this.sampler?.beginStep(stepInfo(info.globalStep, info.epoch, info.batchIdx), info);
  }

  /**
   * Hooks the configured layers of `model` (auto-detected when sampleLayers is null). Returns the
   * paths. A configured layer the model lacks throws LayerNotFoundError unless missingLayers is 'warn'.
   */
  registerHooks(model: tf.LayersModel | tf.layers.Layer, _trainer?: unknown): string[] {
    if (!this.sampler) {
      this.sampler = this.createSampler();
      // 's3' and 'both': the writer uploads in the background (set before its first write).
      const remote = this.sampler.writes ? remoteFromConfig(this.config) : null;
      if (remote) this.sampler.writer.useRemote(remote);
    }
    return this.sampler.registerHooks(model);
  }

  /**
   * registerHooks, then opens the storage path (its writer lock, manifest and a check that it can
   * be written), so a locked, read-only or corrupted storage path fails before training starts.
   * On failure no hook stays registered.
   */
  async onTrainBegin(model: tf.LayersModel | tf.layers.Layer): Promise<string[]> {
    if (this.aborting) await this.aborting;
    this.failed = null;
    const paths = this.registerHooks(model);
    const sampler = this.sampler!;
    if (sampler.writes) {
      try {
        await sampler.writer.open();
      } catch (err) {
        sampler.clearHooks();
        throw err;
      }
    }
    return paths;
  }

  /**
   * Call once per training step. Saves a shard when `globalStep` is a multiple of
   * saveHiddenEveryNSteps; resolves to its path (null otherwise).
   */
  async onTrainingStep(info: TrainingStepInfo): Promise<string | null> {
    const { globalStep } = info;
    // The rows captured since the last step are this step's (inputs, targets, ids given here fill them).
    this.sampler?.endStep(stepInfo(globalStep, info.epoch, info.batchIdx), info);
    this.lastStep = globalStep;
    if (info.epoch !== undefined) this.lastEpoch = info.epoch;
    if (this.failed) throw this.failed;
    if (!this.sampler || globalStep % this.config.saveHiddenEveryNSteps !== 0) return null;
    return this.save(globalStep, info.epoch, info.batchIdx);
  }

  /**
   * onTrainingStep for callers that do not wait for the write: records the step and, on a save
   * step, starts the save in the background. Resolves once the save has started: when the
   * previous save is still writing, only after it finished (backpressure). Never rejects; a
   * failure is kept in `failure` (and thrown by onTrainEnd).
   */
  async stepDone(globalStep: number, epoch?: number, batchIdx?: number): Promise<void> {
    this.sampler?.endStep(stepInfo(globalStep, epoch, batchIdx));
    this.lastStep = globalStep;
    if (epoch !== undefined) this.lastEpoch = epoch;
    if (this.failed || !this.sampler || globalStep % this.config.saveHiddenEveryNSteps !== 0) return;
    if (this.saves.size > 0) await Promise.allSettled([...this.saves]);
    if (this.failed) return;
    this.save(globalStep, epoch, batchIdx).catch(() => {});
  }

  /** Starts a save; the returned promise is also tracked so onTrainEnd can wait for it. */
  save(globalStep: number, epoch?: number, batchIdx?: number): Promise<string | null> {
    const sampler = this.sampler;
    if (!sampler) return Promise.resolve(null);
    const metadata: Record<string, unknown> = {};
    if (epoch !== undefined) metadata.epoch = epoch;
    if (batchIdx !== undefined) metadata.batch_idx = batchIdx;
    const p = sampler.saveActivations(globalStep, metadata).then(
      (path) => {
        if (path) this.savedShards.push(path);
        return path;
      },
      (err: unknown) => {
        const e = asMechIntError(err);
        if (!this.failed) {
          this.failed = e;
          this.logger.warn(`Capture stopped at step ${globalStep}: ${e.message} (${e.code})`);
        }
        throw e;
      },
    );
    this.saves.add(p);
    void p.finally(() => this.saves.delete(p)).catch(() => {});
    return p;
  }

  /** True while a shard write started by save(), or a background upload, is still in flight. */
  get saving(): boolean {
    // Uploads count too: fit's callback turns the event loop once per step while this is true,
    // which is what lets sockets and retry timers make progress during model.fit.
    return this.saves.size > 0 || (this.sampler?.writer.uploading ?? false);
  }

  /** Logs the sampler's statistics. */
  onEpochEnd(epoch?: number, _logs?: unknown): void {
    if (epoch !== undefined) this.lastEpoch = epoch;
    if (!this.sampler) return;
    const s = this.sampler.getStatistics();
    this.logger.info(`Epoch ${epoch ?? this.lastEpoch ?? '?'} end: ${s.total_shards} shard(s) saved, ${s.total_samples_saved} samples saved, ${s.current_cache_samples} in cache`);
  }

  /**
   * Saves what is still cached, waits for every write, marks the manifest complete (it is written
   * even when no shard was), removes the hooks. After a storage failure: removes the hooks, leaves
   * the manifest saying 'failed', and throws the failure.
   */
  async onTrainEnd(_trainer?: unknown, _model?: unknown): Promise<void> {
    const sampler = this.sampler;
    if (!sampler) return;
    try {
      await Promise.allSettled([...this.saves]);
      if (!this.failed && sampler.writes && sampler.getStatistics().current_cache_samples > 0) {
        const lastSaved = sampler.writer.records.at(-1)?.global_step ?? 0;
        await this.save(this.lastStep ?? lastSaved, this.lastEpoch ?? undefined).catch(() => {});
      }
      if (sampler.writes && !this.failed) {
        await sampler.writer.finish();
        await this.waitForUploads(sampler);
      }
    } catch (err) {
      this.failed ??= asMechIntError(err);
    } finally {
      sampler.clearHooks();
      if (sampler.writes) await sampler.writer.close().catch(() => {});
    }
    if (this.failed) throw this.failed;
    const s = sampler.getStatistics();
    if (!sampler.writes) return;
    const manifest = join(sampler.writer.dir, sampler.writer.manifestFile);
    const exists = await stat(manifest).then((st) => st.isFile(), () => false);
    this.logger.info(`Training done: ${s.total_shards} shard(s), ${s.total_samples_saved} samples${exists ? `, manifest at ${manifest}` : ''}`);
  }

  /**
   * The run stopped without onTrainEnd (model.fit threw): removes the hooks now, so a later fit is
   * not captured twice, then records status 'failed' in the manifest and releases the storage path.
   */
  abortRun(reason: string): Promise<void> {
    const sampler = this.sampler;
    if (!sampler) return Promise.resolve();
    sampler.clearHooks();
    sampler.clearCache();
    const failure = this.failed;
    const wasOpen = sampler.writes && sampler.writer.isOpen;
    this.aborting = (async () => {
      if (sampler.writes) {
        if (failure) await sampler.writer.close().catch(() => {});
        else await sampler.writer.abort({ message: reason }).catch(() => {});
      }
      await Promise.allSettled([...this.saves]);
    })().finally(() => {
      this.aborting = null;
    });
    // Nothing to say when capture never started (onTrainBegin threw, and fit rejects with that error).
    if (!failure && wasOpen) this.logger.warn(`${reason}; capture stopped and its hooks were removed; ${sampler.writer.manifestFile} says status 'failed'`);
    return this.aborting;
  }

  /** Waits up to s3UploadTimeoutMs for background uploads, then stops them and says what remains. */
  private async waitForUploads(sampler: ActivationSampler): Promise<void> {
    const uploads = sampler.writer.uploads;
    if (!uploads) return;
    try {
      const r = await sampler.writer.waitForUploads(this.config.s3UploadTimeoutMs);
      if (r.done) this.logger.info(`Uploaded every shard and the manifest to ${uploads.store.url}`);
      else {
        const why = uploads.queue.haltedBy ? ` (${uploads.queue.haltedBy.message})` : uploads.queue.inOutage ? ' (S3 is not answering)' : '';
        const where = `${sampler.writer.dir}`;
        const flush = `Upload them with \`mechint sync ${where}\`, or start the next run with the same storage_path.`;
        this.logger.warn(
          r.pending > 0
            ? `${r.pending} shard(s) not uploaded to ${uploads.store.url} within ${this.config.s3UploadTimeoutMs} ms${why}; they stay in ${where} with upload state pending. ${flush}`
            : `The manifest was not uploaded to ${uploads.store.url} within ${this.config.s3UploadTimeoutMs} ms${why}. ${flush.replace('them', 'it')}`,
        );
      }
    } finally {
      sampler.writer.closeUploads();
    }
  }
}
