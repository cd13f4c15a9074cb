/**
 * Every ```ts block of docs/*.md and README.md type-checks against the public API: each is written
 * to .tmp/snippets/ as its own module, with a tsconfig that maps 'mechint' to src/index.ts, and
 * compiled with `tsc --noEmit`. Snippets declare what they assume (`declare const model: tf.LayersModel;`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';

const ROOT = join(import.meta.dirname, '..');
const OUT = join(ROOT, '.tmp', 'snippets');

interface Snippet {
  doc: string;
  line: number;
  code: string;
  file: string;
}

async function markdownFiles(): Promise<string[]> {
  const docs = (await readdir(join(ROOT, 'docs'))).filter((f) => f.endsWith('.md')).map((f) => join(ROOT, 'docs', f));
  return [join(ROOT, 'README.md'), ...docs.sort()];
}

/** ```ts / ```typescript blocks with the line each starts on. */
export function extractSnippets(text: string, doc: string): Omit<Snippet, 'file'>[] {
  const out: Omit<Snippet, 'file'>[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue;
    const start = i + 1;
    let j = start;
    while (j < lines.length && !/^```\s*$/.test(lines[j]!)) j++;
    out.push({ doc, line: start + 1, code: lines.slice(start, j).join('\n') });
    i = j;
  }
  return out;
}

const snippets: Snippet[] = [];
for (const path of await markdownFiles()) {
  const doc = relative(ROOT, path);
  for (const s of extractSnippets(await readFile(path, 'utf8'), doc)) {
    const file = `${doc.replace(/[^A-Za-z0-9]+/g, '_')}_L${s.line}.ts`;
    snippets.push({ ...s, file });
  }
}

test('the docs hold TypeScript snippets to check', () => {
  assert.ok(snippets.length >= 20, `found ${snippets.length}`);
  for (const doc of ['README.md', 'docs/guide.md', 'docs/python-interop.md']) {
    assert.ok(snippets.some((s) => s.doc === doc), `${doc} has ts snippets`);
  }
});

test('every ts snippet in docs/*.md and README.md type-checks against the public API', { timeout: 120_000 }, async () => {
  await rm(OUT, { recursive: true, force: true });
  await mkdir(OUT, { recursive: true });
  for (const s of snippets) await writeFile(join(OUT, s.file), `${s.code}\n\nexport {};\n`);
  await writeFile(
    join(OUT, 'tsconfig.json'),
    JSON.stringify({
      extends: '../../tsconfig.json',
      compilerOptions: { noEmit: true, rootDir: '../..', paths: { mechint: ['../../src/index.ts'] }, noUnusedLocals: false },
      include: ['*.ts', '../../test/s3rver.d.ts'],
    }, null, 2),
  );
  const tsc = join(ROOT, 'node_modules', '.bin', 'tsc');
  const result = await promisify(execFile)(tsc, ['--noEmit', '-p', join(OUT, 'tsconfig.json')], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 }).then(
    () => '',
    (err: { stdout?: string; stderr?: string }) => `${err.stdout ?? ''}${err.stderr ?? ''}`,
  );
  // Point each error at the Markdown file and line it came from.
  const byFile = new Map(snippets.map((s) => [s.file, s]));
  const readable = result.replace(/(?:\.tmp\/snippets\/)?([A-Za-z0-9_]+_L\d+\.ts)\((\d+),(\d+)\)/g, (m, f: string, line: string) => {
    const s = byFile.get(f);
    return s ? `${s.doc}:${s.line + Number(line) - 1}` : m;
  });
  assert.equal(readable.trim(), '', readable);
});
