/**
 * Turns AWS SDK and socket errors into mechint's S3 errors with messages that say what to fix,
 * and tells the upload queue which errors mean "S3 is not answering" (retry later) and which
 * mean "this will not work until someone changes something" (bucket, credentials).
 */
import { MechIntError, S3AccessDeniedError, S3BucketMissingError, S3EndpointError, S3UploadError } from '../errors.js';

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET']);
const NETWORK_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'ServiceUnavailable', 'SlowDown', 'InternalError', 'ThrottlingException']);
const DENIED_NAMES = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken', 'AllAccessDisabled', 'CredentialsProviderError']);

interface Context {
  op: string;
  bucket: string;
  uri: string;
  where: string;
}

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

function describe(err: unknown): string {
  const e = err as Error & { code?: string };
  const code = e?.code && e.code !== e.name ? ` ${e.code}` : '';
  const http = status(err) ? ` (HTTP ${status(err)})` : '';
  return `${e?.name ?? 'Error'}${code}${http}: ${e?.message ?? String(err)}`;
}

export function toS3Error(err: unknown, ctx: Context): MechIntError {
  if (err instanceof MechIntError) return err;
  const e = err as Error & { code?: string; Code?: string };
  const name = e?.name ?? '';
  const http = status(err);
  if (name === 'NoSuchBucket') {
    return new S3BucketMissingError(`Bucket \`${ctx.bucket}\` does not exist${ctx.where}; create it, or fix \`s3_bucket\` / the s3:// URL`, { cause: err });
  }
  if (DENIED_NAMES.has(name) || DENIED_NAMES.has(e?.Code ?? '') || http === 403) {
    return new S3AccessDeniedError(
      `S3 denied ${ctx.op} of ${ctx.uri}${ctx.where} (${name || 'HTTP 403'}); check the credentials the AWS chain finds (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials) and that they may access the bucket and prefix`,
      { cause: err },
    );
  }
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(e?.message ?? '')) {
    return new S3AccessDeniedError(`No AWS credentials found for ${ctx.uri}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials`, { cause: err });
  }
  if (isNetworkError(err)) {
    return new S3EndpointError(`S3 did not answer the ${ctx.op} of ${ctx.uri}${ctx.where}: ${describe(err)}; check \`s3_endpoint\`, the network, or that the server is up`, { cause: err });
  }
  return new S3UploadError(`S3 refused the ${ctx.op} of ${ctx.uri}${ctx.where}: ${describe(err)}`, { cause: err });
}

/** A socket error, a timeout or a 5xx: the endpoint is down, hung or overloaded, not misconfigured. */
export function isNetworkError(err: unknown): boolean {
  const e = err as Error & { code?: string; cause?: unknown };
  if (!e) return false;
  if (e.code && NETWORK_CODES.has(e.code)) return true;
  if (NETWORK_NAMES.has(e.name)) return true;
  const http = status(err);
  if (http !== undefined && http >= 500) return true;
  if (/socket hang up|ECONNREFUSED|ECONNRESET|timed? ?out|EHOSTUNREACH/i.test(e.message ?? '')) return true;
  return e.cause !== undefined && e.cause !== err && isNetworkError(e.cause);
}

/** Errors worth retrying later: the endpoint did not answer (as opposed to a missing bucket or refused credentials). */
export function isTransient(err: unknown): boolean {
  if (err instanceof S3EndpointError) return true;
  if (err instanceof S3BucketMissingError || err instanceof S3AccessDeniedError) return false;
  if (err instanceof MechIntError) return isNetworkError(err.cause);
  return isNetworkError(err);
}
