/**
 * One entry point for activation files of any supported format, chosen by content (magic bytes),
 * never by the file name alone: a zip is a torch.save `.pt`, `\x93NUMPY` is `.npy`, an 8-byte
 * length followed by `{` is safetensors.
 */
import { basename, extname } from 'node:path';
import { FormatError } from '../errors.js';
import type { RawTensor } from './dtypes.js';
import { isNpy, parseNpy } from './npy.js';
import { parseSafetensors } from './safetensors.js';
import { readTorchFile, type MetadataValue, type TorchReadOptions } from './torch.js';

export type ActivationFileFormat = 'safetensors' | 'npy' | 'pt';

export interface ActivationFile {
  format: ActivationFileFormat;
  tensors: Record<string, RawTensor>;
  metadata: Record<string, string>;
  /** Metadata as values where the format has them (`.pt`: numbers stay numbers, NaN included); else the strings. */
  metadataValues: Record<string, MetadataValue>;
}

/** Limits for `.pt` files (the other formats need none beyond their fixed caps). */
export type ReadActivationOptions = Omit<TorchReadOptions, 'source'>;

/**
 * Reads a safetensors, `.npy` or torch.save `.pt` file held in memory. A `.npy` file's one tensor
 * is named after the file (`layer3.npy` → `layer3`).
 * @example
 * const { format, tensors } = readActivationFile(await readFile(path), path);
 */
export function readActivationFile(bytes: Uint8Array, fileName: string, options: ReadActivationOptions = {}): ActivationFile {
  const source = fileName;
  // PK\x03\x04 (a zip) or PK\x05\x06 (an empty zip, refused by the torch reader with a clear message).
  if (bytes[0] === 0x50 && bytes[1] === 0x4b && ((bytes[2] === 3 && bytes[3] === 4) || (bytes[2] === 5 && bytes[3] === 6))) {
    return { format: 'pt', ...readTorchFile(bytes, { ...options, source }) };
  }
  if (isNpy(bytes)) {
    const name = basename(fileName, extname(fileName)) || 'tensor';
    return { format: 'npy', tensors: { [name]: parseNpy(bytes, source) }, metadata: {}, metadataValues: {} };
  }
  // A pickle (PROTO opcode) is a legacy torch.save file: the torch reader explains how to re-save it.
  if (bytes[0] === 0x80) return { format: 'pt', ...readTorchFile(bytes, { ...options, source }) };
  if (bytes.byteLength >= 9 && bytes[8] === 0x7b) {
    const { header, tensors } = parseSafetensors(bytes, source);
    return { format: 'safetensors', tensors, metadata: header.metadata, metadataValues: { ...header.metadata } };
  }
  throw new FormatError(`${source}: unrecognised file format; expected safetensors (8-byte length then '{'), .npy (\\x93NUMPY) or a torch.save .pt zip (PK\\x03\\x04)`);
}
