/**
 * MechIntHooks: the orchestrator of the guide. It builds the sampler from a MechIntConfig,
 * registers hooks, saves a shard every `saveHiddenEveryNSteps` global steps, and at the end of
 * training saves what is left, marks the manifest complete and removes the hooks.
 */
import type { tf } from '../backend.js';
import { MechIntConfig, type MechIntConfigInput } from '../config.js';
import { createLogger, type Logger } from '../logger.js';
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
    this.sampler ??= this.createSampler();
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

  /** True while a shard write started by save() is still in flight. */
  get saving(): boolean {
    return this.saves.size > 0;
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
    } finally {
      sampler.clearHooks();
    }
    const s = sampler.getStatistics();
    if (sampler.writes) this.logger.info(`Training done: ${s.total_shards} shard(s), ${s.total_samples_saved} samples, manifest at ${sampler.writer.dir}/${sampler.writer.manifestFile}`);
  }
}
