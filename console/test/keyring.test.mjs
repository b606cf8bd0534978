// The overviews' keys (keyring.js) against a fake console server: nothing opens before the
// passphrase or after Lock, a wrong passphrase is named, one unlock opens the vectors' chunks,
// and a server answering with another chunk than the one asked for is refused. And what a
// keystrokes report row reads of an event (report.js).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Keyring, LockedError } from '../assets/js/keyring.js';
import { eventFields } from '../assets/js/report.js';
import { fromHex } from '../assets/js/hex.js';
import { parseFrame } from '../assets/js/payload.js';
import { passphrase, vectors } from '../test-support/helpers.mjs';
import { fakeConsole, vectorChunks } from '../test-support/fake-console.mjs';

const frameVectors = vectors.chunks.filter((c) => c.stream === 0);

test('one unlock opens every chunk of the KEK; nothing opens before it or after Lock', async (t) => {
  const { summary } = fakeConsole(t);
  const ring = new Keyring();
  await assert.rejects(ring.openOne(summary.agent_hex, summary.session, 0, 0), LockedError);
  const wrong = await ring.unlock('not the passphrase', null);
  assert.deepEqual(wrong.opened, []);
  assert.equal(wrong.failed.get(vectors.kek_id), 'Wrong passphrase for this key file.');
  assert.equal(ring.customerOpen, false);
  const right = await ring.unlock(passphrase, null);
  assert.deepEqual(right.opened, [vectors.kek_id]);
  assert.equal(ring.customerOpen, true);
  for (const v of frameVectors) {
    const { chunk, payload } = await ring.openOne(summary.agent_hex, summary.session, 0, v.seq);
    assert.equal(Number(chunk.seq), v.seq);
    assert.deepEqual(payload.frame.image, parseFrame(fromHex(v.plaintext)).image);
  }
  ring.lock();
  assert.equal(ring.customerOpen, false);
  await assert.rejects(ring.openOne(summary.agent_hex, summary.session, 0, 0), LockedError);
});

test('a server answering with another chunk than the one asked for is refused', async (t) => {
  const [, c1] = vectorChunks(0);
  const { summary } = fakeConsole(t, vectorChunks(), {
    serve: (stream, fromSeq, count, honest) => (stream === 0 && fromSeq === 0 ? [c1] : honest(stream, fromSeq, count)),
  });
  const ring = new Keyring();
  await ring.unlock(passphrase, null);
  await assert.rejects(ring.openOne(summary.agent_hex, summary.session, 0, 0), {
    message: 'the server answered with another chunk than 0/0: refusing it',
  });
  // The honest answer for the next one still opens.
  const { chunk } = await ring.openOne(summary.agent_hex, summary.session, 0, 1);
  assert.equal(chunk.seq, 1n);
});

test('a report row reads the text (or key), window (or title) and application of an event', () => {
  const line = (raw) => {
    let event = null;
    try { event = JSON.parse(raw); } catch { /* not JSON */ }
    return { raw, event };
  };
  assert.deepEqual(eventFields(line('{"ts":1,"app":"excel.exe","window":"Plan.xlsx","text":"total"}')),
    { text: 'total', window: 'Plan.xlsx', app: 'excel.exe' });
  assert.deepEqual(eventFields(line('{"ts":1,"class":"XTerm","title":"bash","key":"Enter"}')),
    { text: 'Enter', window: 'bash', app: 'XTerm' });
  assert.deepEqual(eventFields(line('{"ts":1,"mods":[]}')), { text: '{"ts":1,"mods":[]}', window: '', app: '' });
  assert.deepEqual(eventFields(line('not json')), { text: 'not json', window: '', app: '' });
});
