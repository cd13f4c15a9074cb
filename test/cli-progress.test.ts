/** CLI progress: rate and time left on a terminal; plain periodic lines, not silence, in a log. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, formatDuration } from '../src/cli/progress.js';

function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  const stream = { isTTY, columns: 200, write: (s: string) => (writes.push(s), true) } as unknown as NodeJS.WriteStream;
  return { stream, writes };
}

function fakeClock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

test('on a terminal the line shows the rate of the caller\'s count and the time left', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress(stream, { mode: 'auto', now: clock.now });
  p.update('neuron layer1', 0, { done: 0, total: 100_000, unit: 'rows' });
  clock.advance(2000);
  p.update('neuron layer1', 0.25, { done: 25_000, total: 100_000, unit: 'rows' });
  const line = writes.at(-1)!;
  assert.match(line, /^\r\x1b\[2K\[#{6}\.{18}\] 25% neuron layer1/);
  assert.match(line, /12,500 rows\/s/);
  assert.match(line, /6 s left/);
  p.done('finished');
  assert.equal(writes.at(-1), 'finished\n');
});

test('on a terminal an `epoch 3/10` label gives an epoch rate; a new layer restarts the clock', () => {
  const { stream, writes } = fakeStream(true);
  const clock = fakeClock();
  const p = createProgress(stream, { mode: 'auto', now: clock.now });
  p.update('sae layer1 epoch 0/10', 0);
  clock.advance(4000);
  p.update('sae layer1 epoch 2/10', 0.2);
  assert.match(writes.at(-1)!, /0\.50 epoch\/s · 16 s left/);
  // The next layer's epochs start again from 0: no rate until it has run a while.
  clock.advance(100);
  p.update('sae layer2 epoch 0/10', 0);
  assert.doesNotMatch(writes.at(-1)!, /left/);
  clock.advance(1000);
  p.update('sae layer2 epoch 1/10', 0.1);
  assert.match(writes.at(-1)!, /1\.0 epoch\/s · 9 s left/);
});

test('when stderr is not a terminal: a plain line per new stage and at least every 10 s while one runs', () => {
  const { stream, writes } = fakeStream(false);
  const clock = fakeClock();
  const p = createProgress(stream, { mode: 'auto', now: clock.now });
  p.update('loading ./mechint_cache');
  assert.deepEqual(writes, ['mechint: loading ./mechint_cache\n']);
  p.update('sae layer1 epoch 0/50', 0);
  assert.equal(writes.length, 2, 'a new stage prints at once');
  for (let e = 1; e <= 50; e++) {
    clock.advance(500);
    p.update(`sae layer1 epoch ${e}/50`, e / 50);
  }
  // 25 s of epochs: one line at ~10 s and one at ~20 s, not fifty.
  const lines = writes.slice(2);
  assert.equal(lines.length, 2, JSON.stringify(lines));
  assert.match(lines[0]!, /^mechint: 40% sae layer1 epoch 20\/50 · 2\.0 epoch\/s · 15 s left\n$/);
  for (const w of writes) assert.doesNotMatch(w, /\x1b|\r/, 'no terminal control codes in a log');
  p.update('feature layer1');
  assert.match(writes.at(-1)!, /^mechint: feature layer1\n$/);
  p.done();
  assert.equal(writes.at(-1), 'mechint: feature layer1\n', 'done without a message prints nothing');
});

test('progress is silent with mode off and MECHINT_PROGRESS=off', () => {
  const { stream, writes } = fakeStream(true);
  createProgress(stream, { mode: 'off' }).update('x', 0.5);
  const saved = process.env.MECHINT_PROGRESS;
  process.env.MECHINT_PROGRESS = 'off';
  try {
    createProgress(stream).update('y', 0.5);
  } finally {
    if (saved === undefined) delete process.env.MECHINT_PROGRESS;
    else process.env.MECHINT_PROGRESS = saved;
  }
  assert.deepEqual(writes, []);
});

test('durations read as seconds, minutes, hours', () => {
  assert.equal(formatDuration(4.4), '4 s');
  assert.equal(formatDuration(184), '3 min 4 s');
  assert.equal(formatDuration(3720), '1 h 02 min');
  assert.equal(formatDuration(Number.NaN), '?');
});
