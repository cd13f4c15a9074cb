/**
 * ModelCheckpoint: a tfjs fit callback that saves the model to disk (fileSystem handler) as
 * `dir/best` whenever the monitored metric improves, `dir/epoch_{N}` when asked, and `dir/last`
 * after every epoch. Each saved directory holds model.json, weights.bin and checkpoint.json
 * (epoch, metric, value, best epoch so far, the epoch's logs). Epochs N are 1-based, as tfjs
 * prints them. It works beside other callbacks and tf.callbacks.earlyStopping.
 *
 *   await model.fit(x, y, { validationSplit: 0.2, callbacks: [new ModelCheckpoint({ dir: 'ckpt' }),
 *     tf.callbacks.earlyStopping({ patience: 3 })] });
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { tf } from '../backend.js';
import { LOG_PREFIX } from '../constants.js';
import { CheckpointError, ConfigError } from '../errors.js';
import { syncDir, writeFileAtomic } from '../storage/atomic.js';
import { fileSystem } from './file-handler.js';

export const CHECKPOINT_INFO_FILE = 'checkpoint.json';
export const BEST_DIR = 'best';
export const LAST_DIR = 'last';
export const epochDirName = (epoch: number): string => `epoch_${epoch}`;

export type CheckpointMode = 'min' | 'max' | 'auto';

export interface ModelCheckpointOptions {
  /** Directory that receives `best/`, `last/` and `epoch_{N}/`. Created if missing. */
  dir: string;
  /** Metric of the epoch logs to monitor. @default 'val_loss' */
  monitor?: string;
  /** Whether a smaller or larger value is better; `auto` picks `max` for accuracy-like names. @default 'auto' */
  mode?: CheckpointMode;
  /**
   * Keep only the best model (`best/`, updated on improvement) and no per-epoch copies. With
   * `false`, every epoch is also kept as `epoch_{N}`, and a missing metric is not an error.
   * @default true
   */
  saveBestOnly?: boolean;
  /** Keep every epoch as `epoch_{N}`. @default !saveBestOnly */
  saveEveryEpoch?: boolean;
  /** Overwrite `last/` after every epoch. @default true */
  saveLast?: boolean;
  /** Smallest change that counts as an improvement. @default 0 */
  minDelta?: number;
  /** Log each save. @default false */
  verbose?: boolean;
  /** Where verbose lines go. @default console.log */
  log?: (line: string) => void;
}

/** What `checkpoint.json` holds (snake_case on disk, like every file mechint writes). */
export interface CheckpointInfo {
  epoch: number;
  monitor: string;
  mode: 'min' | 'max';
  value: number | null;
  best_epoch: number | null;
  best_value: number | null;
  logs: Record<string, number>;
  saved_at: string;
}

/** Accuracy-like metrics are maximised, everything else (losses, errors) minimised. */
function autoMode(monitor: string): 'min' | 'max' {
  return /(^|_)(acc|accuracy|auc|r2|precision|recall|f1|fmeasure)($|_)/i.test(monitor) ? 'max' : 'min';
}

async function resolveLogs(logs: tf.Logs | undefined): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(logs ?? {})) {
    const value: unknown = v;
    if (typeof value === 'number') out[k] = value;
    else if (value instanceof tf.Tensor) out[k] = (await value.data())[0]!;
  }
  return out;
}

export class ModelCheckpoint extends tf.Callback {
  readonly dir: string;
  readonly monitor: string;
  readonly mode: 'min' | 'max';
  readonly saveBestOnly: boolean;
  readonly saveEveryEpoch: boolean;
  readonly saveLast: boolean;
  readonly minDelta: number;
  private readonly verbose: boolean;
  private readonly log: (line: string) => void;
  /** 1-based epoch of the best model so far, or null before the first save of `best`. */
  bestEpoch: number | null = null;
  /** Monitored value of the best epoch. */
  bestValue: number | null = null;

  constructor(options: ModelCheckpointOptions) {
    super();
    if (options == null || typeof options.dir !== 'string' || options.dir.length === 0) {
      throw new ConfigError(`Expected \`dir\` to be a non-empty string, got \`${String(options?.dir)}\``);
    }
    const mode = options.mode ?? 'auto';
    if (!['min', 'max', 'auto'].includes(mode)) {
      throw new ConfigError(`Expected \`mode\` to be one of min, max, auto; got \`${String(mode)}\``);
    }
    const monitor = options.monitor ?? 'val_loss';
    if (typeof monitor !== 'string' || monitor.length === 0) {
      throw new ConfigError(`Expected \`monitor\` to be a metric name such as val_loss, got \`${String(monitor)}\``);
    }
    const minDelta = options.minDelta ?? 0;
    if (!Number.isFinite(minDelta) || minDelta < 0) {
      throw new ConfigError(`Expected \`minDelta\` to be a finite number >= 0, got \`${String(minDelta)}\``);
    }
    this.dir = options.dir;
    this.monitor = monitor;
    this.mode = mode === 'auto' ? autoMode(monitor) : mode;
    this.saveBestOnly = options.saveBestOnly ?? true;
    this.saveEveryEpoch = options.saveEveryEpoch ?? !this.saveBestOnly;
    this.saveLast = options.saveLast ?? true;
    this.minDelta = minDelta;
    this.verbose = options.verbose ?? false;
    this.log = options.log ?? ((line) => console.log(line));
  }

  private improves(value: number): boolean {
    if (!Number.isFinite(value)) return false;
    if (this.bestValue === null) return true;
    return this.mode === 'min' ? value < this.bestValue - this.minDelta : value > this.bestValue + this.minDelta;
  }

  override async onEpochEnd(epoch: number, logs?: tf.Logs): Promise<void> {
    const values = await resolveLogs(logs);
    const n = epoch + 1;
    const value = values[this.monitor];
    if (value === undefined && this.saveBestOnly) {
      const available = Object.keys(values);
      const hint = this.monitor.startsWith('val_') ? ' (validation metrics need `validationData` or `validationSplit` in fit)' : '';
      throw new CheckpointError(
        `ModelCheckpoint monitors \`${this.monitor}\`, which is not in the logs of epoch ${n}${hint}; ` +
        `available: ${available.length > 0 ? available.join(', ') : 'none'}. Set \`monitor\` to one of them.`,
      );
    }
    const isBest = value !== undefined && this.improves(value);
    if (isBest) {
      this.bestEpoch = n;
      this.bestValue = value;
    }
    const info: CheckpointInfo = {
      epoch: n, monitor: this.monitor, mode: this.mode, value: value ?? null,
      best_epoch: this.bestEpoch, best_value: this.bestValue, logs: values, saved_at: new Date().toISOString(),
    };
    if (isBest) await this.saveAs(BEST_DIR, info);
    if (this.saveEveryEpoch) await this.saveAs(epochDirName(n), info);
    if (this.saveLast) await this.saveAs(LAST_DIR, info);
    if (this.verbose) {
      const shown = value === undefined ? `${this.monitor} missing` : `${this.monitor}=${value.toPrecision(5)}`;
      this.log(`${LOG_PREFIX} epoch ${n}: ${shown}${isBest ? `, new best saved to ${path.join(this.dir, BEST_DIR)}` : `, best epoch ${this.bestEpoch ?? '-'}`}`);
    }
  }

  /**
   * Saves into a fresh sibling directory, then swaps it in by rename, so `best/` is always one
   * complete checkpoint (never weights of one epoch with the checkpoint.json of another).
   */
  private async saveAs(name: string, info: CheckpointInfo): Promise<void> {
    const final = path.join(this.dir, name);
    const tag = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
    const tmp = path.join(this.dir, `.${name}.tmp-${tag}`);
    const old = path.join(this.dir, `.${name}.old-${tag}`);
    try {
      await fs.mkdir(this.dir, { recursive: true });
      await this.model.save(fileSystem(tmp));
      await writeFileAtomic(path.join(tmp, CHECKPOINT_INFO_FILE), [Buffer.from(`${JSON.stringify(info, null, 2)}\n`)], { syncDir: false });
      let hadOld = true;
      try {
        await fs.rename(final, old);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        hadOld = false;
      }
      await fs.rename(tmp, final);
      if (hadOld) await fs.rm(old, { recursive: true, force: true });
      await syncDir(this.dir);
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw new CheckpointError(`Cannot write checkpoint ${final}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Reads `checkpoint.json` of a saved checkpoint directory (e.g. `dir/best`). */
export async function readCheckpointInfo(checkpointDir: string): Promise<CheckpointInfo> {
  const file = path.join(checkpointDir, CHECKPOINT_INFO_FILE);
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as CheckpointInfo;
  } catch (err) {
    throw new CheckpointError(`Cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}
