// The test vectors of tests/vectors: every chunk opens to its plaintext, the KEK ids agree.
// The negative vectors are served to the page's own session module in session.test.mjs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { kekId, openPrivateKey, WrongPassphraseError, classifyPrivateKey } from '../assets/js/keyfile.js';
import { parseDekRecord, unwrapDek } from '../assets/js/dek.js';
import { deriveStreamKey, openChunk, parseChunk } from '../assets/js/chunk.js';
import { fromHex, toHex, uuidString } from '../assets/js/hex.js';
import { kekPem, kekPublicPem, passphrase, vectorKeys, vectors } from '../test-support/helpers.mjs';

test('the vector key file is openssl 3 default PKCS#8 PBES2', () => {
  const k = classifyPrivateKey(kekPem);
  assert.equal(k.form, 'pkcs8-pbes2');
  assert.equal(k.prf, 'sha256');
  assert.equal(k.cipher, 'aes-256-cbc');
  assert.equal(k.iv.length, 16);
  assert.ok(k.iterations >= 1);
});

test('kek.crt, vectors.json and the DEK record name the same KEK id', async () => {
  const id = await kekId(kekPublicPem);
  assert.match(id, /^sha256:[0-9a-f]{64}$/);
  assert.equal(id, vectors.kek_id);
  assert.equal(parseDekRecord(fromHex(vectors.dek_record)).kekId, vectors.kek_id);
});

test('the DEK record parses to the vector fields', () => {
  const r = parseDekRecord(fromHex(vectors.dek_record));
  assert.equal(toHex(r.dekId), vectors.dek_id);
  assert.equal(r.agent, vectors.chunks[0].agent);
  assert.equal(typeof r.createdUs, 'bigint');
  assert.equal(r.wrapped.length, 256);
});

test('every vector chunk opens to its plaintext (openPrivateKey → unwrapDek → deriveStreamKey → openChunk)', async () => {
  const privateKey = await openPrivateKey(kekPem, passphrase);
  assert.equal(privateKey.extractable, false);
  assert.deepEqual(privateKey.usages, ['unwrapKey']);
  assert.equal(privateKey.algorithm.name, 'RSA-OAEP');
  const record = parseDekRecord(fromHex(vectors.dek_record));
  const dek = await unwrapDek(record, privateKey);
  assert.equal(dek.extractable, false);
  assert.equal(dek.algorithm.name, 'HKDF');
  for (const v of vectors.chunks) {
    const chunk = parseChunk(fromHex(v.sealed));
    assert.equal(chunk.agent, v.agent);
    assert.equal(uuidString(chunk.sessionId), v.session);
    assert.equal(chunk.streamId, v.stream);
    assert.equal(chunk.kind, { frames: 1, keystrokes: 2, activity: 3 }[v.kind]);
    assert.equal(chunk.seq, BigInt(v.seq));
    assert.equal(chunk.final, v.final);
    assert.equal(chunk.captureUs, BigInt(v.capture_time_us));
    const key = await deriveStreamKey(dek, chunk.dekId, chunk.sessionId, chunk.streamId, chunk.kind, chunk.agentBytes);
    assert.equal(key.extractable, false);
    assert.deepEqual(key.usages, ['decrypt']);
    assert.equal(toHex(await openChunk(key, chunk)), v.plaintext);
  }
});

test('the StreamKeys cache opens the vector chunks too', async () => {
  const { keys } = await vectorKeys();
  for (const v of vectors.chunks) {
    assert.equal(toHex(await keys.open(parseChunk(fromHex(v.sealed)))), v.plaintext);
  }
});

test('a wrong passphrase gives WrongPassphraseError', async () => {
  await assert.rejects(openPrivateKey(kekPem, passphrase + 'x'), WrongPassphraseError);
  await assert.rejects(openPrivateKey(kekPem, ''), (err) => err instanceof WrongPassphraseError
    && err.message === 'wrong passphrase for this key file');
});

test('an encrypted key without a passphrase is a TypeError', async () => {
  await assert.rejects(openPrivateKey(kekPem), TypeError);
});
