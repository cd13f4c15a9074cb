/**
 * File-system failures of the storage path as one clear StorageError: which file, what the
 * system said (ENOSPC, EROFS, ...) and what fixes it, never a raw errno error.
 */
import { MechIntError, StorageError } from '../errors.js';

const WHY: Record<string, string> = {
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is exhausted',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EIO: 'an I/O error',
  ENOTDIR: 'a part of the path is a file, not a directory',
  EISDIR: 'the path is a directory',
  EMFILE: 'too many open files',
};

const FIX: Record<string, string> = {
  ENOSPC: 'free space, or set `storage_path` to a disk with room (a shard holds up to max_activations_per_shard samples per layer)',
  EDQUOT: 'free space or raise the quota, or set `storage_path` elsewhere',
  EROFS: 'set `storage_path` to a writable directory',
  EACCES: 'set `storage_path` to a directory this user can write',
  EPERM: 'set `storage_path` to a directory this user can write',
};

/** Wraps a file-system error of `action` on `path`; MechIntErrors pass through unchanged. */
export function toStorageError(err: unknown, path: string, action: string): MechIntError {
  if (err instanceof MechIntError) return err;
  const errno = (err as NodeJS.ErrnoException | null)?.code ?? null;
  const why = (errno && WHY[errno]) ?? (err as Error)?.message ?? String(err);
  const fix = (errno && FIX[errno]) ?? 'check the storage path';
  return new StorageError(`Cannot ${action} ${path}: ${why}${errno ? ` (${errno})` : ''}; ${fix}`, { errno, path, cause: err });
}
