// proof.js: the signed vectors of tests/vectors get the verdicts `sealstream verify --agent-ca`
// gives them (tests/it/vectors.rs), and streams built here from the vector agent's key and DEK, cut,
// with a chunk removed or altered, or unsigned, get the verdicts tests/it/proof/signatures.rs
// expects from verify. Certificates built here (a P-256 CA) check the agent certificate rules of
// sign.rs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AgentCa, CHAIN_START, DEK_CONTEXT, StreamProof, chainNext, checkpointMessage, ecdsaSignatureToRaw, fingerprint, proveStream,
  verifyDekRecord,
} from '../assets/js/proof.js';
import { StreamKeys, nonce, parseChunk, streamKeyInfo } from '../assets/js/chunk.js';
import { parseDekRecord, unwrapDek } from '../assets/js/dek.js';
import { encodeOid, encodeTlv, pemBlocks } from '../assets/js/der.js';
import { concat, fromHex, toHex, u16be, u32be, utf8, view } from '../assets/js/hex.js';
import { vectorKeys, vectors } from '../test-support/helpers.mjs';

const subtle = globalThis.crypto.subtle;
const S = vectors.signed;
const AGENT = S.agent;
const SESSION = new Uint8Array(16).fill(0x5e);
const T0 = 1_795_773_600_000_000n;
const ca = await AgentCa.fromPem(S.agent_ca);
const signedRecord = fromHex(S.dek_record);

// ---- a test sealer: format version 1 and 2 chunks, checkpoints signed by a given key ----

const i64 = (n) => { const b = new Uint8Array(8); view(b).setBigInt64(0, BigInt(n)); return b; };
const u64 = (n) => { const b = new Uint8Array(8); view(b).setBigUint64(0, BigInt(n)); return b; };
const frame = (name, image) => concat(u16be(name.length), utf8(name), utf8(image));

/**
 * The vector agent's Ed25519 key signs as the agent does. rcgen writes PKCS#8 version 2 (with the
 * public key), which Node's OpenSSL does not import: the same seed as version 1.
 */
const agentSeed = pemBlocks(S.agent_key)[0].der.subarray(16, 48);
const agentKey = await subtle.importKey('pkcs8', encodeTlv(0x30, encodeTlv(0x02, new Uint8Array([0])),
  encodeTlv(0x30, encodeOid('1.3.101.112')), encodeTlv(0x04, encodeTlv(0x04, agentSeed))), { name: 'Ed25519' }, false, ['sign']);
const agentSign = async (msg) => ({ scheme: 0x0807, sig: new Uint8Array(await subtle.sign({ name: 'Ed25519' }, agentKey, msg)) });

/** One chunk's core (header, ciphertext and tag) under the raw `dek`. */
async function sealCore({ version, seq, captureUs, final, gap = false, checkpoint, plaintext, dek, dekId, session = SESSION, stream = 0, kind = 1 }) {
  const agent = utf8(AGENT);
  const flags = (final ? 1 : 0) | (gap ? 2 : 0) | (checkpoint ? 4 : 0);
  const aad = concat(utf8('SSCK'), new Uint8Array([version, 1, kind, flags]), dekId, session, u32be(stream), u64(seq), i64(captureUs),
    u16be(agent.length), agent, u32be(plaintext.length + 16));
  const ikm = await subtle.importKey('raw', dek, 'HKDF', false, ['deriveKey']);
  const key = await subtle.deriveKey({ name: 'HKDF', hash: 'SHA-256', salt: dekId, info: streamKeyInfo(session, stream, kind, agent) },
    ikm, { name: 'AES-GCM', length: 256 }, false, ['encrypt']);
  return concat(aad, new Uint8Array(await subtle.encrypt({ name: 'AES-GCM', iv: nonce(seq, final), additionalData: aad }, key, plaintext)));
}

/**
 * A stream of `plaintexts` (the last one final), sealed in `version` under the signed vector DEK,
 * with a checkpoint every `every` chunks and at the final one, each signed by `sign`.
 */
async function sealStream({ plaintexts, version = 2, every = 4, sign = agentSign, interval = 500_000n, dek = fromHex(S.dek), dekId = fromHex(S.dek_id) }) {
  return sealItems(plaintexts.map((plaintext, seq) => {
    const final = seq === plaintexts.length - 1;
    return { seq, plaintext, final, checkpoint: version === 2 && (final || seq % every === every - 1) };
  }), { version, sign, interval, dek, dekId });
}

/** Chunks {seq, plaintext, final, gap, checkpoint}, in order; the chain runs over those present. */
async function sealItems(items, { version = 2, sign = agentSign, interval = 500_000n, dek = fromHex(S.dek), dekId = fromHex(S.dek_id) } = {}) {
  let head = CHAIN_START;
  const out = [];
  for (const { seq, plaintext, final = false, gap = false, checkpoint = false } of items) {
    const core = await sealCore({ version, seq, captureUs: T0 + BigInt(seq) * interval, final, gap, checkpoint, plaintext, dek, dekId });
    head = await chainNext(head, core);
    if (!checkpoint) {
      out.push(core);
      continue;
    }
    const { scheme, sig } = await sign(checkpointMessage(head));
    out.push(concat(core, u16be(scheme), u16be(sig.length), sig));
  }
  return out;
}

/** Nine frames and an empty final chunk (tests/it/proof/signatures.rs `record(Some("agent"), 9)`): checkpoints at 3, 7 and 9. */
const nineFrames = [...Array.from({ length: 9 }, (_, i) => frame(`f${i}.png`, `frame ${i}`)), new Uint8Array(0)];
const recording = await sealStream({ plaintexts: nineFrames });

let signedKeys;
/** StreamKeys holding the signed record's DEK, unwrapped with the vector KEK. */
async function keys() {
  if (!signedKeys) {
    const { privateKey } = await vectorKeys();
    const record = parseDekRecord(signedRecord);
    signedKeys = new StreamKeys();
    signedKeys.addDek(record, await unwrapDek(record, privateKey));
  }
  return signedKeys;
}

const prove = (chunks, extra = {}) => proveStream({ chunks, records: [signedRecord], ca, ...extra });

// ---- the vectors ----

test('the signed vectors: chain heads, the record signature and the certificate, as sign.rs computes them', async () => {
  let head = CHAIN_START;
  for (const c of S.chunks) {
    head = await chainNext(head, parseChunk(fromHex(c.sealed)).core);
    assert.equal(toHex(head), c.chain_head);
  }
  const record = parseDekRecord(signedRecord);
  await verifyDekRecord(record);
  const der = pemBlocks(S.agent_ca)[0].der;
  assert.equal(ca.fingerprint, await fingerprint(der));
  const info = await ca.check(record.cert, AGENT, record.createdUs);
  assert.equal(info.fingerprint, await fingerprint(pemBlocks(S.agent_cert)[0].der));
  assert.match(info.serial, /^[0-9a-f]+$/);
});

test('this test sealer makes the signed vector stream byte for byte', async () => {
  const made = await sealStream({ plaintexts: S.chunks.map((c) => fromHex(c.plaintext)), every: 2, interval: 1_000_000n });
  assert.deepEqual(made.map(toHex), S.chunks.map((c) => c.sealed));
});

test('the signed vector stream is verified, and opens under the unwrapped DEK', async () => {
  const v = await prove(S.chunks.map((c) => fromHex(c.sealed)), { keys: await keys() });
  assert.equal(v.status, 'verified');
  assert.equal(v.verdict, 'ok');
  assert.equal(v.firstUnprovenSeq, null);
  assert.equal(v.authenticated, 3);
  assert.deepEqual(v.problems, []);
  assert.equal(v.proof.proof, 'signed');
  assert.equal(v.proof.caChecked, true);
  assert.equal(v.proof.checkpoint, 2);
  assert.equal(v.proof.proven, 3);
  assert.equal(v.proof.unproven, 0);
  assert.equal(v.caFingerprint, ca.fingerprint);
  assert.match(v.message, /^verified: signed by agent "vector-agent" through its final chunk 2$/);
});

// What each negative vector tells a reviewer, and the first chunk no signature covers.
const NEGATIVE_WORDS = {
  "checkpoint signed by another agent's key": [/^chunk 2 altered, removed or added after the agent signed it/, 2],
  'recording signed by an agent certificate of another CA': [/^signed by an agent certificate not issued by the pinned CA$/, 0],
  'chunk removed before a checkpoint': [/^chunk 1 removed \(and 1 more problem\)$/, 0],
  "version-1 chunks under the agent's signed DEK (sealed by a KEK holder)": [/^not made by the agent/, 0],
};

for (const n of S.negative) {
  test(`signed negative vector "${n.name}" is ${n.expect}, as verify --agent-ca says`, async () => {
    const v = await proveStream({ chunks: n.stream.map(fromHex), records: [fromHex(n.dek_record ?? S.dek_record)], ca });
    assert.equal(v.verdict, n.expect);
    assert.equal(v.status, 'tampered');
    assert.ok(v.problems.some((p) => p.includes(n.detail)), `${n.detail} in ${JSON.stringify(v.problems)}`);
    const [words, first] = NEGATIVE_WORDS[n.name];
    assert.match(v.message, words);
    assert.equal(v.firstUnprovenSeq, first);
  });
}

// The `readers` section's single-stream cases (issue 22): the page's verdict, proof and capture
// times are the ones every reader gives, with the section's agent CA pinned and without
// (certificate validity in microseconds, an invalid proof when any checkpoint fails, unproven
// and unsigned only against a pinned CA, the earliest and latest capture time).
const R = vectors.readers;
const readersCa = await AgentCa.fromPem(R.agent_ca);
for (const c of R.cases.filter((x) => x.stream)) {
  test(`reader case "${c.name}" gets the verdict every reader gives it`, async () => {
    const [want] = c.streams;
    for (const [mode, pinned] of [['with_ca', readersCa], ['without_ca', null]]) {
      const v = await proveStream({ chunks: c.stream.map(fromHex), records: [fromHex(c.dek_record)], ca: pinned });
      assert.equal(v.verdict, want[mode].verdict, `${mode}: ${JSON.stringify(v.problems)}`);
      assert.equal(v.proof.proof, want[mode].proof, mode);
      assert.equal(v.firstCaptureUs, want.first_capture_us, mode);
      assert.equal(v.lastCaptureUs, want.last_capture_us, mode);
      if (want[mode].detail) assert.ok(v.problems.some((p) => p.includes(want[mode].detail)), `${mode}: ${JSON.stringify(v.problems)}`);
    }
  });
}

// ---- streams made here (tests/it/proof/signatures.rs's cases) ----

test('a whole signed recording is verified, with capture times from its own headers', async () => {
  const v = await prove(recording, { keys: await keys() });
  assert.equal(v.status, 'verified');
  assert.equal(v.verdict, 'ok');
  assert.equal(v.proof.checkpoint, 9);
  assert.equal(v.authenticated, 10);
  assert.equal(v.firstCaptureUs, Number(T0));
  assert.equal(v.lastCaptureUs, Number(T0 + 9n * 500_000n));
});

test('a recording whose last chunk was cut is incomplete, the chunk after the last checkpoint unproven', async () => {
  // tests/it/proof/signatures.rs: "proven through chunk 7; 1 chunk(s) after it UNPROVEN", exit 7.
  const v = await prove(recording.slice(0, 9));
  assert.equal(v.status, 'incomplete');
  assert.equal(v.verdict, 'incomplete');
  assert.equal(v.proof.checkpoint, 7);
  assert.equal(v.proof.unproven, 1);
  assert.equal(v.firstUnprovenSeq, 8);
  assert.equal(v.provenThrough, 7);
  assert.match(v.message, /^cut after chunk 8, or still recording: there is no final chunk; chunk 8 not yet signed \(chunks 0–7 are\)$/);
  // Cut right after a checkpoint: every chunk left is proven, and still no final chunk.
  const w = await prove(recording.slice(0, 8));
  assert.equal(w.status, 'incomplete');
  assert.equal(w.firstUnprovenSeq, null);
  assert.match(w.message, /^cut after chunk 7, or still recording/);
});

test('a chunk removed in the middle is tampering, found without keys', async () => {
  const v = await prove(recording.filter((_, i) => i !== 5));
  assert.equal(v.status, 'tampered');
  assert.equal(v.verdict, 'tampered');
  assert.ok(v.problems.includes('chunk 5 is missing'), JSON.stringify(v.problems));
  assert.ok(v.problems.some((p) => p.startsWith('checkpoint at chunk 7: the signature does not verify')));
  assert.match(v.message, /^chunk 5 removed/);
  assert.equal(v.firstUnprovenSeq, 4); // the checkpoint at 3 still proves 0..=3
  const w = await prove(recording.filter((_, i) => i !== 2 && i !== 3));
  assert.ok(w.problems.includes('chunks 2 to 3 are missing'));
  assert.match(w.message, /^chunks 2–3 removed/);
  assert.equal(w.firstUnprovenSeq, 0);
});

test('a chunk altered in the store fails its checkpoint without keys and its tag with them', async () => {
  const altered = recording.slice();
  altered[5] = altered[5].slice();
  altered[5][altered[5].length - 3] ^= 1; // in the tag of a plain (not checkpoint) chunk
  const keyless = await prove(altered);
  assert.equal(keyless.verdict, 'tampered');
  assert.match(keyless.message, /^chunks 4–7 altered, removed or added after the agent signed them \(the signature at chunk 7 does not verify\)/);
  assert.equal(keyless.firstUnprovenSeq, 4);
  const opened = await prove(altered, { keys: await keys() });
  assert.equal(opened.status, 'tampered');
  assert.ok(opened.problems.some((p) => p.startsWith('chunk 5 of stream 0: authentication failed')), JSON.stringify(opened.problems));
  assert.match(opened.message, /^chunk 5 altered \(it fails authentication\)/);
  assert.equal(opened.firstUnprovenSeq, 4);
});

test('a chunk re-sealed by a KEK holder opens, and is still tampering: the chain breaks', async () => {
  // tests/it/proof/signatures.rs a_kek_holder_cannot_alter_reorder_or_cut_a_signed_stream: a valid tag, no signature.
  const forged = recording.slice();
  forged[1] = await sealCore({
    version: 2, seq: 1, captureUs: T0 + 500_000n, final: false, checkpoint: false, plaintext: frame('f1.png', 'an altered frame'),
    dek: fromHex(S.dek), dekId: fromHex(S.dek_id),
  });
  const v = await prove(forged, { keys: await keys() });
  assert.equal(v.authenticated, 10);
  assert.equal(v.verdict, 'tampered');
  assert.ok(v.problems.some((p) => p.startsWith('checkpoint at chunk 3: the signature does not verify')));
  assert.match(v.message, /^chunks 0–3 altered, removed or added after the agent signed them/);
  assert.equal(v.firstUnprovenSeq, 0);
  // Nor can it add a chunk after the final one.
  const after = await sealCore({
    version: 2, seq: 10, captureUs: T0 + 5_000_000n, final: false, checkpoint: false, plaintext: frame('f10.png', 'added'),
    dek: fromHex(S.dek), dekId: fromHex(S.dek_id),
  });
  const w = await prove([...recording, after], { keys: await keys() });
  assert.ok(w.problems.includes('chunk 10 comes after the final chunk 9'));
  assert.match(w.message, /^chunk 10 added after the final chunk 9$/);
  assert.equal(w.firstUnprovenSeq, 10);
});

test('an unsigned (version 1) stream of an agent whose other records are signed is unsigned, not verified', async () => {
  // tests/it/proof/signatures.rs a_recording_forged_with_the_public_kek_is_unsigned_and_refused: "UNSIGNED", exit 7.
  const { keys: v1Keys } = await vectorKeys();
  const chunks = vectors.chunks.filter((c) => c.stream === 0).map((c) => fromHex(c.sealed));
  const records = [fromHex(vectors.dek_record), signedRecord];
  const v = await proveStream({ chunks, records, ca, keys: v1Keys });
  assert.equal(v.status, 'unsigned');
  // verify --agent-ca's verdict `unsigned`, which --allow-incomplete never waives (issue 22).
  assert.equal(v.verdict, 'unsigned');
  assert.deepEqual(v.proof, { proof: 'unsigned' });
  assert.equal(v.firstUnprovenSeq, 0);
  assert.equal(v.authenticated, 3);
  assert.match(v.message, /^not signed by a CA-issued agent/);
  // Without a pinned CA, verify says ok; the page still says unsigned.
  const w = await proveStream({ chunks, records });
  assert.equal(w.verdict, 'ok');
  assert.equal(w.status, 'unsigned');
  // Version 1 chunks sealed under the agent's signed DEK are tampering (the fourth negative vector, made here).
  const kekHolder = await sealStream({ plaintexts: nineFrames, version: 1 });
  const x = await prove(kekHolder, { keys: await keys() });
  assert.equal(x.verdict, 'tampered');
  assert.ok(x.problems[0].startsWith('unsigned (version 1) chunks under DEK'));
});

test('chunks the agent dropped, declared by its gap record, are a gap; a gap record with nothing missing is forged', async () => {
  const gap = (first, last) => concat(u64(first), u64(last), i64(T0 + BigInt(first) * 500_000n), i64(T0 + BigInt(last) * 500_000n), u64(last - first + 1));
  const items = [0, 1, 2].map((seq) => ({ seq, plaintext: frame(`f${seq}.png`, 'x') }));
  const dropped = await sealItems([...items, { seq: 5, plaintext: gap(3, 4), gap: true, checkpoint: true },
    { seq: 6, plaintext: new Uint8Array(0), final: true, checkpoint: true }]);
  const v = await prove(dropped, { keys: await keys() });
  assert.equal(v.status, 'verified', v.message);
  assert.deepEqual(v.declaredGaps, [[3, 4]]);
  assert.match(v.message, /; the agent dropped chunks 3–4 \(its spool was full\)$/);
  // A gap record over a range it does not cover: found once it is opened.
  const wrong = await sealItems([...items, { seq: 5, plaintext: gap(4, 4), gap: true, checkpoint: true }]);
  const w = await prove(wrong, { keys: await keys() });
  assert.ok(w.problems.includes('chunk 5: gap record does not match the missing chunks'), JSON.stringify(w.problems));
  // A gap record with no hole before it: the store operator cannot make one, the check is keyless.
  const forged = await sealItems([...items, { seq: 3, plaintext: gap(0, 2), gap: true, checkpoint: true }]);
  const x = await prove(forged);
  assert.ok(x.problems.includes('chunk 3 is a gap record with no missing chunks before it'));
  assert.match(x.message, /^chunk 3 is a forged gap record/);
});

test('StreamProof takes chunks one at a time; what it shows must be the chunk it proved', async () => {
  const proof = new StreamProof({ agent: AGENT, sessionId: SESSION, streamId: 0, ca });
  await proof.addRecord(signedRecord);
  const k = await keys();
  for (const c of recording.slice(0, 4)) await proof.open(parseChunk(c), k);
  let v = await proof.verdict();
  assert.equal(v.status, 'incomplete');
  assert.equal(v.provenThrough, 3);
  assert.equal(v.firstUnprovenSeq, null);
  // The rest out of order, one twice: the same verdict as all at once.
  for (const i of [9, 6, 4, 8, 5, 7, 6]) await proof.add(parseChunk(recording[i]));
  v = await proof.verdict();
  assert.equal(v.status, 'verified');
  assert.equal(v.chunks, 10);
  assert.deepEqual(proof.chunkList().map((c) => c.captureUs), recording.map((_, i) => Number(T0) + i * 500_000));
  assert.deepEqual(proof.chunkList().map((c) => c.empty), recording.map((_, i) => i === 9));
  assert.ok(proof.chunkList().every((c) => c.proven && c.authenticated === c.seq < 4));
  assert.equal(await proof.isProven(parseChunk(recording[2])), true);
  const other = recording[2].slice();
  other[other.length - 1] ^= 1;
  assert.equal(await proof.isProven(parseChunk(other)), false);
  // Served another copy under a number it holds: tampering.
  assert.deepEqual(await proof.add(parseChunk(other)), { seq: 2n, same: false });
  v = await proof.verdict();
  assert.equal(v.status, 'tampered');
  assert.ok(v.problems.includes('different chunks stored under sequence number 2'));
  assert.match(v.message, /^two different chunks are stored as chunk 2$/);
  assert.equal(v.firstUnprovenSeq, 2);
  // A chunk of another stream is the caller's mistake.
  await assert.rejects(proof.add(parseChunk(fromHex(vectors.chunks[3].sealed))), /belongs to another stream/);
});

test('a record of another agent with the same DEK id does not stand in for the agent\'s own', async () => {
  const proof = new StreamProof({ agent: 'bystander', sessionId: SESSION, streamId: 0, ca });
  assert.equal(await proof.addRecord(signedRecord), false);
  const v = await proveStream({ chunks: recording, records: [], ca });
  assert.equal(v.verdict, 'no_dek_record');
  assert.equal(v.status, 'incomplete');
  assert.match(v.message, new RegExp(`^no DEK record for ${S.dek_id} was served`));
});

// ---- agent certificates (sign.rs AgentCa::check), built here under a P-256 CA ----

const seq = (...c) => encodeTlv(0x30, ...c);
const set = (...c) => encodeTlv(0x31, ...c);
const name = (cn) => seq(set(seq(encodeOid('2.5.4.3'), encodeTlv(0x0c, utf8(cn)))));
const gtime = (iso) => encodeTlv(0x18, utf8(iso.replace(/[-:T]/g, '').replace(/\.\d+/, '')));
const ext = (oid, critical, value) => seq(encodeOid(oid), ...(critical ? [encodeTlv(0x01, new Uint8Array([0xff]))] : []), encodeTlv(0x04, value));
const ECDSA_SHA256 = seq(encodeOid('1.2.840.10045.4.3.2'));
const CLIENT_AUTH = ext('2.5.29.37', false, seq(encodeOid('1.3.6.1.5.5.7.3.2')));

/** WebCrypto's r || s as DER Ecdsa-Sig-Value. */
function rawToDer(raw) {
  const int = (b) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    const v = b.subarray(i);
    return encodeTlv(0x02, ...(v[0] & 0x80 ? [new Uint8Array([0]), v] : [v]));
  };
  return seq(int(raw.subarray(0, raw.length / 2)), int(raw.subarray(raw.length / 2)));
}

const p256 = () => subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
const ecdsaSign = async (key, msg) => rawToDer(new Uint8Array(await subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, msg)));

const RSA_SHA256 = seq(encodeOid('1.2.840.113549.1.1.11'), encodeTlv(0x05));

async function certificate({ subject, issuer = 'test agent CA', issuerKey, publicKey, extensions, from = '2024-01-01T00:00:00Z', until = '2124-01-01T00:00:00Z' }) {
  const spki = new Uint8Array(await subtle.exportKey('spki', publicKey));
  const rsa = issuerKey.algorithm.name === 'RSASSA-PKCS1-v1_5';
  const alg = rsa ? RSA_SHA256 : ECDSA_SHA256;
  const tbs = seq(encodeTlv(0xa0, encodeTlv(0x02, new Uint8Array([2]))), encodeTlv(0x02, new Uint8Array([0x1d, 0x07])), alg,
    name(issuer), seq(gtime(from), gtime(until)), name(subject), spki, encodeTlv(0xa3, seq(...extensions)));
  const sig = rsa ? new Uint8Array(await subtle.sign('RSASSA-PKCS1-v1_5', issuerKey, tbs)) : await ecdsaSign(issuerKey, tbs);
  return seq(tbs, alg, encodeTlv(0x03, new Uint8Array([0]), sig));
}

const caKeys = await p256();
const p256Ca = await AgentCa.fromDer(await certificate({
  subject: 'test agent CA', issuerKey: caKeys.privateKey, publicKey: caKeys.publicKey,
  extensions: [ext('2.5.29.19', true, seq(encodeTlv(0x01, new Uint8Array([0xff]))))],
}));

/** A version-2 DEK record carrying `cert`, signed by `sign` (the wrapped DEK is not opened here). */
async function record(cert, sign, dekId) {
  const agent = utf8(AGENT);
  const signed = concat(utf8('SSDK'), new Uint8Array([2, 1]), dekId, new Uint8Array(32), new Uint8Array(16), i64(T0), u16be(agent.length),
    agent, u16be(256), new Uint8Array(256), u16be(cert.length), cert);
  const { scheme, sig } = await sign(concat(DEK_CONTEXT, signed));
  return concat(signed, u16be(scheme), u16be(sig.length), sig);
}

/** The verdict on a two-chunk recording by an agent with a P-256 key and certificate `opts`. */
async function agentWith(opts, { scheme = 0x0403, pinned = p256Ca } = {}) {
  const keys2 = await p256();
  const cert = await certificate({ subject: AGENT, issuerKey: caKeys.privateKey, publicKey: keys2.publicKey, extensions: [CLIENT_AUTH], ...opts });
  const sign = async (msg) => ({ scheme, sig: await ecdsaSign(keys2.privateKey, msg) });
  const dekId = crypto.getRandomValues(new Uint8Array(16));
  const chunks = await sealStream({ plaintexts: [frame('a.png', 'a'), new Uint8Array(0)], sign, dekId });
  return proveStream({ chunks, records: [await record(cert, sign, dekId)], ca: pinned });
}

test('an ECDSA P-256 agent (what agents enroll makes) under a P-256 CA is verified', async () => {
  const v = await agentWith({});
  assert.equal(v.status, 'verified', v.message);
  assert.equal(v.proof.checkpoint, 1);
  assert.equal(v.proof.cert.serial, '1d07');
});

test('agent certificates the pinned CA does not vouch for are refused as sign.rs refuses them', async () => {
  const cases = [
    [{ until: '2025-01-01T00:00:00Z' }, 'CertExpired', /^signed by an agent certificate that was not valid when the recording's key was made/],
    [{ from: '2027-01-01T00:00:00Z' }, 'CertNotValidYet', /not valid when/],
    [{ extensions: [CLIENT_AUTH, ext('2.5.29.19', true, seq(encodeTlv(0x01, new Uint8Array([0xff]))))] }, 'CaUsedAsEndEntity',
      /^signed by a CA certificate, not by an agent certificate$/],
    [{ extensions: [ext('2.5.29.37', false, seq(encodeOid('1.3.6.1.5.5.7.3.1')))] }, 'RequiredEkuNotFound', /not issued for agents/],
    [{ extensions: [CLIENT_AUTH, ext('1.2.3.4', true, seq())] }, 'unsupported critical extension 1.2.3.4', /^not signed by a CA-issued agent/],
    [{ subject: 'someone-else' }, 'the certificate names agent "someone-else", the data names "vector-agent"',
      /^signed by the certificate of agent "someone-else", not of this agent$/],
    [{ issuer: 'another CA' }, 'UnknownIssuer', /^signed by an agent certificate not issued by the pinned CA$/],
  ];
  for (const [opts, detail, words] of cases) {
    const v = await agentWith(opts);
    assert.equal(v.verdict, 'tampered', detail);
    assert.ok(v.problems.some((p) => p.includes(detail)), `${detail} in ${JSON.stringify(v.problems)}`);
    assert.match(v.message, words);
    assert.equal(v.firstUnprovenSeq, 0);
  }
  // Signed with the P-256 key, claimed as Ed25519: the scheme is not the key's.
  const v = await agentWith({}, { scheme: 0x0807 });
  assert.ok(v.problems.some((p) => p.endsWith('record signature: the signature does not verify')), JSON.stringify(v.problems));
  // An agent of another CA with the same name, and an unknown scheme.
  const rogue = await p256();
  const w = await agentWith({ issuerKey: rogue.privateKey });
  assert.ok(w.problems.some((p) => p.includes('not issued by the pinned agent CA, or was not valid then: BadSignature')));
  const x = await agentWith({}, { scheme: 0x0804 });
  assert.ok(x.problems.some((p) => p.endsWith('unknown signature scheme 0x0804')), JSON.stringify(x.problems));
});

test('a CA with an RSA key (PKCS#1 v1.5, SHA-256) vouches for its agents too', async () => {
  const rsa = await subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    true, ['sign', 'verify']);
  const rsaCa = await AgentCa.fromDer(await certificate({ subject: 'test agent CA', issuerKey: rsa.privateKey, publicKey: rsa.publicKey, extensions: [] }));
  const v = await agentWith({ issuerKey: rsa.privateKey }, { pinned: rsaCa });
  assert.equal(v.status, 'verified', v.message);
  const w = await agentWith({}, { pinned: rsaCa }); // issued by the P-256 CA of the same name
  assert.ok(w.problems.some((p) => p.endsWith('UnsupportedSignatureAlgorithmForPublicKey')), JSON.stringify(w.problems));
});

test('without a pinned CA a signed recording is not shown as verified', async () => {
  const v = await agentWith({}, { pinned: null });
  assert.equal(v.verdict, 'ok');
  assert.equal(v.status, 'unsigned');
  assert.equal(v.proof.caChecked, false);
  assert.match(v.message, /no agent CA is pinned/);
});

test('ECDSA signatures convert from DER to r || s, and anything else is refused', () => {
  const raw = new Uint8Array(64).fill(7);
  raw[0] = 0x80; // r needs a leading zero in DER
  raw[32] = 0;
  raw[33] = 0; // s has leading zeros to drop
  assert.deepEqual(ecdsaSignatureToRaw(rawToDer(raw), 32), raw);
  assert.equal(ecdsaSignatureToRaw(new Uint8Array(64), 32), null);
  assert.equal(ecdsaSignatureToRaw(rawToDer(new Uint8Array(96).fill(1)), 32), null);
});
