// Sealed chunks: every parsing rule, tampering of any authenticated field, the nonce, StreamKeys.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FLAG_CHECKPOINT, FormatError, StreamKeys, TamperedError, UnknownDekError, nonce, openChunk, parseChunk, parseChunkAt,
} from '../assets/js/chunk.js';
import { concat, fromHex, toHex, u16be, utf8, view } from '../assets/js/hex.js';
import { sealChunk, signatureBlock, vectorKeys, vectors } from '../test-support/helpers.mjs';

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
    'version 0': [(b) => { b[4] = 0; }, /unknown version 0 \(this reader knows 1 and 2\)/],
    'version 3': [(b) => { b[4] = 3; }, /unknown version 3 \(this reader knows 1 and 2\)/],
    suite: [(b) => { b[5] = 2; }, /unknown suite 2/],
    'kind 0': [(b) => { b[6] = 0; }, /unknown kind 0/],
    'kind 4': [(b) => { b[6] = 4; }, /unknown kind 4/],
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

test('kind 3 (an activity batch) parses, as 1 and 2 do', () => {
  for (const kind of [1, 2, 3]) assert.equal(parseChunk(edited(sealed, (b) => { b[6] = kind; })).kind, kind);
});

test('a gap flag alone parses', async () => {
  const c = parseChunk(edited(sealed, (b) => { b[7] = 0x02; }));
  assert.equal(c.gap, true);
  assert.equal(c.final, false);
});

// Version 2 (docs/format.md "Sealed chunk", "Agent signatures"): the checkpoint flag and the
// signature after the ciphertext, built by hand under the vector DEK.

const ED25519 = 0x0807;
const SIG = new Uint8Array(64).map((_, i) => i + 1);
const PLAIN = utf8('a checkpoint chunk');
const checkpointChunk = (h = {}, trailer = signatureBlock(ED25519, SIG), plain = PLAIN) =>
  sealChunk({ version: 2, seq: 7n, flags: FLAG_CHECKPOINT, trailer, ...h }, plain);

test('a version-2 checkpoint parses: the signature follows the ciphertext, outside the AAD and the ciphertext', async () => {
  const bytes = await checkpointChunk();
  const ctLen = PLAIN.length + 16;
  const c = parseChunk(bytes);
  assert.equal(c.version, 2);
  assert.equal(c.flags, FLAG_CHECKPOINT);
  assert.equal(c.checkpoint, true);
  assert.equal(c.final, false);
  assert.equal(c.gap, false);
  assert.equal(c.scheme, ED25519);
  assert.deepEqual(c.signature, SIG);
  assert.equal(c.length, CT_AT + ctLen + 4 + SIG.length);
  assert.equal(c.length, bytes.length);
  assert.deepEqual(c.bytes, bytes);
  assert.deepEqual(c.aad, bytes.subarray(0, CT_AT));
  assert.equal(c.ciphertext.length, ctLen);
  assert.deepEqual(c.ciphertext, bytes.subarray(CT_AT, CT_AT + ctLen));
  assert.deepEqual(c.core, bytes.subarray(0, CT_AT + ctLen));
  assert.deepEqual(bytes.subarray(CT_AT + ctLen), concat(u16be(ED25519), u16be(64), SIG));
  const { keys } = await vectorKeys();
  assert.deepEqual(await keys.open(c), PLAIN);
});

test('a final version-2 checkpoint and an empty one open', async () => {
  const { keys } = await vectorKeys();
  const final = parseChunk(await checkpointChunk({ final: true, flags: FLAG_CHECKPOINT | 1 }));
  assert.equal(final.final, true);
  assert.equal(final.checkpoint, true);
  assert.deepEqual(await keys.open(final), PLAIN);
  const empty = parseChunk(await checkpointChunk({}, signatureBlock(0x0403, new Uint8Array(71).fill(9)), new Uint8Array(0)));
  assert.equal(empty.ciphertext.length, 16);
  assert.equal(empty.length, CT_AT + 16 + 4 + 71);
  assert.equal(empty.scheme, 0x0403);
  assert.deepEqual(await keys.open(empty), new Uint8Array(0));
});

test('a version-2 chunk without the checkpoint flag has no trailer and opens', async () => {
  const bytes = await sealChunk({ version: 2, seq: 4n }, PLAIN);
  const c = parseChunk(bytes);
  assert.equal(c.version, 2);
  assert.equal(c.checkpoint, false);
  assert.equal(c.scheme, null);
  assert.equal(c.signature, null);
  assert.equal(c.length, CT_AT + PLAIN.length + 16);
  assert.deepEqual(c.ciphertext, bytes.subarray(CT_AT));
  assert.deepEqual(c.core, bytes);
  const { keys } = await vectorKeys();
  assert.deepEqual(await keys.open(c), PLAIN);
  // The version byte is in the AAD: the same bytes as version 1 fail the tag.
  await assert.rejects(keys.open(parseChunk(edited(bytes, (b) => { b[4] = 1; }))), TamperedError);
  // A signature after a chunk that is not a checkpoint is not part of it.
  assert.throws(() => parseChunk(concat(bytes, signatureBlock(ED25519, SIG))), /68 bytes after the end/);
});

test('the checkpoint flag is authenticated; the signature bytes are not the ciphertext', async () => {
  const { keys } = await vectorKeys();
  const bytes = await checkpointChunk();
  // Without the flag the chunk ends at its ciphertext (the trailer is left over) and fails the tag.
  const plain = parseChunkAt(edited(bytes, (b) => { b[7] = 0; }), 0);
  assert.equal(plain.length, CT_AT + PLAIN.length + 16);
  await assert.rejects(keys.open(plain), TamperedError);
  // A different signature still opens (checking it is the verifier's job, not the tag's).
  const resigned = parseChunk(edited(bytes, (b) => { b[b.length - 1] ^= 0xff; }));
  assert.deepEqual(await keys.open(resigned), PLAIN);
});

test('version-2 and version-1 chunks read back to back', async () => {
  const first = await checkpointChunk();
  const second = await sealChunk({ version: 2, seq: 8n }, PLAIN);
  const all = concat(first, second, sealed);
  const a = parseChunkAt(all, 0);
  const b = parseChunkAt(all, a.length);
  const c = parseChunkAt(all, a.length + b.length);
  assert.deepEqual([a.seq, b.seq, c.seq], [7n, 8n, 1n]);
  assert.deepEqual([a.version, b.version, c.version], [2, 2, 1]);
  assert.equal(a.length + b.length + c.length, all.length);
  assert.deepEqual(a.signature, SIG);
});

test('a version-1 chunk with the checkpoint flag is refused, with or without a trailer', async () => {
  const plainV1 = await sealChunk({ flags: FLAG_CHECKPOINT }, PLAIN);
  const withTrailer = await sealChunk({ flags: FLAG_CHECKPOINT, trailer: signatureBlock(ED25519, SIG) }, PLAIN);
  for (const bytes of [plainV1, withTrailer, edited(sealed, (b) => { b[7] = FLAG_CHECKPOINT | 1; })]) {
    assert.throws(() => parseChunk(bytes), (e) => e instanceof FormatError && /checkpoint flag, bit 2, needs version 2, not 1/.test(e.message));
  }
});

test('a version-2 checkpoint with a bad signature length or a cut trailer is refused', async () => {
  const bytes = await checkpointChunk();
  const trailerAt = bytes.length - 4 - SIG.length;
  const bad = {
    'sig_len 0': [edited(bytes, (b, dv) => dv.setUint16(trailerAt + 2, 0)), /chunk: sig_len 0 is outside 1..=512/],
    'sig_len 513': [edited(bytes, (b, dv) => dv.setUint16(trailerAt + 2, 513)), /chunk: sig_len 513 is outside 1..=512/],
    'sig_len beyond the data': [edited(bytes, (b, dv) => dv.setUint16(trailerAt + 2, 65)), /truncated: signature needs 65 bytes/],
    'no trailer': [bytes.subarray(0, trailerAt), /truncated: scheme needs 2 bytes/],
    'scheme cut': [bytes.subarray(0, trailerAt + 1), /truncated: scheme needs 2 bytes/],
    'sig_len cut': [bytes.subarray(0, trailerAt + 3), /truncated: sig_len needs 2 bytes/],
    'signature cut': [bytes.subarray(0, bytes.length - 1), /truncated: signature needs 64 bytes/],
    'trailing byte': [concat(bytes, new Uint8Array(1)), /1 bytes after the end/],
    'reserved flag bit 3': [edited(bytes, (b) => { b[7] = 0x0c; }), /reserved flag bits set \(flags 0xc\)/],
    'gap with final': [edited(bytes, (b) => { b[7] = 0x07; }), /gap record cannot be final/],
    'version 3': [edited(bytes, (b) => { b[4] = 3; }), /unknown version 3 \(this reader knows 1 and 2\)/],
  };
  for (const [name, [b, message]] of Object.entries(bad)) {
    assert.throws(() => parseChunk(b), (e) => e instanceof FormatError && message.test(e.message), name);
  }
  for (let n = 0; n < bytes.length; n++) {
    assert.throws(() => parseChunk(bytes.subarray(0, n)), FormatError, `prefix of ${n}`);
  }
  // A 512-byte signature is the longest allowed.
  const longest = parseChunk(await checkpointChunk({}, signatureBlock(0x0503, new Uint8Array(512))));
  assert.equal(longest.signature.length, 512);
});
