// The page's own session module (session.js with its real imports: api.js, chunk.js, dek.js,
// keyfile.js, payload.js) against a fake console server (a fake `fetch`): an honest server's
// chunks open to the vector plaintexts; a server answering with another chunk than the one asked
// for (another seq, another stream, another session's, another agent's, fetched ahead in the
// wrong order) is refused with the page's error; altered bytes and every negative vector are
// refused with the page's TamperedError naming the chunk.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Recording } from '../assets/js/session.js';
import { parseChunk } from '../assets/js/chunk.js';
import { parseFrame } from '../assets/js/payload.js';
import { fromHex, toHex } from '../assets/js/hex.js';
import { passphrase, sealChunk, vectorKeys, vectors } from '../test-support/helpers.mjs';
import { fakeConsole, vectorChunks } from '../test-support/fake-console.mjs';

const frameVectors = vectors.chunks.filter((c) => c.stream === 0);
const OTHER_SESSION = fromHex('5e551000000040008000000000000002');

/** The page's refusal of a chunk other than `stream`/`seq` (session.js). */
const anotherChunk = (stream, seq) => ({
  name: 'Error',
  message: `the server answered with another chunk than ${stream}/${seq}: refusing it`,
});

/** A Recording built as the page builds it: from the summary, its index read, unlocked. */
async function openRecording(summary) {
  const rec = new Recording(summary);
  await rec.loadIndex();
  await rec.unlock(passphrase);
  return rec;
}

/** What the page shows for each frame, in order: its name, or the error that refused it. */
async function frameOutcomes(rec) {
  const out = [];
  for (let i = 0; i < rec.frames.length; i += 1) {
    try {
      out.push((await rec.frame(i)).name);
    } catch (err) {
      out.push(`${err.name}: ${err.message}`);
    }
  }
  return out;
}

/** `bytes` with byte `at` (negative: from the end) flipped. */
function flipped(bytes, at) {
  const out = bytes.slice();
  out[at < 0 ? out.length + at : at] ^= 0x01;
  return out;
}

/** `substitute` would open under the session's keys: only the page's own check refuses it. */
async function assertAuthentic(substitute) {
  const { keys } = await vectorKeys();
  const c = parseChunk(substitute);
  assert.equal(toHex(await keys.open(c)), toHex(fromHex(vectors.chunks.find((v) => v.seq === Number(c.seq)
    && v.stream === c.streamId).plaintext)));
}

test('an honest server: the page opens every vector frame and keystroke, fetched by range with the stored key file', async (t) => {
  const { summary, requests } = fakeConsole(t);
  const rec = await openRecording(summary);
  assert.deepEqual(rec.frames.map((r) => r.seq), [0, 1, 2]);
  assert.deepEqual(rec.keyRows.map((r) => r.seq), [0, 1]);
  for (const [i, v] of frameVectors.entries()) {
    const f = await rec.frame(i);
    const expected = parseFrame(fromHex(v.plaintext));
    assert.equal(f.name, `frame-${i}.png`);
    assert.equal(f.mime, 'image/png');
    assert.deepEqual(f.image, expected.image);
    assert.equal(f.captureUs, v.capture_time_us);
  }
  assert.deepEqual((await rec.keystrokes()).map(({ timeUs, line, seq }) => ({ timeUs, line, seq })), [
    { timeUs: 1000, line: '{"ts":1,"key":"h"}', seq: 0 },
    { timeUs: 2000, line: '{"ts":2,"key":"i","mods":[]}', seq: 0 },
    { timeUs: 3000, line: '{"ts":3,"key":"Enter","window":"cmd.exe"}', seq: 1 },
  ]);
  const base = `/api/agents/${summary.agent_hex}/sessions/${summary.session}`;
  assert.deepEqual(requests.filter((r) => r.includes('/chunks')), [
    `GET ${base}/streams/0/chunks?from_seq=0&count=3`,
    `GET ${base}/streams/1/chunks?from_seq=0&count=2`,
  ]);
});

test('a server answering with the next seq of the stream is refused', async (t) => {
  const [, , c2] = vectorChunks(0);
  await assertAuthentic(c2);
  const { summary } = fakeConsole(t, vectorChunks(), {
    serve: (stream, fromSeq, count, honest) => honest(stream, fromSeq + 1, count),
  });
  const rec = await openRecording(summary);
  await assert.rejects(rec.frame(1), anotherChunk(0, 1));
});

test('a server answering with the same seq of another stream (a keystroke chunk for a frame) is refused', async (t) => {
  const [k0] = vectorChunks(1);
  await assertAuthentic(k0);
  const { summary } = fakeConsole(t, vectorChunks(), {
    serve: (stream, fromSeq, count, honest) => honest(stream === 0 ? 1 : 0, fromSeq, count),
  });
  const rec = await openRecording(summary);
  await assert.rejects(rec.frame(0), anotherChunk(0, 0));
  await assert.rejects(rec.keystrokes(), anotherChunk(1, 0));
});

test("a server answering with another session's chunk (same agent, DEK, stream and seq) is refused", async (t) => {
  const other = await sealChunk({ sessionId: OTHER_SESSION }, fromHex(frameVectors[0].plaintext));
  assert.equal(toHex(parseChunk(other).sessionId), toHex(OTHER_SESSION));
  await assertAuthentic(other);
  const { summary } = fakeConsole(t, vectorChunks(), { serve: () => [other] });
  const rec = await openRecording(summary);
  await assert.rejects(rec.frame(0), anotherChunk(0, 0));
});

test("a server answering with another agent's chunk is refused", async (t) => {
  const other = await sealChunk({ agent: 'other-agent' }, fromHex(frameVectors[0].plaintext));
  assert.equal(parseChunk(other).agent, 'other-agent');
  const { summary } = fakeConsole(t, vectorChunks(), { serve: () => [other] });
  const rec = await openRecording(summary);
  await assert.rejects(rec.frame(0), anotherChunk(0, 0));
});

test('chunks fetched ahead in the wrong order are never shown as another frame', async (t) => {
  const [c0, c1, c2] = vectorChunks(0);
  const { summary } = fakeConsole(t, vectorChunks(), {
    serve: (stream, fromSeq, count, honest) => (stream === 0 && fromSeq === 0 ? [c0, c2, c1] : honest(stream, fromSeq, count)),
  });
  const rec = await openRecording(summary);
  const shown = await frameOutcomes(rec);
  // Today the page keeps what it fetched ahead by the seq it asked for, so it refuses both; a
  // page that filed them by their own seq would show each in its place, which is as good.
  assert.equal(shown.length, 3);
  assert.equal(shown[0], 'frame-0.png');
  shown.forEach((s, i) => assert.ok(s === `frame-${i}.png` || s === `Error: ${anotherChunk(0, i).message}`, shown.join('\n')));
});

test('a served chunk with altered bytes (its tag, its capture time) is refused as tampered; the others still open', async (t) => {
  for (const [what, at] of [['tag', -1], ['capture time', 59]]) {
    await t.test(what, async (t) => {
      const stored = vectorChunks();
      const { summary } = fakeConsole(t, stored, {
        serve: (stream, fromSeq, count, honest) => honest(stream, fromSeq, count)
          .map((b) => (parseChunk(b).streamId === 0 && parseChunk(b).seq === 1n ? flipped(b, at) : b)),
      });
      const rec = await openRecording(summary);
      assert.deepEqual(await frameOutcomes(rec), [
        'frame-0.png',
        'TamperedError: chunk 1 of stream 0: authentication failed',
        'frame-2.png',
      ]);
    });
  }
});

for (const neg of vectors.negative) {
  if (neg.expect === 'tampered') {
    test(`negative vector "${neg.name}" stored by the server: the page refuses ${neg.detail}`, async (t) => {
      const { summary } = fakeConsole(t, neg.stream.map(fromHex));
      const rec = await openRecording(summary);
      const shown = await frameOutcomes(rec);
      assert.equal(shown.length, neg.stream.length);
      const refused = shown.filter((s) => !/^frame-\d\.png$/.test(s));
      assert.equal(refused[0], `TamperedError: ${neg.detail}`, shown.join('\n'));
      for (const [i, s] of shown.entries()) {
        assert.ok(s === `frame-${i}.png` || s === `TamperedError: chunk ${i} of stream 0: authentication failed`, s);
      }
    });
  } else {
    test(`negative vector "${neg.name}" (${neg.expect}) stored by the server: the page shows only the authentic chunks there`, async (t) => {
      assert.equal(neg.expect, 'incomplete');
      const { summary } = fakeConsole(t, neg.stream.map(fromHex));
      const rec = await openRecording(summary);
      assert.deepEqual(await frameOutcomes(rec), neg.stream.map((_, i) => `frame-${i}.png`));
      assert.ok(neg.stream.map(fromHex).every((b) => !parseChunk(b).final));
    });
  }
}
