/**
 * ManifestLog: the writing side of manifest.json + manifest.log (see manifest.ts). Every change is
 * one appended, fsynced JSON line, so its cost does not grow with the number of shards; the
 * journal is compacted into the snapshot when it holds as many lines as the last snapshot held
 * shards (at least COMPACT_MIN): snapshots double in size between compactions, so their cost per
 * shard stays flat when amortised too. It is also compacted on close.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDir } from './atomic.js';
import { applyJournalEntry, journalFileName, writeManifest, type JournalEntry, type Manifest } from './manifest.js';
import { toStorageError } from './storage-errors.js';

/** Fewest journal lines before a compaction. */
export const COMPACT_MIN = 256;

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type JournalEntryInput = DistributiveOmit<JournalEntry, 'seq'>;

export class ManifestLog {
  readonly dir: string;
  readonly name: string;
  readonly manifest: Manifest;
  private seq: number;
  private fh: FileHandle | null = null;
  private size = 0;
  private lines = 0;
  /** Shards the snapshot held at the last compaction: the journal is compacted when it has as many lines (doubling, so flat when amortised). */
  private snapshotShards: number;
  /** Position of each shard record by file, so applying a line costs the same however many shards are listed. */
  private readonly index = new Map<string, number>();
  /** Compactions so far (for the bench and tests). */
  compactions = 0;

  constructor(dir: string, name: string, manifest: Manifest) {
    this.dir = dir;
    this.name = name;
    this.manifest = manifest;
    this.seq = manifest.journal_seq ?? 0;
    this.snapshotShards = manifest.shards.length;
    manifest.shards.forEach((r, i) => this.index.set(r.file, i));
  }

  private apply(e: JournalEntry): void {
    const m = this.manifest;
    if (e.op === 'shard') {
      const at = this.index.get(e.shard.file);
      if (at === undefined) {
        this.index.set(e.shard.file, m.shards.length);
        m.shards.push(e.shard);
      } else m.shards[at] = e.shard;
      Object.assign(m.layers, e.layers);
      m.total_shards = m.shards.length;
      m.journal_seq = e.seq;
    } else if (e.op === 'update') {
      const at = this.index.get(e.file);
      if (at !== undefined) Object.assign(m.shards[at]!, e.patch);
      m.journal_seq = e.seq;
    } else applyJournalEntry(m, e);
  }

  get journalPath(): string {
    return join(this.dir, journalFileName(this.name));
  }

  /** Applies a change and appends it to the journal (fsynced); compacts when the journal is due. */
  async append(entry: JournalEntryInput): Promise<void> {
    const e = { ...entry, seq: this.seq + 1 } as JournalEntry;
    const line = Buffer.from(JSON.stringify(e) + '\n', 'utf8');
    try {
      if (!this.fh) {
        this.fh = await open(this.journalPath, 'a');
        this.size = (await this.fh.stat()).size;
        await syncDir(this.dir);
      }
      await this.fh.appendFile(line);
      await this.fh.datasync();
    } catch (err) {
      // A partial line (disk full inside the append) is cut off, so the next line starts clean.
      await this.fh?.truncate(this.size).catch(() => {});
      throw toStorageError(err, this.journalPath, 'append to');
    }
    this.size += line.byteLength;
    this.seq = e.seq;
    this.apply(e);
    this.lines++;
    if (this.lines >= Math.max(COMPACT_MIN, this.snapshotShards)) await this.compact();
  }

  /** Applies a change to the in-memory manifest only (written by the next compaction). */
  applyLocal(change: (m: Manifest) => void): void {
    change(this.manifest);
    this.index.clear();
    this.manifest.shards.forEach((r, i) => this.index.set(r.file, i));
  }

  /** Writes the snapshot with everything so far and removes the journal. */
  async compact(): Promise<void> {
    this.manifest.journal_seq = this.seq;
    try {
      await writeManifest(this.dir, this.manifest, this.name);
    } catch (err) {
      throw toStorageError(err, join(this.dir, this.name), 'write');
    }
    await this.closeJournal();
    // The snapshot now includes every line: the journal can go (if this crashes first, its lines are ignored).
    await unlink(this.journalPath).catch(() => {});
    this.size = 0;
    this.lines = 0;
    this.snapshotShards = this.manifest.shards.length;
    this.compactions++;
  }

  /** Lines appended since the last compaction. */
  get pendingLines(): number {
    return this.lines;
  }

  private async closeJournal(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close().catch(() => {});
  }

  /** Compacts and closes the journal. */
  async close(): Promise<void> {
    await this.compact();
  }

  /** Closes the journal file without compacting (after a failure that makes writing pointless). */
  async abandon(): Promise<void> {
    await this.closeJournal();
  }
}
