/** mechint's public API. */
export * from './errors.js';
export { initBackend, type BackendName } from './backend.js';
export {
  MechIntConfig,
  DEFAULTS,
  ANALYSIS_NAMES,
  STORAGE_BACKENDS,
  SNAKE_CASE_KEYS,
  type MechIntOptions,
  type SnakeCaseOptions,
  type MechIntConfigInput,
  type AnalysisName,
  type StorageBackend,
} from './config.js';
export { MANIFEST_FILE, SHARD_FILE_PATTERN, shardFileName, parseShardFileName } from './constants.js';
export { createLogger, type Logger } from './logger.js';

// Formats
export { type DType, type RawTensor, toFloat32, fromFloat32, numel } from './formats/dtypes.js';
export { serializeSafetensors, parseSafetensors, readSafetensorsHeader, type SafetensorsHeader, type SafetensorsEntry } from './formats/safetensors.js';
export { readActivationFile, type ActivationFile, type ActivationFileFormat, type ReadActivationOptions } from './formats/read-any.js';
export { readTorchFile, type TorchReadOptions, type ActivationData } from './formats/torch.js';
export { parseNpy, serializeNpy, isNpy } from './formats/npy.js';
export { unpickle, type PickleLimits, type UnpickleOptions } from './formats/pickle.js';

// Capture
export { namedLayers, listLayerPaths, getLayerByPath, autoDetectLayers, type NamedLayer, type DetectedLayers } from './capture/modules.js';
export { ActivationSampler, pickActivation, type ActivationSamplerOptions, type SamplerStatistics } from './capture/sampler.js';
export { MechIntHooks, type TrainingStepInfo } from './capture/hooks.js';
export { MechIntCallback } from './capture/callback.js';

// Storage
export { ShardWriter, type ShardWriterOptions, type ShardInput, type LayerBlock } from './storage/shard-writer.js';
export { ShardReader, loadLayerMatrix, type ShardInfo, type LayerSummary, type OpenShardsOptions } from './storage/shard-reader.js';
export { readManifest, parseManifest, type Manifest, type ShardRecord, type UploadState } from './storage/manifest.js';
export { writeFileAtomic, sha256File } from './storage/atomic.js';
export { rowsFromMatrix, type RowBatch, type RowSource } from './storage/rows.js';
