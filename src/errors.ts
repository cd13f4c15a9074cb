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
