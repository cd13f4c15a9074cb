/**
 * Progress on stderr. On a terminal: one line redrawn in place with a bar, the rate (the caller's
 * count, or the `epoch 3/10` counter of the label) and the time left. When stderr is not a
 * terminal (a log file, CI): a plain line on each new stage and at least every `intervalMs` while
 * one runs. Off with `--json` and `--quiet` (main.ts) or MECHINT_PROGRESS=off.
 */

/** How much of a stage is done, in the caller's units. */
export interface ProgressCount {
  done: number;
  total?: number;
  /** e.g. `rows`, `epochs`. @default 'items' */
  unit?: string;
}

export interface Progress {
  update(label: string, fraction?: number, count?: ProgressCount): void;
  done(message?: string): void;
}

export type ProgressMode = 'auto' | 'tty' | 'plain' | 'off';

export interface ProgressOptions {
  /** `auto`: redrawn on a terminal, plain lines otherwise. @default process.env.MECHINT_PROGRESS ?? the mode set by configureProgress ('auto') */
  readonly mode?: ProgressMode;
  /** Plain mode: most time between lines while a stage runs, in ms. @default 10_000 */
  readonly intervalMs?: number;
  /** The clock, for tests. @default Date.now */
  readonly now?: () => number;
}

let defaultMode: ProgressMode = 'auto';

/** Sets the mode of later createProgress calls (main.ts: `off` for --json and --quiet). */
export function configureProgress(mode: ProgressMode): void {
  defaultMode = mode;
}

const MODES: readonly ProgressMode[] = ['auto', 'tty', 'plain', 'off'];

function envMode(): ProgressMode | undefined {
  const v = process.env.MECHINT_PROGRESS?.trim().toLowerCase();
  return v && (MODES as readonly string[]).includes(v) ? (v as ProgressMode) : undefined;
}

/** `12 s`, `3 min 4 s`, `1 h 02 min`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

function formatRate(perSecond: number, unit: string): string {
  const r = perSecond >= 100 ? Math.round(perSecond).toLocaleString('en-US') : perSecond >= 10 ? perSecond.toFixed(1) : perSecond.toPrecision(2);
  return `${r} ${unit}/s`;
}

/** The `epoch 3/10` counter of a label, as a count. */
function countFromLabel(label: string): ProgressCount | undefined {
  const m = /([A-Za-z_]+)\s+(\d+)\s*\/\s*(\d+)/.exec(label);
  return m ? { done: Number(m[2]), total: Number(m[3]), unit: m[1]! } : undefined;
}

/**
 * A stage is what a label names before its counter: `sae layer1 epoch 3/10 loss 0.2`, `.. 4/10 ..`
 * and `sae layer1` are one stage, `sae layer2` the next.
 */
const stageOf = (label: string) => label.replace(/\s*[A-Za-z_]+\s+\d+\s*\/\s*\d+.*$/s, '');

/** Tracks one stage's start to derive its rate and time left. */
class StageClock {
  private key = '';
  private t0 = 0;
  private f0 = 0;
  private c0 = 0;
  private unit = 'items';
  private lastF = 0;
  private lastC = 0;

  /** Returns whether this update began a new stage. */
  observe(label: string, now: number, fraction: number | undefined, count: ProgressCount | undefined): boolean {
    const key = stageOf(label);
    const fresh = key !== this.key;
    // Going backwards (the next layer's epochs) restarts the clock without being a new stage.
    const back = (fraction !== undefined && fraction < this.lastF) || (count !== undefined && count.done < this.lastC);
    this.lastF = fraction ?? 0;
    this.lastC = count?.done ?? 0;
    if (fresh || back) {
      this.key = key;
      this.t0 = now;
      this.f0 = fraction ?? 0;
      this.c0 = count?.done ?? 0;
      this.unit = count?.unit ?? 'items';
    }
    return fresh;
  }

  /** ` · 1.2 epoch/s · 40 s left`, or '' before there is anything to measure. */
  describe(now: number, fraction: number | undefined, count: ProgressCount | undefined): string {
    const elapsed = (now - this.t0) / 1000;
    if (elapsed < 0.5) return '';
    const parts: string[] = [];
    if (count && count.done > this.c0) parts.push(formatRate((count.done - this.c0) / elapsed, count.unit ?? this.unit));
    let left: number | undefined;
    if (fraction !== undefined && fraction > this.f0 && fraction < 1) left = (elapsed * (1 - fraction)) / (fraction - this.f0);
    else if (count?.total !== undefined && count.done > this.c0 && count.done < count.total) left = (elapsed * (count.total - count.done)) / (count.done - this.c0);
    if (left !== undefined) parts.push(`${formatDuration(left)} left`);
    return parts.length ? ` · ${parts.join(' · ')}` : '';
  }
}

export function createProgress(stream: NodeJS.WriteStream = process.stderr, options: ProgressOptions = {}): Progress {
  const mode = options.mode ?? envMode() ?? defaultMode;
  const now = options.now ?? Date.now;
  const tty = mode === 'tty' || (mode === 'auto' && stream.isTTY === true);
  if (mode === 'off') return { update: () => {}, done: () => {} };
  const clock = new StageClock();
  return tty ? ttyProgress(stream, clock, now) : plainProgress(stream, clock, now, options.intervalMs ?? 10_000);
}

function ttyProgress(stream: NodeJS.WriteStream, clock: StageClock, now: () => number): Progress {
  let last = 0;
  const width = 24;
  return {
    update(label, fraction, count) {
      const t = now();
      const c = count ?? countFromLabel(label);
      const fresh = clock.observe(label, t, fraction, c);
      if (!fresh && t - last < 50 && fraction !== 1) return;
      last = t;
      const bar = fraction === undefined ? '' : `[${'#'.repeat(Math.round(Math.min(1, Math.max(0, fraction)) * width)).padEnd(width, '.')}] ${Math.round(fraction * 100)}% `;
      const line = `${bar}${label}${clock.describe(t, fraction, c)}`.slice(0, (stream.columns ?? 80) - 1);
      stream.write(`\r\x1b[2K${line}`);
    },
    done(message) {
      stream.write('\r\x1b[2K');
      if (message) stream.write(`${message}\n`);
    },
  };
}

function plainProgress(stream: NodeJS.WriteStream, clock: StageClock, now: () => number, intervalMs: number): Progress {
  let last = -Infinity;
  let lastLine = '';
  return {
    update(label, fraction, count) {
      const t = now();
      const c = count ?? countFromLabel(label);
      const fresh = clock.observe(label, t, fraction, c);
      if (!fresh && t - last < intervalMs) return;
      const pct = fraction === undefined ? '' : `${Math.round(Math.min(1, Math.max(0, fraction)) * 100)}% `;
      const line = `mechint: ${pct}${label}${clock.describe(t, fraction, c)}`;
      if (line === lastLine) return;
      last = t;
      lastLine = line;
      stream.write(`${line}\n`);
    },
    done(message) {
      if (message) stream.write(`${message}\n`);
    },
  };
}
