// The player's time axis: ticks at round UTC times, as many as the timeline's width has room
// for, labelled HH:MM:SS, with the date where a new day starts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { axisTicks, clockLabel } from '../assets/js/player.js';

const T = Date.UTC(2026, 11, 5, 5, 4, 26, 432) * 1000; // µs

test('a 12-second recording on a 930-pixel timeline is labelled every 2 seconds', () => {
  const ticks = axisTicks(T, T + 11_000_000, 930);
  assert.deepEqual(ticks.map((t) => t.label), ['05:04:28', '05:04:30', '05:04:32', '05:04:34', '05:04:36']);
  for (const t of ticks) assert.ok(t.us >= T && t.us <= T + 11_000_000);
});

test('the step grows with the span and shrinks with the width', () => {
  const hour = 3_600_000_000;
  const wide = axisTicks(T, T + hour, 1200);
  const narrow = axisTicks(T, T + hour, 300);
  assert.equal(wide[1].us - wide[0].us, 10 * 60e6);
  assert.equal(narrow[1].us - narrow[0].us, 30 * 60e6);
  assert.ok(wide.length <= Math.floor(1200 / 110) && narrow.length <= Math.floor(300 / 110));
  assert.ok(wide.every((t) => /^\d\d:\d\d:00$/.test(t.label)));
});

test('a span over midnight shows the date where the new day starts', () => {
  const start = Date.UTC(2026, 11, 5, 23, 58, 0) * 1000;
  const labels = axisTicks(start, start + 4 * 60e6, 600).map((t) => t.label);
  assert.deepEqual(labels, ['23:58:00', '23:59:00', '12-06 00:00:00', '00:01:00', '00:02:00']);
});

test('spans of days are labelled by date', () => {
  const day = 86_400e6;
  const ticks = axisTicks(T, T + 10 * day, 400);
  assert.ok(ticks.length >= 2 && ticks.length <= 4);
  assert.ok(ticks.every((t) => /^2026-12-\d\d$/.test(t.label)), JSON.stringify(ticks));
});

test('clock labels are UTC', () => {
  assert.equal(clockLabel(T), '05:04:26');
  assert.equal(clockLabel(T, true), '12-05 05:04:26');
});
