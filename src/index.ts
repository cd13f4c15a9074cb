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
export { readTorchFile, openTorchFile, TorchFile, type TorchReadOptions, type ActivationData, type MetadataValue, type TensorInfo, type RowRange } from './formats/torch.js';
export { encodeTorchFile, writeTorchFile, torchShardValue, isTorchTensor, type TorchShard, type TorchValue, type TorchTensorInput, type TorchTensorBytes, type TorchTensorChunks, type TorchWriteOptions, type TorchFileWriteOptions, type TorchWriteResult } from './formats/torch-writer.js';
export { openActivationFile, type ActivationFileReader, type OpenActivationOptions } from './formats/open-any.js';
export { readFloat32OffThread, type Float32File, type Float32Tensor, type ThreadReadOptions } from './formats/read-thread.js';
export { parseNpy, serializeNpy, isNpy } from './formats/npy.js';
export { unpickle, type PickleLimits, type UnpickleOptions } from './formats/pickle.js';

// Capture
export { namedLayers, listLayerPaths, getLayerByPath, autoDetectLayers, type NamedLayer, type DetectedLayers } from './model/layer-paths.js';
export { ActivationSampler, type ActivationSamplerOptions, type SamplerStatistics, type BatchData, type BatchTensors } from './capture/sampler.js';
export { withSampleIds, tagSampleIds } from './capture/model-data.js';
export {
  PROVENANCE_COLUMNS,
  AUX_METADATA_KEY,
  auxTensorName,
  isAuxTensorName,
  provenanceRow,
  rowOrigin,
  type AuxRef,
  type AuxKind,
  type RowProvenance,
  type RowOrigin,
  type RowRef,
  type SampleTensor,
  type ShardProvenance,
} from './storage/provenance.js';
export { MechIntHooks, type TrainingStepInfo } from './capture/hooks.js';
export { MechIntCallback } from './capture/callback.js';

// Storage
export { ShardWriter, type ShardWriterOptions, type ShardInput, type LayerBlock, type ShardFileFormat } from './storage/shard-writer.js';
export { ShardReader, loadLayerMatrix, type ShardInfo, type LayerSummary, type OpenShardsOptions, type CorruptShard } from './storage/shard-reader.js';
export {
  readManifest, readManifestFile, parseManifest, emptyManifest, parseAnyManifest, writeManifest, journalFileName, manifestsInDir, MANIFEST_NAME_PATTERN, ORIGINAL_MANIFEST_PATTERN,
  type Manifest, type ShardRecord, type UploadState, type ShardPatch, type JournalEntry, type ManifestFailure, type OriginalManifest, type AnyManifest,
} from './storage/manifest.js';
export { ManifestLog, COMPACT_MIN, type JournalEntryInput } from './storage/manifest-log.js';
export { WriterLock, lockFileName, type LockInfo } from './storage/writer-lock.js';
export { encodeUserMetadata, decodeShardMetadata, stringifyMetadataJson, parseMetadataJson, JSON_KEYS, RESERVED_METADATA_KEYS } from './storage/metadata.js';
export { toStorageError } from './storage/storage-errors.js';
export { captureLogger } from './capture/sampler.js';
export { inspectPath, formatInspect, type InspectReport, type InspectOptions } from './cli/inspect.js';
export { writeFileAtomic, sha256File } from './storage/atomic.js';
export { rowsFromMatrix, type RowBatch, type RowSource } from './storage/rows.js';

// Analysis
export { AnalysisRunner, type EvalRunnerOptions, type RunMechintEvalArgs, type EvalResults } from './analysis/runner.js';
export { getAnalysis, analysisNames, registerAnalysis } from './analysis/registry.js';
export type { AnalysisContext, AnalysisProgress, Covariate, EvalData } from './analysis/types.js';
export { defineAnalysis, type AnalysisDefinition, type AnalysisNeeds } from './analysis/definition.js';
export { isAnalysisError, type AnalysisResultMap, type AnalysisResults, type AnalysisErrorResult, type LayerResults } from './analysis/results.js';
export { executeAnalyses, findStoredResult, resultKey, type ExecuteRequest, type ExecuteEnv, type ExecuteOutcome, type ExecutedResult, type LayerSource } from './analysis/executor.js';
export { readerSource, matrixSource } from './analysis/sources.js';
export { ManifestResultsStore, MemoryResultsStore, type ResultsStore, type StoredResult, type StoredResultRecord } from './analysis/results-store.js';
export { defineOptions, int, num, bool, oneOf, str, strings, numbers, orLiteral, integer, boolean, snakeCase, type Field, type OptionsSchema, type OptionValues, type OptionInput } from './options.js';
export { registerLayerModule, loadModelFrom, layerModules } from './model/registry.js';
export { modelFingerprint, evalDataFingerprint } from './model/fingerprint.js';
export { runNeuronAnalysis, type NeuronAnalysisOptions, type NeuronAnalysisResult } from './analysis/neuron.js';
export { runFeatureAnalysis, kmeans, adjustedRandIndex, type FeatureAnalysisOptions, type FeatureAnalysisResult, type ClusterResult } from './analysis/feature.js';
export { symmetricEigen, CovarianceAccumulator } from './analysis/linalg.js';
export { runSaeAnalysis, type SaeResult, type SaeContext, type SaeEpochInfo } from './analysis/sae.js';
export { resolveSaeOptions, type SaeOptions, type ResolvedSaeOptions, type SaeNormalize } from './analysis/sae-options.js';
export { loadSae, saveSae, encodeSae, decodeSae, saeWeightsPath, SAE_WEIGHTS_DIR, type SaeWeights } from './analysis/sae-weights.js';
export { SAE_ARCHITECTURES, getSaeArchitecture } from './analysis/sae-registry.js';
export type { SaeArchitecture, SaeArchitectureName } from './analysis/sae-common.js';
export type { TopLatent, TopRow } from './analysis/sae-top-rows.js';
export { createRng, type Rng } from './random.js';

// Report
export { EvalMechIntRunner, type ExportedFiles } from './report/eval-runner.js';
export { renderMarkdown } from './report/markdown.js';
export { runProbeAnalysis, alignForProbe, type ProbeOptions, type ProbeResult, type ProbeTargetResult } from './analysis/probe.js';
export { crossValidatedR2 } from './analysis/ridge.js';
export { withIntervention, ablateUnits, patchActivations, addDirection, recordActivations, predictAll, type InterventionFn, type RecordedActivation } from './model/interventions.js';
export { hookLayerCall, type OutputHook } from './model/layer-hook.js';
export { silhouetteScore, type KMeansOptions, type KMeansResult } from './analysis/kmeans.js';
export { runDynamicsAnalysis, type DynamicsResult, type StepSummary } from './analysis/dynamics.js';
export { analysesFor } from './analysis/runner.js';
export { runCausalAnalysis, resolveCausalOptions, type CausalOptions, type CausalResult, type UnitEffect, type PatchingResult } from './analysis/causal.js';
export { runCircuitAnalysis, resolveCircuitOptions, type CircuitOptions, type CircuitResult, type CircuitNode, type CircuitEdge } from './analysis/circuit.js';
export { steer, runSteeringAnalysis, resolveSteeringOptions, type SteerOptions, type SteeringCurve, type SteeringHeadCurve, type SteeringOptions, type SteeringResult, type SteeredLatent } from './analysis/steering.js';
export { runCardsAnalysis, cardsOptions, type CardsOptions, type CardsResult, type LatentCard, type BestCovariate, type TopExample } from './analysis/cards.js';
export type { InputWindow } from './analysis/cards-context.js';
export { corruptInputs, CORRUPTIONS } from './model/model-runs.js';
export { withInterventionSync, tileBatch, replaceUnitsPerVariant, addDirectionPerVariant, watchLayer } from './model/interventions.js';
export { renderHtml, markdownToHtml } from './report/html.js';
export { analysisTitle } from './report/sections.js';
export { sectionLines, registerView, viewFor, type AnalysisView } from './report/views.js';
export { renderSvg, type Chart, type ChartSpec } from './report/charts.js';

// Storage backends
export { LocalStore, S3Store, storeFromUrl, parseS3Url, isS3Url, streamToBuffer, type Store, type ObjectInfo, type ByteRange, type PutBody, type PutOptions } from './storage/store.js';
export type { S3StoreOptions } from './storage/s3-store.js';
export { UploadQueue, type UploadQueueOptions, type UploadQueueStats, type UploadJob } from './storage/upload-queue.js';
export { ShardUploader, type UploadWaitResult } from './storage/shard-uploader.js';
export { syncDirectory, type SyncOptions, type SyncReport } from './storage/sync.js';
export { remoteFromConfig, s3StoreOptions } from './storage/remote-config.js';
export type { ShardRemoteOptions } from './storage/shard-writer.js';

// Model files and the embedded demo
export { fileSystem, registerFileRouter } from './model/file-handler.js';
export { ModelCheckpoint, readCheckpointInfo, type ModelCheckpointOptions, type CheckpointInfo, type CheckpointMode } from './model/checkpoint.js';
export { generateSyntheticNeuralData, splitTrials, selectTrials, type SyntheticDataOptions, type SyntheticNeuralData, type SplitOptions } from './demo/synthetic.js';
export {
  createNeuroFMXMini, compileNeuroFMXMini, buildFitData, toModelInput, evaluateBehaviorR2, rSquared, loadNeuroFMXMini, registerNeuroFMXMiniLayers,
  maskedPoissonLoss, meanSquaredErrorLoss, selectiveScan, NEUROFMX_MINI_LAYER_PATHS, NEUROFMX_MINI_DEMO_DEFAULTS,
  PopulationTokenizer, SelectiveSSMBlock, PerceiverCrossAttention, PopTAggregator, BehaviorReadout,
  type NeuroFMXMiniOptions, type CompileOptions, type FitData, type FitDataOptions,
} from './demo/neurofmx-mini.js';
export { runDemo, DEMO_LAYERS, type DemoOptions, type DemoSummary, type DemoProgress } from './demo/run.js';

// Server
export { buildApp, resolveApiKey, DEFAULT_HOST, DEFAULT_PORT, type BuildAppOptions } from './server/app.js';
export { clientSignal } from './server/limits.js';
export { mechintRoutes, type MechIntRoutesOptions } from './server/routes.js';
export { CacheIndex, type CacheIndexOptions, type LayerView } from './server/cache-index.js';
export { JobManager, type JobManagerOptions, type JobView, type JobState, type JobSubmitMeta, type JobCloseOptions } from './server/jobs.js';
export { type JobQueue, type QueueHealth } from './server/job-queue.js';
export { RedisJobQueue, type RedisJobQueueOptions } from './server/redis-queue.js';
export { startQueueWorker, type QueueWorkerOptions, type QueueWorkerHandle } from './server/queue-worker.js';
export { API_KEY_ENV } from './server/auth.js';
export { executionOrder } from './model/interventions.js';
export { causalChart, circuitChart, steeringChart, saeLatentsChart, latentHistogramChart } from './report/charts.js';
export { dashboardRoutes, DASHBOARD_PUBLIC_PATHS, type DashboardOptions } from './server/dashboard.js';
export { HISTOGRAM_BINS, type ActivationHistogram } from './analysis/sae-top-rows.js';
export { writeEvalDataFile, readEvalDataFile } from './report/eval-data-file.js';
export { writeInteropExports, writeSaelensSae, cardsJsonl } from './report/saelens-export.js';
export { dynamicsCurvesChart } from './report/charts.js';
export { meanMaxCosineSimilarity } from './analysis/sae-metrics.js';
export { plantedSuperposition, type SuperpositionOptions } from './demo/superposition.js';
