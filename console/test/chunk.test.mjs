// Sealed chunks: every parsing rule, tampering of any authenticated field, the nonce, StreamKeys.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FormatError, StreamKeys, TamperedError, UnknownDekError, nonce, openChunk, parseChunk, parseChunkAt,
} from '../assets/js/chunk.js';
import { concat, fromHex, toHex, view } from '../assets/js/hex.js';
import { sealChunk, vectorKeys, vectors } from '../test-support/helpers.mjs';

const sealed = fromHex(vectors.chunks[1].sealed); // frames, seq 1, not final
const AGENT_LEN = 12; // "vector-agent"
const CT_AT = 66 + AGENT_LEN;

function edited(bytes, edit) {
  const copy = bytes.slice();
  edit(copy, view(copy));
  return copy;
}

test('the chunk header fields and AAD are where the spec puts them', () => {
  const c = parseChunk(sealed);
  assert.equal(c.version, 1);
  assert.equal(c.suite, 1);
  assert.equal(c.flags, 0);
  assert.equal(c.gap, false);
  assert.equal(c.length, sealed.length);
  assert.equal(c.aad.length, CT_AT);
  assert.deepEqual(c.aad, sealed.subarray(0, CT_AT));
  assert.deepEqual(c.ciphertext, sealed.subarray(CT_AT));
  assert.equal(toHex(c.dekId), vectors.dek_id);
});

test('nonce is 00 00 00 || seq u64 || final u8', () => {
  assert.equal(toHex(nonce(0n, false)), '000000000000000000000000');
  assert.equal(toHex(nonce(0x0102030405060708n, true)), '000000010203040506070801');
  assert.equal(toHex(nonce(2, 1)), '000000000000000000000201');
});

test('a flipped ciphertext or tag byte throws TamperedError', async () => {
  const { keys } = await vectorKeys();
  for (const at of [CT_AT, sealed.length - 1]) {
    const bad = parseChunk(edited(sealed, (b) => { b[at] ^= 1; }));
    await assert.rejects(keys.open(bad), TamperedError);
  }
});

test('changing any authenticated header field throws TamperedError', async () => {
  const { keys } = await vectorKeys();
  const edits = {
    seq: (b, dv) => dv.setBigUint64(44, 5n),
    'final flag': (b) => { b[7] = 1; },
    'capture time': (b, dv) => dv.setBigInt64(52, 1n),
    session: (b) => { b[24] ^= 0x80; },
    stream: (b, dv) => dv.setUint32(40, 1),
    kind: (b) => { b[6] = 2; },
    agent: (b) => { b[62] = 'V'.charCodeAt(0); },
  };
  for (const [name, edit] of Object.entries(edits)) {
    const bad = parseChunk(edited(sealed, edit));
    await assert.rejects(keys.open(bad), TamperedError, name);
  }
  await assert.rejects(keys.open(parseChunk(edited(sealed, (b, dv) => dv.setBigUint64(44, 5n)))),
    { name: 'TamperedError', message: 'chunk 5 of stream 0: authentication failed' });
});

test('a chunk whose agent differs from its DEK record is refused before opening', async () => {
  const { keys } = await vectorKeys();
  const other = await sealChunk({ agent: 'other-agent' }, new Uint8Array(3));
  await assert.rejects(keys.open(parseChunk(other)), (e) => e instanceof TamperedError && /belongs to "vector-agent"/.test(e.message));
});

test('a chunk under an unknown DEK gives UnknownDekError', async () => {
  const keys = new StreamKeys();
  await assert.rejects(keys.open(parseChunk(sealed)), UnknownDekError);
});

test('an empty chunk (tag only) opens to nothing', async () => {
  const { keys } = await vectorKeys();
  const empty = parseChunk(await sealChunk({ seq: 3n, final: true }, new Uint8Array(0)));
  assert.equal(empty.ciphertext.length, 16);
  assert.deepEqual(await keys.open(empty), new Uint8Array(0));
});

test('openChunk with another stream key throws TamperedError', async () => {
  const { keys } = await vectorKeys();
  const keystrokeKey = await keys.keyFor(parseChunk(fromHex(vectors.chunks[3].sealed)));
  await assert.rejects(openChunk(keystrokeKey, parseChunk(sealed)), TamperedError);
});

test('parseChunk refuses every truncation and trailing bytes', () => {
  for (let n = 0; n < sealed.length; n++) {
    assert.throws(() => parseChunk(sealed.subarray(0, n)), FormatError, `prefix of ${n}`);
  }
  assert.throws(() => parseChunk(concat(sealed, new Uint8Array(1))), /1 bytes after the end/);
});

test('parseChunkAt reads chunks back to back', () => {
  const two = concat(sealed, fromHex(vectors.chunks[2].sealed));
  const a = parseChunkAt(two, 0);
  const b = parseChunkAt(two, a.length);
  assert.equal(a.seq, 1n);
  assert.equal(b.seq, 2n);
  assert.equal(b.final, true);
  assert.equal(a.length + b.length, two.length);
  assert.throws(() => parseChunkAt(two, two.length), FormatError);
  assert.throws(() => parseChunkAt(two, two.length + 1), FormatError);
});

test('parseChunk refuses bad reserved bits, versions, suites, kinds and lengths', () => {
  const bad = {
    'reserved flag bit 2': [(b) => { b[7] = 0x04; }, /reserved flag bits/],
    'reserved flag bit 7': [(b) => { b[7] = 0x80; }, /reserved flag bits/],
    'gap with final': [(b) => { b[7] = 0x03; }, /gap record cannot be final/],
    magic: [(b) => { b[0] = 0x58; }, /bad magic/],
    version: [(b) => { b[4] = 2; }, /unknown version 2/],
    suite: [(b) => { b[5] = 2; }, /unknown suite 2/],
    'kind 0': [(b) => { b[6] = 0; }, /unknown kind 0/],
    'kind 3': [(b) => { b[6] = 3; }, /unknown kind 3/],
    'agent_len 0': [(b, dv) => dv.setUint16(60, 0), /agent_len 0 is outside 1..=256/],
    'agent_len 257': [(b, dv) => dv.setUint16(60, 257), /agent_len 257/],
    'agent control character': [(b) => { b[62] = 0x07; }, /control character/],
    'agent not UTF-8': [(b) => { b[62] = 0xff; }, /not UTF-8/],
    'ct_len 15': [(b, dv) => dv.setUint32(62 + AGENT_LEN, 15), /ct_len 15 is outside 16..=16777232/],
    'ct_len too large': [(b, dv) => dv.setUint32(62 + AGENT_LEN, 16777233), /ct_len 16777233/],
    'ct_len beyond the data': [(b, dv) => dv.setUint32(62 + AGENT_LEN, 1000), /truncated/],
  };
  for (const [name, [edit, message]] of Object.entries(bad)) {
    assert.throws(() => parseChunk(edited(sealed, edit)), (e) => e instanceof FormatError && message.test(e.message), name);
  }
});

test('a gap flag alone parses', async () => {
  const c = parseChunk(edited(sealed, (b) => { b[7] = 0x02; }));
  assert.equal(c.gap, true);
  assert.equal(c.final, false);
});
