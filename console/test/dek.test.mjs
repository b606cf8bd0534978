// DEK records: every parsing rule, and the checks made when unwrapping.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEK_LABEL, FormatError, UnwrapError, parseDekRecord, unwrapDek } from '../assets/js/dek.js';
import { importPublicKey } from '../assets/js/keyfile.js';
import { concat, fromHex, u16be, view } from '../assets/js/hex.js';
import { kekPublicPem, vectorKeys, vectors } from '../test-support/helpers.mjs';

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
    version: [edited((b) => { b[4] = 2; }), /unknown version 2/],
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
