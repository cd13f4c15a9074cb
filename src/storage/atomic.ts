/**
 * Atomic file writes: a temporary name in the same directory, fsync, rename, fsync of the
 * directory. A reader sees the old file or the whole new one, never half of it, even after a crash.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { sha256Chunks } from './hash-thread.js';
import { basename, dirname, join } from 'node:path';

const TMP_MARK = '.tmp-';

/** The temporary names used for `file` carry the writer's pid, so stale ones can be told apart. */
export function isTempFile(name: string): boolean {
  return name.startsWith('.') && name.includes(TMP_MARK);
}

/**
 * Writes chunks to `path` atomically; returns the byte count and sha256 of what was written.
 * `syncDir: false` skips the directory fsync when the caller writes (and syncs) another file of
 * the same directory right after, which makes both renames durable at once.
 */
export async function writeFileAtomic(path: string, chunks: Uint8Array[], options: { syncDir?: boolean } = {}): Promise<{ bytes: number; sha256: string }> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}${TMP_MARK}${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
  const fh = await open(tmp, 'w');
  let sha256: string;
  let bytes: number;
  try {
    // The write runs in libuv's thread pool and the hash on a worker thread: during training the
    // calling thread is the training loop, and a shard must not hold it up.
    const nonEmpty = chunks.filter((c) => c.byteLength > 0);
    bytes = nonEmpty.reduce((a, c) => a + c.byteLength, 0);
    [sha256] = await Promise.all([sha256Chunks(nonEmpty), writeAll(fh, nonEmpty)]);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  if (options.syncDir !== false) await syncDir(dir);
  return { bytes, sha256 };
}

/** writev takes at most IOV_MAX buffers at once and may write partially: loop until done. */
async function writeAll(fh: FileHandle, chunks: Uint8Array[]): Promise<void> {
  let pending = chunks;
  while (pending.length > 0) {
    const batch = pending.slice(0, 1024);
    let { bytesWritten } = await fh.writev(batch);
    const rest: Uint8Array[] = [];
    for (const c of batch) {
      if (bytesWritten >= c.byteLength) bytesWritten -= c.byteLength;
      else {
        rest.push(c.subarray(bytesWritten));
        bytesWritten = 0;
      }
    }
    pending = [...rest, ...pending.slice(batch.length)];
  }
}

/** fsync of a directory, so renames inside it survive a crash (skipped where unsupported). */
export async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Some filesystems cannot fsync a directory; the rename is still atomic there.
  }
}

/** Whether a process of this host is alive (EPERM: alive, not ours to signal). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes temporary files that crashed writers left in `dir`; returns their names. */
export async function removeStaleTempFiles(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!isTempFile(name)) continue;
    const pid = Number(name.slice(name.indexOf(TMP_MARK) + TMP_MARK.length).split('-')[0]);
    if (pid === process.pid || (Number.isInteger(pid) && processAlive(pid))) continue;
    await unlink(join(dir, name)).catch(() => {});
    removed.push(name);
  }
  return removed;
}

/** sha256 of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
