/** The configuration reference in docs/guide.md lists every MechIntConfig option with the code's default, snake_case key and env var. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULTS, MechIntConfig, SNAKE_CASE_KEYS } from '../src/config.js';

const guide = await readFile(join(import.meta.dirname, '..', 'docs', 'guide.md'), 'utf8');
const section = guide.split(/^## Configuration reference\s*$/m)[1]?.split(/^## /m)[0] ?? '';

interface Row {
  option: string;
  snake: string;
  defaultText: string;
  env: string;
}

const unquote = (cell: string) => cell.trim().replace(/^`|`$/g, '');
const rows = new Map<string, Row>();
for (const line of section.split('\n')) {
  const m = /^\|\s*`(\w+)`\s*\|(.*)\|\s*$/.exec(line);
  if (!m) continue;
  const cells = m[2]!.split('|');
  rows.set(m[1]!, { option: m[1]!, snake: unquote(cells[0]!), defaultText: unquote(cells[1]!), env: unquote(cells[2]!) });
}
const options = Object.keys(SNAKE_CASE_KEYS) as (keyof typeof SNAKE_CASE_KEYS)[];

test('the guide has a configuration reference table', () => {
  assert.ok(section.length > 0, 'a "## Configuration reference" section');
  assert.ok(rows.size > 0, 'a table with one `option` per row');
});

test('every config option has a row, and every row is an option', () => {
  assert.deepEqual([...rows.keys()].sort(), [...options].sort());
});

test('each row gives the option\'s snake_case key', () => {
  for (const o of options) assert.equal(rows.get(o)?.snake, SNAKE_CASE_KEYS[o], o);
});

test('each documented default equals the code\'s DEFAULTS', () => {
  for (const o of options) {
    if (o === 'rank') continue;
    const row = rows.get(o)!;
    let documented: unknown;
    assert.doesNotThrow(() => (documented = JSON.parse(row.defaultText)), `${o}: default \`${row.defaultText}\` is JSON`);
    assert.deepEqual(documented, (DEFAULTS as Record<string, unknown>)[o], `${o}: documented default`);
  }
});

test('rank defaults to the RANK env var, else the documented default', () => {
  const row = rows.get('rank')!;
  assert.equal(row.env, 'RANK');
  const saved = process.env.RANK;
  try {
    delete process.env.RANK;
    assert.equal(new MechIntConfig().rank, JSON.parse(row.defaultText));
    process.env.RANK = '3';
    assert.equal(new MechIntConfig().rank, 3);
  } finally {
    if (saved === undefined) delete process.env.RANK;
    else process.env.RANK = saved;
  }
});

test('only rank is set from the environment; the other rows say so', () => {
  for (const o of options) if (o !== 'rank') assert.equal(rows.get(o)!.env, '–', o);
});

test('a config made of the documented defaults equals the default config', () => {
  const documented = Object.fromEntries(options.filter((o) => o !== 'rank').map((o) => [o, JSON.parse(rows.get(o)!.defaultText)]));
  assert.deepEqual(new MechIntConfig({ ...documented, rank: 0 }).toJSON(), new MechIntConfig({ rank: 0 }).toJSON());
});
