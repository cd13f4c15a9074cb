/**
 * Hostile and unlucky clients get our 4xx body, never a 500 or Fastify's own: a browser's CORS
 * preflight with an API key set, keys that could never be sent, 5,000-deep JSON, cut-short
 * multipart bodies, an over-long `config` field, a 5,000-character job id, too many uploads at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Command } from 'commander';
import { registerServeCommand } from '../src/cli/serve.js';
import { MechIntError } from '../src/errors.js';
import { serializeNpy } from '../src/formats/npy.js';
import { buildApp } from '../src/server/app.js';
import { tempDir } from './helpers.js';
import { getJson, plantCache, startServer } from './server-helpers.js';

const root = await tempDir('mechint-server-hardening-');
const cache = join(root, 'cache');
await plantCache(cache, 20);
const KEY = 'hardening-key-0123';
const ORIGIN = 'http://dash.example';
const { url } = await startServer({ cache, apiKey: KEY, cors: { origin: [ORIGIN] }, uploadLimit: 64 * 1024 });
const auth = { authorization: `Bearer ${KEY}` };
const port = Number(new URL(url).port);

/** A .npy file of float32 [rows, cols], every value `fill`. */
function npyFile(rows: number, cols: number, fill = 0): Uint8Array<ArrayBuffer> {
  const data = new Uint8Array(new Float32Array(rows * cols).fill(fill).buffer);
  return new Uint8Array(serializeNpy({ shape: [rows, cols], dtype: 'F32', data }));
}

function assertErrorBody(body: Record<string, unknown>, status: number, code = 'MECHINT_ERR_BAD_REQUEST'): void {
  assert.deepEqual(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], JSON.stringify(body).slice(0, 300));
  assert.equal(body.statusCode, status);
  assert.equal(body.code, code, String(body.message));
  assert.ok((body.message as string).length < 400, `a short message: ${(body.message as string).length} characters`);
}

/** Sends raw bytes and returns the status line's code and the body (the socket may be closed by either side). */
function rawRequest(text: string, endAfterMs = 0): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(text);
      if (endAfterMs > 0) setTimeout(() => socket.end(), endAfterMs);
    });
    let data = '';
    socket.on('data', (d: Buffer) => {
      data += d.toString();
      const [head, body] = data.split('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(head ?? '');
      if (body !== undefined && length && Buffer.byteLength(body) >= Number(length[1])) socket.destroy();
    });
    const done = () => {
      const [head = '', body = ''] = data.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), body });
    };
    socket.on('close', done);
    socket.on('error', () => undefined);
  });
}

test('with an API key and CORS, a browser preflight gets 204 and CORS headers, and a 401 carries them too', async () => {
  const pre = await fetch(`${url}/interpret`, { method: 'OPTIONS', headers: { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), ORIGIN);
  assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
  const denied = await fetch(`${url}/interpret/layers`, { headers: { origin: ORIGIN } });
  assert.equal(denied.status, 401);
  assert.equal(denied.headers.get('access-control-allow-origin'), ORIGIN, 'the page can read why it was refused');
  const ok = await fetch(`${url}/interpret/layers`, { headers: { origin: ORIGIN, ...auth } });
  assert.equal(ok.status, 200);
  // Another origin gets no CORS grant (and a preflight is still not a way around the key).
  const other = await fetch(`${url}/interpret/layers`, { headers: { origin: 'http://evil.example', ...auth } });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
});

test('an API key that is empty or holds whitespace is refused at start with a ConfigError that says why', async () => {
  const refuse = async (apiKey: string | undefined, env: string | undefined, pattern: RegExp) => {
    const saved = process.env.MECHINT_API_KEY;
    if (env === undefined) delete process.env.MECHINT_API_KEY;
    else process.env.MECHINT_API_KEY = env;
    try {
      await assert.rejects(buildApp({ cache, ...(apiKey === undefined ? {} : { apiKey }) }), (err: unknown) => {
        assert.ok(err instanceof MechIntError && err.code === 'MECHINT_ERR_CONFIG', String(err));
        assert.match(err.message, pattern);
        return true;
      });
    } finally {
      if (saved === undefined) delete process.env.MECHINT_API_KEY;
      else process.env.MECHINT_API_KEY = saved;
    }
  };
  await refuse('', undefined, /`apiKey`.*empty.*apiKey: null/);
  await refuse('secret key with spaces', undefined, /`apiKey`.*whitespace/);
  await refuse('secret-key-0123\n', undefined, /whitespace at the end.*newline/);
  await refuse(undefined, 'env-secret-key\n', /MECHINT_API_KEY.*whitespace/);
  await refuse(undefined, '   ', /MECHINT_API_KEY.*whitespace/);
});

test('a 5,000-deep JSON body is a 400 with our error body, wherever the nesting is', async () => {
  const deepArray = '['.repeat(5000) + ']'.repeat(5000);
  const deepObject = '{"a":'.repeat(5000) + '1' + '}'.repeat(5000);
  for (const deep of [deepArray, deepObject]) {
    for (const body of [deep, `{"analysis_type":"neuron","layer_name":"layer1","config":${deep}}`, `{"analysis_type":"neuron","layer_name":${deep}}`, `{"analysis_type":${deep},"layer_name":"layer1"}`]) {
      const res = await fetch(`${url}/interpret`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body });
      assert.equal(res.status, 400, body.slice(0, 60));
      assertErrorBody((await res.json()) as Record<string, unknown>, 400);
    }
  }
  // The same nesting in an upload's `config` field.
  const form = new FormData();
  form.append('file', new Blob([npyFile(4, 2)]), 'a.npy');
  form.append('analysis_type', 'neuron');
  form.append('config', deepArray);
  const res = await fetch(`${url}/interpret/upload`, { method: 'POST', headers: auth, body: form });
  assert.equal(res.status, 400);
  const body = (await res.json()) as Record<string, unknown>;
  assertErrorBody(body, 400);
  assert.match(body.message as string, /`config`.*deep/);
});

test('a multipart body cut short or malformed is a 400 with our error body', async () => {
  const head = (length: number, type = 'multipart/form-data; boundary=XX') =>
    `POST /interpret/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\n\r\n`;
  const partial = '--XX\r\nContent-Disposition: form-data; name="analysis_type"\r\n\r\nneuron\r\n--XX\r\nContent-Disposition: form-data; name="file"; filename="a.npy"\r\nContent-Type: application/octet-stream\r\n\r\n\x93NUMPY';
  const unterminatedField = '--XX\r\nContent-Disposition: form-data; name="analysis_type"\r\n\r\nneu';
  const noBoundary = 'no parts at all';
  for (const [text, what] of [
    [head(partial.length) + partial, 'a file part without its closing boundary'],
    [head(unterminatedField.length) + unterminatedField, 'a field without its closing boundary'],
    [head(noBoundary.length) + noBoundary, 'a body without the boundary'],
    [head(noBoundary.length, 'multipart/form-data') + noBoundary, 'a content type without a boundary'],
  ] as const) {
    const res = await rawRequest(text);
    assert.equal(res.status, 400, `${what}: ${res.body}`);
    assertErrorBody(JSON.parse(res.body) as Record<string, unknown>, 400);
  }
  // The client stops sending before Content-Length is reached: still a 4xx, never a 500.
  const cut = await rawRequest(head(partial.length + 1000) + partial, 200);
  assert.ok(cut.status === 0 || (cut.status >= 400 && cut.status < 500), `cut short: ${cut.status} ${cut.body}`);
  if (cut.status !== 0) assertErrorBody(JSON.parse(cut.body) as Record<string, unknown>, cut.status);
});

test('an upload `config` over 65,536 characters is refused with a message saying so, never silently cut short', async () => {
  const npy = npyFile(4, 2);
  const upload = async (config: string) => {
    const form = new FormData();
    form.append('file', new Blob([npy]), 'a.npy');
    form.append('analysis_type', 'neuron');
    form.append('config', config);
    const res = await fetch(`${url}/interpret/upload`, { method: 'POST', headers: auth, body: form });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };
  const padded = (n: number, ch: string) => {
    const shell = '{"pad":""}';
    return `{"pad":"${ch.repeat(n - shell.length)}"}`;
  };
  for (const [config, what] of [
    [padded(70_000, 'x'), 'ASCII'],
    [padded(300_000, 'x'), 'over the parser field size'],
    [padded(70_000, 'é'), 'two-byte characters'],
  ] as const) {
    const big = await upload(config);
    assert.equal(big.status, 400, `${what}: ${JSON.stringify(big.json).slice(0, 200)}`);
    assertErrorBody(big.json, 400);
    assert.match(big.json.message as string, /`config` to be at most 65536 characters/);
  }
  // Exactly 65,536 characters, even four-byte ones (256 KiB), arrive whole: the analysis sees the option.
  for (const ch of ['x', '😀']) {
    const config = `{"pad":"${ch.repeat(65_536 - '{"pad":""}'.length)}"}`;
    assert.equal([...config].length, 65_536);
    const whole = await upload(config);
    assert.equal(whole.status, 400, JSON.stringify(whole.json).slice(0, 200));
    assert.equal(whole.json.code, 'MECHINT_ERR_CONFIG', `parsed whole, then refused as an unknown option: ${String(whole.json.message).slice(0, 200)}`);
    assert.match(whole.json.message as string, /pad/);
  }
});

test('a 5,000-character job id gets our error body, not Fastify\'s', async () => {
  for (const method of ['GET', 'DELETE']) {
    const res = await getJson(`${url}/interpret/jobs/${'j'.repeat(5000)}`, { method, headers: auth });
    assert.ok(res.status >= 400 && res.status < 500, `${method}: ${res.status}`);
    assertErrorBody(res.json, res.status);
  }
  const res = await getJson(`${url}/interpret/jobs/${'j'.repeat(80)}`, { headers: auth });
  assertErrorBody(res.json, 400);
  assert.match(res.json.message as string, /`id` to be at most 64 characters/);
});

test('the 413 for a large upload names a flag mechint serve has', async () => {
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(200 * 1024)]), 'big.npy');
  form.append('analysis_type', 'neuron');
  const res = await fetch(`${url}/interpret/upload`, { method: 'POST', headers: auth, body: form });
  assert.equal(res.status, 413);
  const body = (await res.json()) as Record<string, unknown>;
  assertErrorBody(body, 413, 'MECHINT_ERR_UPLOAD_TOO_LARGE');
  const flag = /mechint serve (--[a-z-]+)/.exec(body.message as string)?.[1];
  assert.ok(flag, body.message as string);
  const serve = registerServeCommand(new Command());
  assert.ok(serve.options.some((o) => o.long === flag), `mechint serve has ${flag}`);
});

test('ten concurrent large uploads: beyond maxConcurrentUploads they get 503 with Retry-After before their bodies are read, and memory stays bounded', async () => {
  const limit = 2;
  const { url: upUrl } = await startServer({ cache, maxConcurrentUploads: limit, uploadLimit: 64 * 1024 * 1024 });
  const rows = 131_072;
  const npy = Buffer.from(npyFile(rows, 64, 0.5).buffer); // 32 MiB
  const boundary = 'mechintboundary';
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="analysis_type"\r\n\r\nneuron\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.npy"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const length = head.length + npy.length + tail.length;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let answeredEarly = 0;
  const rssBase = process.memoryUsage().rss;
  let rssPeak = rssBase;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 25);
  const one = () =>
    new Promise<{ status: number; retryAfter: string | undefined; body: string }>((resolve) => {
      let settled = false;
      const finish = (v: { status: number; retryAfter: string | undefined; body: string }) => {
        if (!settled) {
          settled = true;
          resolve(v);
        }
      };
      const req = httpRequest(`${upUrl}/interpret/upload`, { method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': length } }, (res) => {
        answeredEarly += gateOpen ? 0 : 1;
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => finish({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], body }));
        res.on('error', () => finish({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], body }));
      });
      req.on('error', (err) => finish({ status: -1, retryAfter: undefined, body: String(err) }));
      req.write(head);
      req.write(npy.subarray(0, 1 << 20));
      void gate.then(() => {
        if (settled || req.destroyed) return;
        req.write(npy.subarray(1 << 20));
        req.end(tail);
      });
    });
  let gateOpen = false;
  const all = Promise.all(Array.from({ length: 10 }, one));
  // Let every request arrive; the ones over the limit are answered while their bodies wait.
  const end = Date.now() + 10_000;
  while (answeredEarly < 10 - limit && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
  gateOpen = true;
  release();
  const results = await all;
  clearInterval(sampler);
  const statuses = results.map((r) => r.status);
  const busy = results.filter((r) => r.status === 503);
  assert.equal(busy.length, 10 - limit, `statuses ${statuses.join(', ')}`);
  assert.equal(results.filter((r) => r.status === 200).length, limit, `statuses ${statuses.join(', ')}: ${results.find((r) => r.status !== 200 && r.status !== 503)?.body ?? ''}`);
  for (const b of busy) {
    assert.equal(b.retryAfter, '1');
    const body = JSON.parse(b.body) as Record<string, unknown>;
    assert.equal(body.code, 'MECHINT_ERR_TOO_MANY_UPLOADS');
    assert.match(body.message as string, /maxConcurrentUploads/);
  }
  const grownMiB = (rssPeak - rssBase) / 2 ** 20;
  console.log(`# uploads: ${statuses.join(' ')}; RSS grew by ${grownMiB.toFixed(0)} MiB at most`);
  // Each accepted upload holds a few copies of its 32 MiB while parsed; ten at once would need well over 1 GiB.
  assert.ok(grownMiB < 500, `RSS grew by ${grownMiB.toFixed(0)} MiB`);
  // The slots are free again.
  const form = new FormData();
  form.append('file', new Blob([npyFile(4, 2)]), 'a.npy');
  form.append('analysis_type', 'neuron');
  assert.equal((await fetch(`${upUrl}/interpret/upload`, { method: 'POST', body: form })).status, 200);
});
