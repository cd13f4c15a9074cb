/**
 * What an uploaded object must look like to count as confirmed: its size, and an ETag equal to
 * the MD5 of the bytes (single-part upload, or servers such as s3rver that hash whole objects)
 * or to the S3 multipart form, MD5 of the parts' MD5s and "-N".
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { ObjectInfo } from './store.js';

export interface ExpectedObject {
  bytes: number;
  /** sha256 recorded in the manifest; also sent as `x-amz-meta-sha256`. */
  sha256: string;
  md5: string;
  /** ETag of a multipart upload with the store's part size; null when it would be a single part. */
  multipartEtag: string | null;
}

/** MD5 of a file, whole and per part of `partSize`, in one pass. */
export async function fileDigests(path: string, partSize: number): Promise<{ bytes: number; md5: string; multipartEtag: string | null }> {
  const whole = createHash('md5');
  const partMd5s: Buffer[] = [];
  let part = createHash('md5');
  let inPart = 0;
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    let buf = chunk as Buffer;
    whole.update(buf);
    bytes += buf.length;
    while (buf.length > 0) {
      const take = Math.min(buf.length, partSize - inPart);
      part.update(buf.subarray(0, take));
      inPart += take;
      buf = buf.subarray(take);
      if (inPart === partSize) {
        partMd5s.push(part.digest());
        part = createHash('md5');
        inPart = 0;
      }
    }
  }
  if (inPart > 0) partMd5s.push(part.digest());
  const multipartEtag = bytes > partSize ? `${createHash('md5').update(Buffer.concat(partMd5s)).digest('hex')}-${partMd5s.length}` : null;
  return { bytes, md5: whole.digest('hex'), multipartEtag };
}

export function bytesDigests(bytes: Uint8Array): { md5: string; sha256: string } {
  return { md5: createHash('md5').update(bytes).digest('hex'), sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** Why `info` is not the expected object; null when it is. */
export function mismatch(info: ObjectInfo | null, expected: ExpectedObject): string | null {
  if (!info) return 'the object is not there';
  if (info.size !== expected.bytes) return `it holds ${info.size} bytes, expected ${expected.bytes}`;
  const recorded = info.metadata.sha256;
  if (recorded !== undefined && recorded !== expected.sha256) return `its recorded sha256 ${recorded} is not ${expected.sha256}`;
  if (info.etag !== null && info.etag !== expected.md5 && info.etag !== expected.multipartEtag) {
    return `its ETag ${info.etag} is neither the MD5 ${expected.md5}${expected.multipartEtag ? ` nor the multipart ETag ${expected.multipartEtag}` : ''} of the local bytes`;
  }
  return null;
}
