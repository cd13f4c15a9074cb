/**
 * A real S3-compatible server (s3rver) on 127.0.0.1 for the S3 tests: in-process, or as a child
 * process that a test can SIGKILL, SIGSTOP and restart on the same port and directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { after } from 'node:test';
import S3rver from 's3rver';
import { S3Store } from '../src/storage/s3-store.js';
import { tempDir } from './helpers.js';

// The standard AWS chain reads these; s3rver knows the key pair S3RVER/S3RVER. Never any real AWS.
process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
process.env.AWS_REGION = 'us-east-1';
process.env.AWS_EC2_METADATA_DISABLED = 'true';
delete process.env.AWS_PROFILE;
delete process.env.AWS_SESSION_TOKEN;

export const BUCKET = 'mechint-test';

export interface S3Server {
  endpoint: string;
  port: number;
  directory: string;
}

/** s3rver in this process, on a free port, with a fresh directory and the test bucket; closed after the file. */
export async function startS3rver(buckets = [BUCKET]): Promise<S3Server> {
  const directory = await tempDir('mechint-s3rver-');
  const server = new S3rver({ port: 0, address: '127.0.0.1', directory, silent: true, configureBuckets: buckets.map((name) => ({ name })) });
  const { port } = await server.run();
  after(() => server.close());
  return { endpoint: `http://127.0.0.1:${port}`, port, directory };
}

export interface ChildS3Server extends S3Server {
  proc: ChildProcess;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port and directory (after kill). */
  restart(): Promise<void>;
  pause(): void;
  resume(): void;
}

function spawnChild(directory: string, port: number, buckets: string[]): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/s3rver-child.ts', directory, String(port), ...buckets], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`s3rver child did not start: ${err}`)), 30_000);
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = /listening (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, port: Number(m[1]) });
      }
    });
    proc.stderr!.on('data', (d) => (err += d));
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver child exited (${code}): ${err}`));
    });
  });
}

/** s3rver as a child process; killed after the file. */
export async function startS3rverChild(buckets = [BUCKET]): Promise<ChildS3Server> {
  const directory = await tempDir('mechint-s3rver-');
  const first = await spawnChild(directory, 0, buckets);
  const s: ChildS3Server = {
    endpoint: `http://127.0.0.1:${first.port}`,
    port: first.port,
    directory,
    proc: first.proc,
    async kill() {
      if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
      const exited = new Promise<void>((r) => s.proc.once('exit', () => r()));
      s.proc.kill('SIGKILL');
      await exited;
    },
    async restart() {
      s.proc = (await spawnChild(directory, s.port, buckets)).proc;
    },
    pause: () => void s.proc.kill('SIGSTOP'),
    resume: () => void s.proc.kill('SIGCONT'),
  };
  after(() => s.kill());
  return s;
}

/** A store for checking what the server holds (a client of its own, with SDK retries). */
export function inspectStore(endpoint: string, prefix: string, bucket = BUCKET): S3Store {
  const store = new S3Store({ bucket, prefix, endpoint, forcePathStyle: true, requestTimeoutMs: 10_000 });
  after(() => store.destroy());
  return store;
}

/** sha256 of every object under the store's prefix, by key. */
export async function objectHashes(store: S3Store): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const o of await store.list()) out.set(o.key, createHash('sha256').update(await store.getBytes(o.key)).digest('hex'));
  return out;
}
