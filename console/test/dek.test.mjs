// DEK records: every parsing rule, and the checks made when unwrapping.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEK_LABEL, FormatError, UnwrapError, parseDekRecord, unwrapDek } from '../assets/js/dek.js';
import { StreamKeys, parseChunk } from '../assets/js/chunk.js';
import { importPublicKey } from '../assets/js/keyfile.js';
import { concat, fromHex, toHex, u16be, view } from '../assets/js/hex.js';
import { kekPublicPem, signatureBlock, vectorKeys, vectors } from '../test-support/helpers.mjs';

const record = fromHex(vectors.dek_record);
const AGENT_LEN = 12;
const WRAPPED_AT = 82 + AGENT_LEN;

function edited(edit) {
  const copy = record.slice();
  edit(copy, view(copy));
  return copy;
}

test('DEK record fields', () => {
  const r = parseDekRecord(record);
  assert.equal(r.agent, 'vector-agent');
  assert.equal(r.agentBytes.length, AGENT_LEN);
  assert.equal(r.agentSession.length, 16);
  assert.equal(r.kekIdBytes.length, 32);
  assert.deepEqual(r.wrapped, record.subarray(WRAPPED_AT));
});

test('parseDekRecord refuses what the spec forbids', () => {
  const bad = {
    magic: [edited((b) => { b[3] = 0x58; }), /bad magic/],
    'version 0': [edited((b) => { b[4] = 0; }), /unknown version 0 \(this reader knows 1 and 2\)/],
    'version 3': [edited((b) => { b[4] = 3; }), /unknown version 3 \(this reader knows 1 and 2\)/],
    suite: [edited((b) => { b[5] = 0; }), /unknown suite 0/],
    'agent_len 0': [edited((b, dv) => dv.setUint16(78, 0)), /agent_len 0/],
    'agent_len 257': [edited((b, dv) => dv.setUint16(78, 257)), /agent_len 257/],
    'agent control character': [edited((b) => { b[80] = 0x7f; }), /control character/],
    'wrapped_len 255': [edited((b, dv) => dv.setUint16(80 + AGENT_LEN, 255)), /wrapped_len 255 is outside 256..=512/],
    'wrapped_len 513': [edited((b, dv) => dv.setUint16(80 + AGENT_LEN, 513)), /wrapped_len 513/],
    'trailing byte': [concat(record, new Uint8Array(1)), /1 bytes after the end/],
  };
  for (const [name, [bytes, message]] of Object.entries(bad)) {
    assert.throws(() => parseDekRecord(bytes), (e) => e instanceof FormatError && message.test(e.message), name);
  }
  for (let n = 0; n < record.length; n++) assert.throws(() => parseDekRecord(record.subarray(0, n)), FormatError);
});

test('a DEK record with a 512-byte wrap parses (4096-bit KEK)', () => {
  const big = concat(record.subarray(0, 80 + AGENT_LEN), u16be(512), new Uint8Array(512));
  assert.equal(parseDekRecord(big).wrapped.length, 512);
});

async function withWrapped(dekBytes, label = DEK_LABEL) {
  const pub = await importPublicKey(kekPublicPem);
  const wrapped = new Uint8Array(await crypto.subtle.encrypt({ name: 'RSA-OAEP', label }, pub, dekBytes));
  return parseDekRecord(concat(record.subarray(0, WRAPPED_AT), wrapped));
}

test('a DEK that is not 32 bytes is refused', async () => {
  const { privateKey } = await vectorKeys();
  for (const n of [16, 31, 33, 64]) {
    await assert.rejects(unwrapDek(await withWrapped(new Uint8Array(n).fill(7)), privateKey),
      (e) => e instanceof FormatError && /not 32 bytes/.test(e.message), `${n} bytes`);
  }
  const ok = await unwrapDek(await withWrapped(new Uint8Array(32).fill(7)), privateKey);
  assert.equal(ok.algorithm.name, 'HKDF');
  assert.deepEqual([...ok.usages].sort(), ['deriveBits', 'deriveKey']);
});

test('a DEK wrapped without the sealstream label, or altered, gives UnwrapError', async () => {
  const { privateKey } = await vectorKeys();
  await assert.rejects(unwrapDek(await withWrapped(new Uint8Array(32), new Uint8Array(0)), privateKey), UnwrapError);
  const flipped = parseDekRecord(edited((b) => { b[WRAPPED_AT + 10] ^= 1; }));
  await assert.rejects(unwrapDek(flipped, privateKey), UnwrapError);
});

// Version 2 (docs/format.md "DEK record", "Agent signatures"): the v1 record with its version
// byte set to 2 and `cert_len u16 | cert | scheme u16 | sig_len u16 | signature` appended.

const CERT = fromHex('3082000a' + '0'.repeat(20)); // bytes standing in for the agent's DER certificate
const SCHEME = 0x0403;
const SIG = new Uint8Array(70).fill(0x5a);
const v2Body = (cert = CERT) => concat(edited((b) => { b[4] = 2; }), u16be(cert.length), cert);
const v2Record = (cert = CERT, sig = SIG) => concat(v2Body(cert), signatureBlock(SCHEME, sig));
const CERT_LEN_AT = record.length;
const SIG_AT = CERT_LEN_AT + 2 + CERT.length;

test('a version-2 DEK record parses to its version-1 fields plus cert, scheme and signature', () => {
  const v1 = parseDekRecord(record);
  const v2 = parseDekRecord(v2Record());
  assert.equal(v1.version, 1);
  assert.equal(v1.cert, null);
  assert.equal(v1.scheme, null);
  assert.equal(v1.signature, null);
  assert.equal(v2.version, 2);
  for (const field of ['dekId', 'kekIdBytes', 'agentSession', 'agentBytes', 'wrapped']) {
    assert.equal(toHex(v2[field]), toHex(v1[field]), field);
  }
  assert.equal(v2.kekId, v1.kekId);
  assert.equal(v2.agent, v1.agent);
  assert.equal(v2.createdUs, v1.createdUs);
  assert.deepEqual(v2.cert, CERT);
  assert.equal(v2.scheme, SCHEME);
  assert.deepEqual(v2.signature, SIG);
  assert.deepEqual(v2.signed, v2Body()); // bytes 0 .. 84+a+w+c
});

test('a version-2 DEK record unwraps exactly like its version-1 form', async () => {
  const { privateKey } = await vectorKeys();
  const bits = async (r) => {
    const dek = await unwrapDek(r, privateKey);
    const info = new Uint8Array(0);
    return new Uint8Array(await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: r.dekId, info }, dek, 256));
  };
  const v1 = parseDekRecord(record);
  const v2 = parseDekRecord(v2Record());
  assert.deepEqual(await bits(v2), await bits(v1));
  // Its DEK opens the vector chunks.
  const keys = new StreamKeys();
  keys.addDek(v2, await unwrapDek(v2, privateKey));
  for (const c of vectors.chunks) assert.equal(toHex(await keys.open(parseChunk(fromHex(c.sealed)))), c.plaintext);
});

test('parseDekRecord refuses what version 2 forbids', () => {
  const bad = {
    'trailing byte after the signature': [concat(v2Record(), new Uint8Array(1)), /1 bytes after the end/],
    'v2 without cert and signature': [v2Body().subarray(0, CERT_LEN_AT), /truncated: cert_len needs 2 bytes/],
    'v2 without signature': [v2Body(), /truncated: scheme needs 2 bytes/],
    'v1 with a v2 tail': [concat(record, v2Record().subarray(CERT_LEN_AT)), /\d+ bytes after the end/],
    'cert_len 0': [concat(v2Body(new Uint8Array(0)), signatureBlock(SCHEME, SIG)), /cert_len 0 is outside 1..=4096/],
    'cert_len 4097': [v2Record(new Uint8Array(4097)), /cert_len 4097 is outside 1..=4096/],
    'cert beyond the data': [edited2((b, dv) => dv.setUint16(CERT_LEN_AT, 4000)), /truncated: cert needs 4000 bytes/],
    'sig_len 0': [edited2((b, dv) => dv.setUint16(SIG_AT + 2, 0)), /sig_len 0 is outside 1..=512/],
    'sig_len 513': [edited2((b, dv) => dv.setUint16(SIG_AT + 2, 513)), /sig_len 513 is outside 1..=512/],
    'sig_len beyond the data': [edited2((b, dv) => dv.setUint16(SIG_AT + 2, 71)), /truncated: signature needs 71 bytes/],
    'version 3': [edited2((b) => { b[4] = 3; }), /unknown version 3 \(this reader knows 1 and 2\)/],
  };
  for (const [name, [bytes, message]] of Object.entries(bad)) {
    assert.throws(() => parseDekRecord(bytes), (e) => e instanceof FormatError && message.test(e.message), name);
  }
  const full = v2Record();
  for (let n = 0; n < full.length; n++) assert.throws(() => parseDekRecord(full.subarray(0, n)), FormatError, `prefix of ${n}`);
  // The longest certificate and signature are allowed.
  const longest = parseDekRecord(v2Record(new Uint8Array(4096), new Uint8Array(512)));
  assert.equal(longest.cert.length, 4096);
  assert.equal(longest.signature.length, 512);
});

function edited2(edit) {
  const copy = v2Record();
  edit(copy, view(copy));
  return copy;
}
