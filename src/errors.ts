/**
 * Every error mechint throws is a MechIntError with a stable `code` (listed in docs/errors.md),
 * an HTTP status for the server, and the underlying `cause` where there is one.
 */
export class MechIntError extends Error {
  readonly code: string;
  readonly statusCode: number;
  constructor(code: string, message: string, options: { statusCode?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.statusCode = options.statusCode ?? 500;
  }
}

/** A config option has a value it cannot take. */
export class ConfigError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_CONFIG', message, { statusCode: 400 });
  }
}

/** A layer path does not exist in the model. */
export class LayerNotFoundError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_LAYER_NOT_FOUND', message, { statusCode: 404 });
  }
}

/** A file is not in the format it claims to be, or breaks that format's rules. */
export class FormatError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_FORMAT', message, { statusCode: 400, ...options });
  }
}

/** A file asks for more than a safety limit allows (bytes, tensors, nesting, shape). */
export class LimitError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_LIMIT', message, { statusCode: 413 });
  }
}

/** A shard's bytes do not match the sha256 the manifest recorded. */
export class ShardChecksumError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_SHARD_CHECKSUM', message, { statusCode: 500 });
  }
}

/** A path holds no shards. */
export class NoShardsError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_NO_SHARDS', message, { statusCode: 404 });
  }
}

/** The manifest cannot be read or does not have the expected shape. */
export class ManifestError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_MANIFEST', message, { statusCode: 500, ...options });
  }
}

/** An activation a hook captured cannot be stored (not a tensor, no batch dimension). */
export class CaptureError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_CAPTURE', message, { statusCode: 500 });
  }
}

/** A pickle (e.g. a `.pt` file's data.pkl) uses an opcode or global outside the allowlist; nothing from it was run. */
export class UnsafePickleError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_UNSAFE_PICKLE', message, { statusCode: 400 });
  }
}

/** An analysis was given too few rows (or units) to compute what it reports. */
export class InsufficientDataError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_INSUFFICIENT_DATA', message, { statusCode: 422 });
  }
}

/** A model checkpoint cannot be written, or the metric it monitors is missing from the training logs. */
export class CheckpointError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_CHECKPOINT', message, { statusCode: 500, ...options });
  }
}

/** The S3 bucket named by `s3_bucket` (or an s3:// URL) does not exist at the endpoint. */
export class S3BucketMissingError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_S3_BUCKET_MISSING', message, { statusCode: 404, ...options });
  }
}

/** S3 refused the credentials from the standard AWS chain (wrong key, no permission on the bucket or prefix). */
export class S3AccessDeniedError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_S3_ACCESS_DENIED', message, { statusCode: 403, ...options });
  }
}

/** The S3 endpoint cannot be reached, does not answer in time, or answers with a server error. */
export class S3EndpointError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_S3_ENDPOINT', message, { statusCode: 502, ...options });
  }
}

/** An upload finished but S3 holds something else (size or checksum differ), or shards are still not uploaded. */
export class S3UploadError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_S3_UPLOAD', message, { statusCode: 502, ...options });
  }
}

/** A request lacks `Authorization: Bearer <key>` or carries the wrong key (the server has an API key). */
export class UnauthorizedError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_UNAUTHORIZED', message, { statusCode: 401 });
  }
}

/** An upload or request body is larger than the server's limit. */
export class UploadTooLargeError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_UPLOAD_TOO_LARGE', message, { statusCode: 413, ...options });
  }
}

/** A request or uploaded file is of a type the server does not take (by content type or magic bytes). */
export class UnsupportedMediaError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_UNSUPPORTED_MEDIA', message, { statusCode: 415, ...options });
  }
}

/** No job has this id (it never existed, or finished long enough ago to be forgotten). */
export class JobNotFoundError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_JOB_NOT_FOUND', message, { statusCode: 404 });
  }
}

/** A request body, field or parameter is malformed or missing. */
export class BadRequestError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_BAD_REQUEST', message, { statusCode: 400, ...options });
  }
}

/** An analysis needs a model (or eval data) that the server was not started with. */
export class ModelRequiredError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_MODEL_REQUIRED', message, { statusCode: 422 });
  }
}

/** A job was cancelled (DELETE /interpret/jobs/:id) before it finished. */
export class JobCancelledError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_JOB_CANCELLED', message, { statusCode: 409 });
  }
}

/** Too many analysis jobs are waiting; retry later. */
export class ServerBusyError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_SERVER_BUSY', message, { statusCode: 503 });
  }
}

/** No route answers this method and path. */
export class RouteNotFoundError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_ROUTE_NOT_FOUND', message, { statusCode: 404 });
  }
}

/** Something failed that is not the client's fault (a worker crashed, an unexpected exception). */
export class InternalServerError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_INTERNAL', message, { statusCode: 500, ...options });
  }
}

/** Another writer (a training run, `mechint sync`) holds the lock of this storage path; names its pid, host and start time. */
export class StorageLockedError extends MechIntError {
  /** What the lock file says of the writer holding it. */
  readonly holder: { pid: number; hostname: string; started: string; lock: string };
  constructor(message: string, holder: { pid: number; hostname: string; started: string; lock: string }) {
    super('MECHINT_ERR_STORAGE_LOCKED', message, { statusCode: 409 });
    this.holder = holder;
  }
}

/** The storage path cannot be written: disk full (ENOSPC, EDQUOT), read-only (EROFS), no permission (EACCES, EPERM), an I/O error. */
export class StorageError extends MechIntError {
  /** The system error code (`ENOSPC`, `EROFS`, ...), when there was one. */
  readonly errno: string | null;
  /** The file or directory the failed operation was on. */
  readonly path: string;
  constructor(message: string, options: { errno?: string | null; path: string; cause?: unknown }) {
    super('MECHINT_ERR_STORAGE', message, { statusCode: options.errno === 'ENOSPC' || options.errno === 'EDQUOT' ? 507 : 500, cause: options.cause });
    this.errno = options.errno ?? null;
    this.path = options.path;
  }
}

/** A shard the manifest lists is not on disk (or not in the store); `allowMissing: true` reads the others and reports it. */
export class ShardMissingError extends MechIntError {
  /** The listed files that are missing. */
  readonly files: string[];
  constructor(message: string, files: string[]) {
    super('MECHINT_ERR_SHARD_MISSING', message, { statusCode: 404 });
    this.files = files;
  }
}

/** A shard metadata value cannot be stored faithfully (a tensor, a typed array, a class instance, a function). */
export class MetadataError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_METADATA', message, { statusCode: 400 });
  }
}

/** An analysis job ran longer than the server's per-job limit (`jobs.timeoutMs`, `mechint serve --job-timeout`); its worker was stopped. */
export class JobTimeoutError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_JOB_TIMEOUT', message, { statusCode: 504 });
  }
}

/** As many uploads as the server takes at once (`maxConcurrentUploads`) are already in progress; retry after the `Retry-After` seconds. */
export class TooManyUploadsError extends MechIntError {
  /** Seconds the client should wait before retrying (sent as `Retry-After`). */
  readonly retryAfterS: number;
  constructor(message: string, retryAfterS = 1) {
    super('MECHINT_ERR_TOO_MANY_UPLOADS', message, { statusCode: 503 });
    this.retryAfterS = retryAfterS;
  }
}

/** An analysis needs another analysis' result on the same layer (steering ← sae), and that one failed. */
export class DependencyError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_DEPENDENCY', message, { statusCode: 422, ...options });
  }
}

/** Every row an analysis would read holds NaN or ±Infinity (rows that do are excluded and counted). */
export class NonFiniteError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_NON_FINITE', message, { statusCode: 422 });
  }
}

/** The job queue (Redis, `mechint serve --queue`) cannot be reached within its timeout; retry once it is back. */
export class QueueUnavailableError extends MechIntError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('MECHINT_ERR_QUEUE_UNAVAILABLE', message, { statusCode: 503, ...options });
  }
}

/** The job queue already holds its limit of waiting jobs (`maxQueued` of the Redis queue); retry later. */
export class QueueFullError extends MechIntError {
  constructor(message: string) {
    super('MECHINT_ERR_QUEUE_FULL', message, { statusCode: 429 });
  }
}
