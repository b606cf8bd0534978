// Plaintext payloads: frames, keystroke batches, gap records, with the vector plaintexts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FormatError, guessMime, parseFrame, parseGap, parseKeystrokes, parsePayload } from '../assets/js/payload.js';
import { parseChunk } from '../assets/js/chunk.js';
import { concat, fromHex, u16be, utf8, view } from '../assets/js/hex.js';
import { sealChunk, vectorKeys, vectors } from '../test-support/helpers.mjs';

const frameVectors = vectors.chunks.filter((c) => c.kind === 'frames');
const keystrokeVectors = vectors.chunks.filter((c) => c.kind === 'keystrokes');

test('vector frames parse to a name and a PNG', () => {
  frameVectors.forEach((v, i) => {
    const f = parseFrame(fromHex(v.plaintext));
    assert.equal(f.name, `frame-${i}.png`);
    assert.equal(f.mime, 'image/png');
    assert.equal(f.image.length, fromHex(v.plaintext).length - 2 - f.name.length);
    assert.ok(f.image instanceof Uint8Array);
  });
});

test('vector keystroke batches parse line by line', () => {
  const [a, b] = keystrokeVectors.map((v) => parseKeystrokes(fromHex(v.plaintext)));
  assert.deepEqual(a, [
    { raw: '{"ts":1,"key":"h"}', event: { ts: 1, key: 'h' } },
    { raw: '{"ts":2,"key":"i","mods":[]}', event: { ts: 2, key: 'i', mods: [] } },
  ]);
  assert.deepEqual(b.map((l) => l.event), [{ ts: 3, key: 'Enter', window: 'cmd.exe' }]);
});

test('parsePayload on opened vector chunks', async () => {
  const { keys } = await vectorKeys();
  for (const v of vectors.chunks) {
    const chunk = parseChunk(fromHex(v.sealed));
    const p = parsePayload(chunk, await keys.open(chunk));
    assert.equal(p.type, { frames: 'frame', keystrokes: 'keystrokes', activity: 'activity' }[v.kind]);
    if (p.type === 'frame') assert.equal(p.frame.name, `frame-${v.seq}.png`);
    else assert.ok(p.lines.every((l) => l.event !== null));
  }
});

test('keystroke lines that are not JSON objects have a null event', () => {
  const lines = parseKeystrokes(utf8('{"k":"a"}\nnot json\n[1,2]\n{"k":"b"}'));
  assert.deepEqual(lines.map((l) => l.raw), ['{"k":"a"}', 'not json', '[1,2]', '{"k":"b"}']);
  assert.deepEqual(lines.map((l) => l.event), [{ k: 'a' }, null, null, { k: 'b' }]);
  assert.deepEqual(parseKeystrokes(new Uint8Array(0)), []);
  const invalid = parseKeystrokes(new Uint8Array([0xff, 0x0a]));
  assert.equal(invalid[0].event, null);
});

test('mime types from magic bytes', () => {
  assert.equal(guessMime(fromHex('ffd8ffe000104a464946')), 'image/jpeg');
  assert.equal(guessMime(concat(utf8('RIFF'), new Uint8Array(4), utf8('WEBPVP8 '))), 'image/webp');
  assert.equal(guessMime(concat(utf8('RIFF'), new Uint8Array(4), utf8('WAVE'))), 'application/octet-stream');
  assert.equal(guessMime(utf8('GIF89a')), 'application/octet-stream');
  assert.equal(guessMime(new Uint8Array(0)), 'application/octet-stream');
});

test('frames: empty names are allowed, path-like names and bad lengths are not', () => {
  const frame = (name, image = new Uint8Array([1, 2])) => concat(u16be(utf8(name).length), utf8(name), image);
  assert.deepEqual(parseFrame(frame('')), { name: '', image: new Uint8Array([1, 2]), mime: 'application/octet-stream' });
  assert.equal(parseFrame(frame('écran.jpg', fromHex('ffd8ff'))).mime, 'image/jpeg');
  for (const name of ['../x.png', 'a/b.png', 'a\\b.png', 'nul\0.png', '.', '..']) {
    assert.throws(() => parseFrame(frame(name)), FormatError, JSON.stringify(name));
  }
  assert.throws(() => parseFrame(frame('x'.repeat(256))), /name_len 256/);
  assert.throws(() => parseFrame(new Uint8Array([0])), /truncated/);
  assert.throws(() => parseFrame(concat(u16be(5), utf8('ab'))), /truncated/);
  assert.throws(() => parseFrame(concat(u16be(1), new Uint8Array([0xc3]))), /not UTF-8/);
});

function gapBytes(first, last, t0, t1, count) {
  const b = new Uint8Array(40);
  const dv = view(b);
  dv.setBigUint64(0, first);
  dv.setBigUint64(8, last);
  dv.setBigInt64(16, t0);
  dv.setBigInt64(24, t1);
  dv.setBigUint64(32, count);
  return b;
}

test('gap records: 40 bytes, range and count agree', () => {
  assert.deepEqual(parseGap(gapBytes(3n, 7n, -1n, 9n, 5n)),
    { firstSeq: 3n, lastSeq: 7n, firstCaptureUs: -1n, lastCaptureUs: 9n, count: 5n });
  assert.throws(() => parseGap(gapBytes(3n, 7n, 0n, 0n, 4n)), /range and count disagree/);
  assert.throws(() => parseGap(gapBytes(7n, 3n, 0n, 0n, 1n)), FormatError);
  assert.throws(() => parseGap(new Uint8Array(39)), /39 bytes, expected 40/);
  assert.throws(() => parseGap(new Uint8Array(41)), FormatError);
});

test('an authentic gap record opens and parses; its range must end right before it', async () => {
  const { keys } = await vectorKeys();
  const chunk = parseChunk(await sealChunk({ seq: 5n, gap: true }, gapBytes(1n, 4n, 10n, 40n, 4n)));
  assert.equal(chunk.gap, true);
  const p = parsePayload(chunk, await keys.open(chunk));
  assert.equal(p.type, 'gap');
  assert.equal(p.gap.count, 4n);
  const early = parseChunk(await sealChunk({ seq: 9n, gap: true }, gapBytes(1n, 4n, 10n, 40n, 4n)));
  assert.throws(() => parsePayload(early, gapBytes(1n, 4n, 10n, 40n, 4n)), /not the chunks right before it/);
});

test('an empty plaintext is an empty payload', () => {
  const chunk = parseChunk(fromHex(vectors.chunks[0].sealed));
  assert.deepEqual(parsePayload(chunk, new Uint8Array(0)), { type: 'empty' });
});
