/** docs/errors.md lists exactly the error codes the source throws, each under its own heading with how to solve it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const CODE = /MECHINT_ERR_[A-Z0-9_]*[A-Z0-9]/g;

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

const sourceCodes = new Set<string>();
for (const f of await sourceFiles(join(ROOT, 'src'))) for (const m of (await readFile(f, 'utf8')).matchAll(CODE)) sourceCodes.add(m[0]);
const doc = await readFile(join(ROOT, 'docs', 'errors.md'), 'utf8');
const docCodes = new Set([...doc.matchAll(CODE)].map((m) => m[0]));
const headings = new Set([...doc.matchAll(/^#{2,4} (MECHINT_ERR_[A-Z0-9_]+)\s*$/gm)].map((m) => m[1]!));

test('the source defines error codes (the scan finds them)', () => {
  assert.ok(sourceCodes.size >= 20, `found only ${[...sourceCodes].join(', ')}`);
});

test('every error code in src/ is documented under its own heading in docs/errors.md', () => {
  assert.deepEqual([...sourceCodes].filter((c) => !headings.has(c)).sort(), []);
});

test('every error code in docs/errors.md exists in src/', () => {
  assert.deepEqual([...docCodes].filter((c) => !sourceCodes.has(c)).sort(), []);
});

test('each documented error says what it means and how to solve it', () => {
  const sections = doc.split(/^### /m).slice(1);
  for (const s of sections) {
    const code = s.split('\n', 1)[0]!.trim();
    assert.match(s, /\*\*Means:\*\*/, `${code} says what it means`);
    assert.match(s, /\*\*Solve:\*\*/, `${code} says how to solve it`);
  }
  assert.equal(sections.length, sourceCodes.size);
});
