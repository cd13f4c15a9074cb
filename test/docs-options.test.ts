/** The guide's analysis options reference is generated from the analyses' own schemas: one table per analysis, equal to its docsTable(). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { analysisNames, getAnalysis } from '../src/analysis/registry.js';
import { snakeCase } from '../src/options.js';

const guide = await readFile(join(import.meta.dirname, '..', 'docs', 'guide.md'), 'utf8');
const section = guide.split(/^## Analysis options reference\s*$/m)[1]?.split(/^## /m)[0] ?? '';

test('every built-in analysis has its options table in the guide, equal to its schema\'s', () => {
  assert.ok(section.length > 0, 'a "## Analysis options reference" section');
  for (const name of analysisNames()) {
    const table = getAnalysis(name)!.options.docsTable();
    assert.ok(section.includes(`### \`${name}\` options\n\n${table}\n`), `${name}: the guide's table equals the schema's (regenerate with npx tsx scripts/docs-options.ts)`);
  }
});

test('each table row names an option the analysis accepts, in both spellings', () => {
  for (const name of analysisNames()) {
    const schema = getAnalysis(name)!.options;
    for (const key of Object.keys(schema.fields)) {
      assert.doesNotThrow(() => schema.parse({ [snakeCase(key)]: schema.resolve({}, { dim: 8 })[key] }), `${name}.${snakeCase(key)} takes its own default`);
    }
  }
});
