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
