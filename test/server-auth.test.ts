/** With MECHINT_API_KEY set, every route but /health needs `Authorization: Bearer <key>`; without it, none does. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { buildApp } from '../src/server/app.js';
import { keysMatch } from '../src/server/auth.js';
import { tempDir } from './helpers.js';
import { getJson, plantCache, postJson, startServer } from './server-helpers.js';

const root = await tempDir('mechint-server-auth-');
const cache = join(root, 'cache');
await plantCache(cache, 10);
const KEY = 'test-key-0123456789abcdef';

async function withEnvKey<T>(key: string | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.MECHINT_API_KEY;
  if (key === undefined) delete process.env.MECHINT_API_KEY;
  else process.env.MECHINT_API_KEY = key;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env.MECHINT_API_KEY;
    else process.env.MECHINT_API_KEY = saved;
  }
}

test('with MECHINT_API_KEY set, requests without the key are 401 and /health stays open', async () => {
  const { url } = await withEnvKey(KEY, () => startServer({ cache, apiKey: undefined }));
  const health = await getJson(`${url}/health`);
  assert.equal(health.status, 200);

  for (const [method, path] of [['GET', '/interpret/layers'], ['POST', '/interpret'], ['POST', '/interpret/upload'], ['GET', '/interpret/jobs/x'], ['GET', '/docs/json'], ['GET', '/docs']] as const) {
    const res = await fetch(`${url}${path}`, { method });
    assert.equal(res.status, 401, `${method} ${path}`);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual(body, { statusCode: 401, code: 'MECHINT_ERR_UNAUTHORIZED', error: 'Unauthorized', message: body.message });
  }
  const wrong = await getJson(`${url}/interpret/layers`, { headers: { authorization: `Bearer ${KEY}x` } });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.json.code, 'MECHINT_ERR_UNAUTHORIZED');
  const basic = await getJson(`${url}/interpret/layers`, { headers: { authorization: `Basic ${Buffer.from(`u:${KEY}`).toString('base64')}` } });
  assert.equal(basic.status, 401);

  const auth = { authorization: `Bearer ${KEY}` };
  assert.equal((await getJson(`${url}/interpret/layers`, { headers: auth })).status, 200);
  const run = await postJson(`${url}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1', config: {} }, auth);
  assert.equal(run.status, 200);
  assert.equal((await fetch(`${url}/docs/json`, { headers: auth })).status, 200);
  // The key is checked before the body is looked at: a bad body without the key is still 401.
  assert.equal((await postJson(`${url}/interpret`, { analysis_type: 'bogus' })).status, 401);
});

test('with no key configured, the routes are open', async () => {
  const { url } = await withEnvKey(undefined, () => startServer({ cache, apiKey: undefined }));
  assert.equal((await getJson(`${url}/interpret/layers`)).status, 200);
  assert.equal((await postJson(`${url}/interpret`, { analysis_type: 'neuron', layer_name: 'layer1' })).status, 200);
});

test('an apiKey option works like the environment variable, and null turns auth off despite it', async () => {
  const { url } = await startServer({ cache, apiKey: KEY });
  assert.equal((await getJson(`${url}/interpret/layers`)).status, 401);
  assert.equal((await getJson(`${url}/interpret/layers`, { headers: { authorization: `bearer ${KEY}` } })).status, 200);
  const open = await withEnvKey(KEY, () => startServer({ cache, apiKey: null }));
  assert.equal((await getJson(`${open.url}/interpret/layers`)).status, 200);
});

test('a key shorter than 8 characters is refused when the app is built', async () => {
  await assert.rejects(buildApp({ cache, apiKey: 'short' }), { code: 'MECHINT_ERR_CONFIG', message: /apiKey/ });
});

test('keys are compared whole, whatever their lengths', () => {
  assert.equal(keysMatch(KEY, KEY), true);
  assert.equal(keysMatch(KEY.slice(0, -1), KEY), false);
  assert.equal(keysMatch('', KEY), false);
  assert.equal(keysMatch(`${KEY}${KEY}`, KEY), false);
});
