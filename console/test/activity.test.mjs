// Activity batches (kind 3, docs/format.md "Activity batch") and window titles in the page's
// own modules: a session's activity stream opens beside its keystrokes (session.js) and is
// proven like any stream (proof.js); the activity log says what each event is (a focus change:
// its title and class; the session's start: user, display, host and screen size); the session's
// search finds window titles as they read (keylog.js), and the cross-session keystrokes report
// (report.js) finds keystrokes by their window title and the activity stream's focus changes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Recording } from '../assets/js/session.js';
import { describeActivity } from '../assets/js/activity.js';
import { matchesEvent } from '../assets/js/keylog.js';
import { searchSession, searchedStreams } from '../assets/js/report.js';
import { Keyring } from '../assets/js/keyring.js';
import { KIND_ACTIVITY } from '../assets/js/chunk.js';
import { utf8 } from '../assets/js/hex.js';
import { passphrase, sealChunk } from '../test-support/helpers.mjs';
import { fakeConsole } from '../test-support/fake-console.mjs';

const T0 = 1_780_000_000_000; // ms
const line = (o) => JSON.stringify(o);

// What the capturing agent records: keystrokes with the focused window's class and title, and
// its activity events.
const KEYS = [
  [line({ ts: T0 + 1000, user: 'alice', app: 'Gnome-terminal', title: 'alice@ts-07: ~', key: 'l' }),
    line({ ts: T0 + 1100, user: 'alice', app: 'Gnome-terminal', title: 'alice@ts-07: ~', key: '[Enter]' })],
  // A title written with \u escapes, as a JSON encoder may (é, —).
  ['{"ts":1780000005000,"user":"alice","app":"libreoffice-calc","title":"Quarterly r\\u00e9sum\\u00e9 \\u2014 LibreOffice Calc","key":"Ctrl+C"}'],
];
const ACTIVITY = [
  [line({ ts: T0, event: 'session_start', user: 'alice', display: ':0', host: 'ts-07', width: 1920, height: 1080 }),
    line({ ts: T0 + 500, event: 'focus', title: 'alice@ts-07: ~', class: 'Gnome-terminal' })],
  [line({ ts: T0 + 4000, event: 'focus', title: 'Quarterly résumé — LibreOffice Calc', class: 'libreoffice-calc' }),
    line({ ts: T0 + 6000, event: 'resize', width: 1280, height: 720 }),
    line({ ts: T0 + 9000, event: 'idle' }),
    line({ ts: T0 + 20000, event: 'paused', reason: 'screen locked' }),
    line({ ts: T0 + 30000, event: 'session_end', reason: 'logout' })],
];

/** Seal the keystroke stream (1, kind 2) and the activity stream (2, kind 3) of one session. */
async function sealSession() {
  const out = [];
  for (const [streamId, kind, batches] of [[1, 2, KEYS], [2, 3, ACTIVITY]]) {
    for (const [seq, lines] of batches.entries()) {
      const h = { seq, streamId, kind, captureUs: (T0 + seq * 4000) * 1000, final: seq === batches.length - 1 };
      out.push(await sealChunk(h, utf8(lines.map((l) => `${l}\n`).join(''))));
    }
  }
  return out;
}

test("a session's activity stream (kind 3) opens beside its keystrokes and is proven as a stream", async (t) => {
  const { summary } = fakeConsole(t, await sealSession());
  assert.deepEqual(summary.streams.map((s) => [s.stream, s.kind]), [[1, 2], [2, 3]]);
  const rec = new Recording(summary);
  await rec.loadIndex();
  assert.equal(rec.activityStream, 2);
  assert.deepEqual(rec.activityRows.map((r) => r.seq), [0, 1]);
  await rec.prove(null);
  const activityProof = rec.proofs.get(2).verdict;
  assert.equal(activityProof.kind, 'activity');
  assert.notEqual(activityProof.status, 'tampered', activityProof.message);
  assert.notEqual(rec.verdict().status, 'tampered');
  await rec.unlock(passphrase);
  const events = await rec.activity();
  assert.deepEqual(events.map((e) => [e.timeUs, e.event.event]), [
    [T0 * 1000, 'session_start'], [(T0 + 500) * 1000, 'focus'], [(T0 + 4000) * 1000, 'focus'],
    [(T0 + 6000) * 1000, 'resize'], [(T0 + 9000) * 1000, 'idle'], [(T0 + 20000) * 1000, 'paused'], [(T0 + 30000) * 1000, 'session_end'],
  ]);
  assert.equal(events[2].line, ACTIVITY[1][0]);
  // The keystrokes are still only the keystroke stream's.
  assert.deepEqual((await rec.keystrokes()).map((k) => k.event.key), ['l', '[Enter]', 'Ctrl+C']);
  // Live: what was indexed since comes in from where it was.
  assert.deepEqual((await rec.activity(1)).map((e) => e.event.event), ['focus', 'resize', 'idle', 'paused', 'session_end']);
});

test('the activity log says what each event is', () => {
  const ev = (l) => describeActivity(JSON.parse(l));
  assert.deepEqual(ev(ACTIVITY[0][0]), { what: 'session start', detail: 'alice on :0 at ts-07 · 1920×1080', where: '' });
  assert.deepEqual(ev(ACTIVITY[1][0]), { what: 'focus', detail: 'Quarterly résumé — LibreOffice Calc', where: 'libreoffice-calc' });
  assert.deepEqual(ev(ACTIVITY[1][1]), { what: 'resized', detail: '1280×720', where: '' });
  assert.deepEqual(ev(ACTIVITY[1][2]), { what: 'idle', detail: '', where: '' });
  assert.deepEqual(ev(ACTIVITY[1][3]), { what: 'paused', detail: 'screen locked', where: '' });
  assert.deepEqual(ev(ACTIVITY[1][4]), { what: 'session end', detail: 'logout', where: '' });
  assert.deepEqual(describeActivity({ event: 'resumed', reason: 'unlocked' }), { what: 'resumed', detail: 'unlocked', where: '' });
  assert.deepEqual(describeActivity({ event: 'focus', excluded: true }), { what: 'focus', detail: '(an excluded window)', where: '' });
  assert.deepEqual(describeActivity({ event: 'focus', title: 'Inbox', app: 'Outlook' }), { what: 'focus', detail: 'Inbox', where: 'Outlook' });
  assert.deepEqual(describeActivity({ event: 'something_new', x: 1 }), { what: 'something_new', detail: '', where: '' });
  assert.deepEqual(describeActivity(null), { what: 'event', detail: '', where: '' });
});

test("the session's search finds window titles as they read, in keystrokes and focus changes", () => {
  const parse = (l) => ({ line: l, event: JSON.parse(l) });
  const escaped = parse(KEYS[1][0]);
  // "résumé" is written \u00e9 in the line: found in the decoded title only.
  assert.ok(!escaped.line.includes('résumé'));
  assert.equal(matchesEvent(escaped, 'résumé'), true);
  assert.equal(matchesEvent(escaped, 'quarterly r'), true);
  assert.equal(matchesEvent(escaped, 'libreoffice-calc'), true);
  assert.equal(matchesEvent(parse(KEYS[0][0]), 'résumé'), false);
  assert.equal(matchesEvent(parse(ACTIVITY[1][0]), 'résumé — libre'), true);
  assert.equal(matchesEvent(parse(ACTIVITY[0][1]), 'gnome-terminal'), true);
  assert.equal(matchesEvent(parse(ACTIVITY[1][2]), 'résumé'), false);
  // What was typed, and the raw line, as before; an empty search finds nothing.
  assert.equal(matchesEvent(parse(KEYS[1][0]), 'ctrl+c'), true);
  assert.equal(matchesEvent({ line: 'not json', event: null }, 'json'), true);
  assert.equal(matchesEvent(escaped, ''), false);
});

/** The session as /api/overview lists it (what the report reads). */
const overviewRow = (summary) => ({
  ...summary, frame_stream: null, key_stream: 1, key_chunks: summary.streams.find((s) => s.kind === 2).next_seq, frames: [],
});

test('the keystrokes report finds keystrokes by window title and the focus changes of the activity stream', async (t) => {
  const { summary } = fakeConsole(t, await sealSession());
  // The console pins no agent CA (the fake console serves the session's paths only).
  const served = globalThis.fetch;
  globalThis.fetch = async (input, init) => (new URL(String(input), 'https://console.invalid').pathname === '/api/agent-ca'
    ? new Response(JSON.stringify({ pem: null, fingerprint: null }), { headers: { 'Content-Type': 'application/json' } })
    : served(input, init));
  const row = overviewRow(summary);
  assert.deepEqual(searchedStreams(row), [{ stream: 1, kind: 2, chunks: 2 }, { stream: 2, kind: KIND_ACTIVITY, chunks: 2 }]);
  const ring = new Keyring();
  assert.equal(await searchSession(row, ring, { needle: 'résumé' }), 'locked');
  await ring.unlock(passphrase, null);
  const found = await searchSession(row, ring, { needle: 'résumé' });
  assert.deepEqual(found.matches.map(({ timeUs, text, window, app }) => [timeUs, text, window, app]), [
    [(T0 + 4000) * 1000, '(window focused)', 'Quarterly résumé — LibreOffice Calc', 'libreoffice-calc'],
    [(T0 + 5000) * 1000, 'Ctrl+C', 'Quarterly résumé — LibreOffice Calc', 'libreoffice-calc'],
  ]);
  assert.equal(found.count, 2);
  assert.notEqual(found.badge.status, 'tampered', found.badge.title);
  // By window class; the word "focus" itself is not in what a focus change is searched by.
  const byClass = await searchSession(row, ring, { needle: 'gnome-terminal' });
  assert.deepEqual(byClass.matches.map((m) => [m.timeUs, m.text]), [[(T0 + 500) * 1000, '(window focused)'], [(T0 + 1000) * 1000, 'l'], [(T0 + 1100) * 1000, '[Enter]']]);
  assert.equal((await searchSession(row, ring, { needle: 'focus' })).count, 0);
  // No search: every keystroke and every focus change (not idle, resize …), by time; a range.
  const all = await searchSession(row, ring, {});
  assert.deepEqual(all.matches.map((m) => m.timeUs / 1000 - T0), [500, 1000, 1100, 4000, 5000]);
  const ranged = await searchSession(row, ring, { inRange: (us) => us >= (T0 + 1050) * 1000 && us <= (T0 + 4500) * 1000 });
  assert.deepEqual(ranged.matches.map((m) => m.timeUs / 1000 - T0), [1100, 4000]);
  // A session with only an activity stream is searched too.
  const activityOnly = { ...row, key_stream: null, key_chunks: 0 };
  assert.deepEqual(searchedStreams(activityOnly), [{ stream: 2, kind: KIND_ACTIVITY, chunks: 2 }]);
  assert.equal((await searchSession(activityOnly, ring, { needle: 'résumé' })).count, 1);
});
