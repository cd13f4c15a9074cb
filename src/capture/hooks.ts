/**
 * MechIntHooks: the orchestrator of the guide. It builds the sampler from a MechIntConfig,
 * registers hooks, saves a shard every `saveHiddenEveryNSteps` global steps, and at the end of
 * training saves what is left, marks the manifest complete and removes the hooks.
 */
import type { tf } from '../backend.js';
import { MechIntConfig, type MechIntConfigInput } from '../config.js';
import { createLogger, type Logger } from '../logger.js';
import { remoteFromConfig } from '../storage/remote-config.js';
import { ActivationSampler } from './sampler.js';

export interface TrainingStepInfo {
  globalStep: number;
  epoch?: number;
  batchIdx?: number;
  /** Anything else a loop wants to pass (outputs, batch, trainer): accepted and ignored, as in the guide. */
  [key: string]: unknown;
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

  constructor(config: MechIntConfigInput = {}) {
    this.config = MechIntConfig.from(config);
    this.logger = createLogger(this.config.verbose);
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
    });
  }

  /** Hooks the configured layers of `model` (auto-detected when sampleLayers is null). Returns the paths. */
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
   * Call once per training step. Saves a shard when `globalStep` is a multiple of
   * saveHiddenEveryNSteps; resolves to its path (null otherwise).
   */
  async onTrainingStep(info: TrainingStepInfo): Promise<string | null> {
    const { globalStep } = info;
    this.lastStep = globalStep;
    if (info.epoch !== undefined) this.lastEpoch = info.epoch;
    if (!this.sampler || globalStep % this.config.saveHiddenEveryNSteps !== 0) return null;
    return this.save(globalStep, info.epoch, info.batchIdx);
  }

  /**
   * onTrainingStep for callers that do not wait: records the step and, on a save step, starts
   * the save in the background (a failure is logged now and thrown by onTrainEnd).
   */
  stepDone(globalStep: number, epoch?: number, batchIdx?: number): void {
    this.lastStep = globalStep;
    if (epoch !== undefined) this.lastEpoch = epoch;
    if (!this.sampler || globalStep % this.config.saveHiddenEveryNSteps !== 0) return;
    this.save(globalStep, epoch, batchIdx).catch((err: Error) => this.logger.warn(`Saving activations at step ${globalStep} failed: ${err.message}`));
  }

  /** Starts a save; the returned promise is also tracked so onTrainEnd can wait for it. */
  save(globalStep: number, epoch?: number, batchIdx?: number): Promise<string | null> {
    const sampler = this.sampler;
    if (!sampler) return Promise.resolve(null);
    const metadata: Record<string, unknown> = {};
    if (epoch !== undefined) metadata.epoch = epoch;
    if (batchIdx !== undefined) metadata.batch_idx = batchIdx;
    const p = sampler.saveActivations(globalStep, metadata).then((path) => {
      if (path) this.savedShards.push(path);
      return path;
    });
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

  /** Saves what is still cached, waits for every write, marks the manifest complete, removes the hooks. */
  async onTrainEnd(_trainer?: unknown, _model?: unknown): Promise<void> {
    const sampler = this.sampler;
    if (!sampler) return;
    try {
      await Promise.all([...this.saves]);
      if (sampler.writes && sampler.getStatistics().current_cache_samples > 0) {
        const lastSaved = sampler.writer.records.at(-1)?.global_step ?? 0;
        await this.save(this.lastStep ?? lastSaved, this.lastEpoch ?? undefined);
      }
      if (sampler.writes && sampler.writer.records.length > 0) await sampler.writer.finish();
      if (sampler.writes) await this.waitForUploads(sampler);
    } finally {
      sampler.clearHooks();
    }
    const s = sampler.getStatistics();
    if (sampler.writes) this.logger.info(`Training done: ${s.total_shards} shard(s), ${s.total_samples_saved} samples, manifest at ${sampler.writer.dir}/${sampler.writer.manifestFile}`);
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
