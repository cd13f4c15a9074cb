import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzz } from '../scripts/fuzz.js';

// `npm run fuzz` runs the same engine for 100,000+ iterations; this keeps the suite quick.
test('3,000 mutated safetensors, .npy and .pt files each read or fail with a MechIntError, quickly and within memory', () => {
  const result = fuzz(3000, 20240607, 5000);
  assert.deepEqual(result.failures, []);
  const total = Object.values(result.outcomes).reduce((a, b) => a + b, 0);
  assert.equal(total, 3000);
  assert.equal(result.outcomes.unexpected, undefined);
  // Every mutation kind ran, and the refusal paths were reached, not only the happy one.
  for (const kind of ['bitflip', 'byte', 'truncate', 'splice', 'header', 'pickle']) assert.ok((result.mutations[kind] ?? 0) > 100, kind);
  for (const code of ['ok', 'MECHINT_ERR_FORMAT', 'MECHINT_ERR_LIMIT', 'MECHINT_ERR_UNSAFE_PICKLE']) assert.ok((result.outcomes[code] ?? 0) > 0, code);
});
