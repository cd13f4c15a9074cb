/**
 * Uploaded activation files: streamed to a random name inside the upload area (the client's file
 * name is never a path), hashed on the way, checked by magic bytes, parsed, then deleted when the
 * response is sent. Only the parsed floats outlive the request.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { MultipartFile } from '@fastify/multipart';
import type { FastifyRequest } from 'fastify';
import { FormatError, UnsupportedMediaError } from '../errors.js';
import { numel, type DType } from '../formats/dtypes.js';
import type { ActivationFileFormat } from '../formats/read-any.js';
import { readFloat32OffThread } from '../formats/read-thread.js';
import type { MatrixRows } from './task.js';
import { isAuxTensorName } from '../storage/provenance.js';

/** What the onFile handler leaves in `body.file`. */
export interface StoredUpload {
  /** Absolute path inside the upload area: `<uploadDir>/<uuid>.upload`. */
  path: string;
  /** The client's file name, reduced to a safe label (never used as a path). */
  label: string;
  bytes: number;
  sha256: string;
}

export interface ParsedUpload {
  format: ActivationFileFormat;
  sha256: string;
  bytes: number;
  tensors: { name: string; shape: number[]; dtype: DType }[];
  layers: Record<string, MatrixRows>;
}

const uploadsOf = new WeakMap<FastifyRequest, string[]>();

/** A display name: the last path segment, reduced to [A-Za-z0-9._-]. */
export function safeLabel(fileName: string | undefined): string {
  const last = (fileName ?? '').split(/[\\/]/).pop() ?? '';
  const clean = last.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '');
  return clean.length > 0 ? clean.slice(0, 128) : 'upload';
}

/** An onFile handler for @fastify/multipart: writes the part under `uploadDir` with a random name. */
export function storeUploadedFile(uploadDir: string) {
  return async function onFile(this: FastifyRequest, part: MultipartFile): Promise<void> {
    const path = join(uploadDir, `${randomUUID()}.upload`);
    const list = uploadsOf.get(this) ?? [];
    list.push(path);
    uploadsOf.set(this, list);
    const hash = createHash('sha256');
    let bytes = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        bytes += chunk.length;
        cb(null, chunk);
      },
    });
    // A file over the limit makes the part stream error (413); the partial file goes in cleanup.
    try {
      await pipeline(part.file, tap, createWriteStream(path, { flags: 'wx', mode: 0o600 }));
    } catch (err) {
      await rm(path, { force: true });
      throw err;
    }
    const stored: StoredUpload = { path, label: safeLabel(part.filename), bytes, sha256: hash.digest('hex') };
    (part as unknown as { value: StoredUpload }).value = stored;
  };
}

/** Deletes every file this request uploaded (an onResponse hook; also runs after errors). */
export async function removeRequestUploads(request: FastifyRequest): Promise<void> {
  const list = uploadsOf.get(request);
  if (!list) return;
  uploadsOf.delete(request);
  await Promise.all(list.map((p) => rm(p, { force: true })));
}

/** safetensors (8-byte length then `{`), .npy, a torch.save zip, or a legacy pickle. */
export function looksLikeActivationFile(head: Uint8Array): boolean {
  const zip = head[0] === 0x50 && head[1] === 0x4b && ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6));
  const npy = head[0] === 0x93 && String.fromCharCode(...head.subarray(1, 6)) === 'NUMPY';
  const pickle = head[0] === 0x80 && head[1] !== undefined && head[1] >= 2 && head[1] <= 5;
  const safetensors = head.length >= 9 && head[8] === 0x7b && head[6] === 0 && head[7] === 0;
  return zip || npy || pickle || safetensors;
}

/** The first bytes of a file (fewer when it is shorter). */
async function readHead(path: string, length: number): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const head = new Uint8Array(length);
    const { bytesRead } = await fh.read(head, 0, length, 0);
    return head.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Reads an upload into float rows per tensor, on a worker thread (an upload is untrusted: its
 * inflating, unpickling and conversion must not hold up the server). Deflated `.pt` entries may
 * expand to at most 16 × the upload's size, all together, and an entry that inflates past the
 * size it declares is refused the moment it does.
 */
export async function parseUpload(stored: StoredUpload): Promise<ParsedUpload> {
  if (!looksLikeActivationFile(await readHead(stored.path, 16))) {
    throw new UnsupportedMediaError(
      `The uploaded file \`${stored.label}\` is not an activation file: expected safetensors, .npy or a torch.save .pt (checked by its first bytes, not its name)`,
    );
  }
  const file = await readFloat32OffThread(stored.path, { source: stored.label, maxUncompressedBytes: Math.max(64 << 20, 16 * stored.bytes) });
  const layers: Record<string, MatrixRows> = {};
  const tensors: ParsedUpload['tensors'] = [];
  for (const [name, t] of Object.entries(file.tensors)) {
    // A mechint shard's provenance, inputs and targets travel beside its layers; they are not layers.
    if (isAuxTensorName(name)) continue;
    tensors.push({ name, shape: t.shape, dtype: t.dtype });
    if (numel(t.shape) === 0) continue;
    const dim = t.shape.length <= 1 ? 1 : t.shape.at(-1)!;
    // Each tensor's values own their buffer, so it can be transferred to an analysis worker.
    layers[name] = { rows: t.values, dim };
  }
  if (Object.keys(layers).length === 0) throw new FormatError(`The uploaded file \`${stored.label}\` holds no non-empty tensors`);
  return { format: file.format, sha256: stored.sha256, bytes: stored.bytes, tensors, layers };
}
