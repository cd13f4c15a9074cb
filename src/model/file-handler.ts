/**
 * Saving and loading tfjs models on the local disk without @tensorflow/tfjs-node: the same
 * `model.json` + `weights.bin` layout that tfjs-node's `file://` handler writes, so either can
 * read the other's files.
 *
 *   await model.save(fileSystem('ckpt/best'));
 *   const m = await tf.loadLayersModel(fileSystem('ckpt/best/model.json'));
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { tf } from '../backend.js';
import { FormatError } from '../errors.js';
import { syncDir, writeFileAtomic } from '../storage/atomic.js';

export const MODEL_JSON_FILE = 'model.json';
export const WEIGHTS_BIN_FILE = 'weights.bin';

type ModelArtifacts = tf.io.ModelArtifacts;
type ModelJSON = tf.io.ModelJSON;

/** `dir` or `dir/model.json` → both. */
function resolvePaths(location: string): { dir: string; modelJson: string } {
  const loc = location.startsWith('file://') ? location.slice('file://'.length) : location;
  if (loc.endsWith('.json')) return { dir: path.dirname(loc), modelJson: loc };
  return { dir: loc, modelJson: path.join(loc, MODEL_JSON_FILE) };
}

function toUint8(data: tf.io.WeightData | undefined): Uint8Array {
  if (data === undefined) return new Uint8Array(0);
  return new Uint8Array(tf.io.CompositeArrayBuffer.join(data));
}

/** A weights path from a model.json must stay inside the model's directory. */
function weightsFile(dir: string, modelJson: string, p: string): string {
  if (path.isAbsolute(p) || p.split(/[\\/]/).includes('..')) {
    throw new FormatError(`${modelJson}: weights path \`${p}\` must be a relative path inside ${dir}`);
  }
  return path.join(dir, p);
}

class FileSystemHandler implements tf.io.IOHandler {
  constructor(private readonly dir: string, private readonly modelJson: string) {}

  async save(artifacts: ModelArtifacts): Promise<tf.io.SaveResult> {
    const topology = artifacts.modelTopology;
    if (topology == null || topology instanceof ArrayBuffer) {
      throw new FormatError('fileSystem() saves models with a JSON topology only (got none or a binary one)');
    }
    await fs.mkdir(this.dir, { recursive: true });
    const weights = toUint8(artifacts.weightData);
    const weightsName = WEIGHTS_BIN_FILE;
    const modelJSON: ModelJSON = {
      modelTopology: topology,
      format: artifacts.format,
      generatedBy: artifacts.generatedBy,
      convertedBy: artifacts.convertedBy,
      weightsManifest: [{ paths: [weightsName], weights: artifacts.weightSpecs ?? [] }],
    };
    if (artifacts.trainingConfig != null) modelJSON.trainingConfig = artifacts.trainingConfig;
    if (artifacts.signature != null) modelJSON.signature = artifacts.signature;
    if (artifacts.userDefinedMetadata != null) modelJSON.userDefinedMetadata = artifacts.userDefinedMetadata;
    if (artifacts.modelInitializer != null) modelJSON.modelInitializer = artifacts.modelInitializer;
    if (artifacts.initializerSignature != null) modelJSON.initializerSignature = artifacts.initializerSignature;
    // Weights first, model.json last: a model.json on disk always points at complete weights.
    await writeFileAtomic(path.join(this.dir, weightsName), [weights], { syncDir: false });
    await writeFileAtomic(this.modelJson, [Buffer.from(JSON.stringify(modelJSON))], { syncDir: false });
    await syncDir(this.dir);
    return {
      modelArtifactsInfo: {
        dateSaved: new Date(),
        modelTopologyType: 'JSON',
        modelTopologyBytes: Buffer.byteLength(JSON.stringify(artifacts.modelTopology ?? null), 'utf8'),
        weightSpecsBytes: Buffer.byteLength(JSON.stringify(artifacts.weightSpecs ?? []), 'utf8'),
        weightDataBytes: weights.byteLength,
      },
    };
  }

  async load(): Promise<ModelArtifacts> {
    let text: string;
    try {
      text = await fs.readFile(this.modelJson, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const hint = code === 'ENOENT' ? ' (no such file; save a model there first, or pass the directory that holds model.json)' : '';
      throw new FormatError(`Cannot read ${this.modelJson}${hint}`, { cause: err });
    }
    let modelJSON: ModelJSON;
    try {
      modelJSON = JSON.parse(text) as ModelJSON;
    } catch (err) {
      throw new FormatError(`${this.modelJson} is not valid JSON`, { cause: err });
    }
    if (modelJSON === null || typeof modelJSON !== 'object' || modelJSON.modelTopology == null) {
      throw new FormatError(`${this.modelJson} has no \`modelTopology\`; it is not a tfjs model.json`);
    }
    return tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
      const specs: tf.io.WeightsManifestEntry[] = [];
      const parts: Uint8Array[] = [];
      for (const group of manifest) {
        for (const p of group.paths) {
          const file = weightsFile(this.dir, this.modelJson, p);
          try {
            parts.push(await fs.readFile(file));
          } catch (err) {
            throw new FormatError(`${this.modelJson} lists weights file ${file}, which cannot be read`, { cause: err });
          }
        }
        specs.push(...group.weights);
      }
      const total = parts.reduce((n, b) => n + b.byteLength, 0);
      const joined = new Uint8Array(total);
      let off = 0;
      for (const b of parts) {
        joined.set(b, off);
        off += b.byteLength;
      }
      return [specs, joined.buffer];
    });
  }
}

/**
 * An IOHandler that saves to and loads from the local disk. `location` is a directory (model.json
 * and weights.bin inside it), a path ending in `.json`, or either as a `file://` URL.
 */
export function fileSystem(location: string): tf.io.IOHandler {
  const { dir, modelJson } = resolvePaths(location);
  return new FileSystemHandler(dir, modelJson);
}

let routerRegistered = false;

/**
 * Lets `model.save('file://dir')` and `tf.loadLayersModel('file://dir/model.json')` use
 * fileSystem(). Idempotent; does nothing when another `file://` handler (tfjs-node's) exists,
 * since tfjs refuses URLs that more than one handler claims.
 */
export function registerFileRouter(): void {
  if (routerRegistered) return;
  routerRegistered = true;
  if (tf.io.getSaveHandlers('file:///mechint-probe').length > 0) return;
  // tfjs routers answer null for URLs they do not own, although the IORouter type omits it.
  const route = ((url: string | string[]) => {
    const u = Array.isArray(url) ? url[0] : url;
    return typeof u === 'string' && u.startsWith('file://') ? fileSystem(u) : null;
  }) as unknown as Parameters<typeof tf.io.registerSaveRouter>[0];
  tf.io.registerSaveRouter(route);
  tf.io.registerLoadRouter(route);
}
