/**
 * One writer per manifest: a lock file (`manifest.lock`, `manifest_rank_1.lock`) beside the
 * manifest holds the writer's pid, host and start time. A second training run on the same
 * storage path fails at once with a StorageLockedError naming the first, instead of the two
 * overwriting each other's shards and manifest. A lock whose process is gone (same host, pid not
 * alive) is stale and taken over; a lock of another host is never broken automatically.
 *
 * Why a lock and not per-writer file names: two runs writing into one cache would mix two models'
 * activations under one manifest, which analyses would then read as one run. A clear error is
 * what the user needs; ranks of one run already write apart (perRankShards: one manifest and lock
 * per rank).
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { link, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { StorageLockedError } from '../errors.js';
import { toStorageError } from './storage-errors.js';
import { processAlive } from './atomic.js';

export interface LockInfo {
  pid: number;
  hostname: string;
  started: string;
  /** Unique per acquisition: tells this writer's lock from a later one of the same pid. */
  token: string;
  /** What holds it: 'training' (ShardWriter), 'sync'. */
  purpose: string;
}

/** The lock file of a manifest: `manifest.json` → `manifest.lock`. */
export function lockFileName(manifestFile: string): string {
  return manifestFile.replace(/\.json$/, '') + '.lock';
}

/** Locks held in this process, by path: a second writer in the same process is refused too (or waits while the first closes). */
const held = new Map<string, { token: string; closing: Promise<void> | null }>();

async function readLock(path: string): Promise<LockInfo | null> {
  try {
    const info = JSON.parse(await readFile(path, 'utf8')) as LockInfo;
    return typeof info?.pid === 'number' ? info : { pid: NaN, hostname: '?', started: '?', token: '', purpose: '?' };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    // Unreadable or half-written by a writer killed inside writeFile: treat as stale below.
    return { pid: NaN, hostname: hostname(), started: '?', token: '', purpose: '?' };
  }
}

function isStale(info: LockInfo): boolean {
  if (info.hostname !== hostname()) return false;
  if (!Number.isInteger(info.pid)) return true;
  if (info.pid === process.pid) return ![...held.values()].some((h) => h.token === info.token);
  return !processAlive(info.pid);
}

export class WriterLock {
  readonly path: string;
  readonly info: LockInfo;
  private released = false;

  private constructor(path: string, info: LockInfo) {
    this.path = path;
    this.info = info;
  }

  /**
   * Takes the lock of `manifestFile` in `dir`, or throws StorageLockedError naming the holder.
   * A lock held by a closing writer of this process is waited for.
   */
  static async acquire(dir: string, manifestFile: string, purpose = 'training'): Promise<WriterLock> {
    const path = join(dir, lockFileName(manifestFile));
    const mine = held.get(path);
    if (mine?.closing) await mine.closing.catch(() => {});
    const info: LockInfo = { pid: process.pid, hostname: hostname(), started: new Date().toISOString(), token: randomBytes(8).toString('hex'), purpose };
    const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${info.token}`);
    try {
      await writeFile(tmp, JSON.stringify(info) + '\n', { flag: 'wx' });
    } catch (err) {
      throw toStorageError(err, dir, 'write to');
    }
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          // link() fails if the lock exists: taking it is atomic, and it is never seen half-written.
          await link(tmp, path);
          held.set(path, { token: info.token, closing: null });
          return new WriterLock(path, info);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw toStorageError(err, path, 'create the lock file');
        }
        const other = await readLock(path);
        if (other === null) continue;
        const inProcess = held.get(path);
        if (inProcess && inProcess.token === other.token) throw lockedError(path, other, true);
        if (!isStale(other)) throw lockedError(path, other, false);
        await breakStale(path, other);
      }
      throw new StorageLockedError(`Could not take the lock ${path}: other writers keep taking it`, { pid: NaN, hostname: '?', started: '?', lock: path });
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }

  /** Marks the lock as being released (a writer of this process opening the same path waits for it). */
  closing(done: Promise<void>): void {
    const h = held.get(this.path);
    if (h && h.token === this.info.token) h.closing = done;
  }

  /** Removes the lock file if it is still this writer's. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const h = held.get(this.path);
    if (h && h.token === this.info.token) held.delete(this.path);
    const current = await readLock(this.path);
    if (current?.token === this.info.token) await unlink(this.path).catch(() => {});
  }

  get isReleased(): boolean {
    return this.released;
  }
}

/**
 * Moves a stale lock aside before deleting it, so two writers breaking it at once cannot delete
 * the fresh lock one of them just took: the one that moved a live lock puts it back.
 */
async function breakStale(path: string, seen: LockInfo): Promise<void> {
  const aside = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-stale-${randomBytes(4).toString('hex')}`);
  try {
    await rename(path, aside);
  } catch {
    return; // gone already: retry taking it
  }
  const moved = await readLock(aside);
  if (moved && moved.token === seen.token && isStale(moved)) await unlink(aside).catch(() => {});
  else {
    await link(aside, path).catch(() => {});
    await unlink(aside).catch(() => {});
  }
}

function lockedError(path: string, other: LockInfo, sameProcess: boolean): StorageLockedError {
  const who = `pid ${other.pid} on ${other.hostname} (${other.purpose}) since ${other.started}`;
  const dir = dirname(path);
  const fix = sameProcess
    ? 'finish the other writer first (onTrainEnd(), writer.finish() or writer.close())'
    : other.hostname === hostname()
      ? `wait for it to finish, or set a different \`storage_path\``
      : `wait for it to finish or set a different \`storage_path\`; if that process no longer runs, delete ${path}`;
  return new StorageLockedError(
    `${dir} is being written by another ${sameProcess ? 'writer in this process' : 'process'}: ${who}. Two runs writing one storage path would overwrite each other's shards and manifest; ${fix}.`,
    { pid: other.pid, hostname: other.hostname, started: other.started, lock: path },
  );
}
