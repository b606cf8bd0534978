// Shared test helpers: the vectors of tests/vectors, their keys, and sealing of extra chunks.
// Nothing here checks a chunk: the tests run the page's own modules for that.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openPrivateKey } from '../assets/js/keyfile.js';
import { parseDekRecord, unwrapDek } from '../assets/js/dek.js';
import { StreamKeys, nonce, parseChunk, streamKeyInfo } from '../assets/js/chunk.js';
import { concat, fromHex, u16be, u32be, utf8, view } from '../assets/js/hex.js';

export const VECTORS_DIR = fileURLToPath(new URL('../../tests/vectors/', import.meta.url));
export const vectors = JSON.parse(readFileSync(VECTORS_DIR + 'vectors.json', 'utf8'));
export const kekPem = readFileSync(VECTORS_DIR + vectors.kek_private, 'utf8');
export const kekPublicPem = readFileSync(VECTORS_DIR + vectors.kek_public, 'utf8');
/** The passphrase file's text without one trailing "\n" or "\r\n". */
export const passphrase = readFileSync(VECTORS_DIR + vectors.passphrase_file, 'utf8').replace(/\r?\n$/, '');

let opened;
/** {privateKey, record, dek, keys: StreamKeys} for the vectors, made once. */
export function vectorKeys() {
  opened ??= (async () => {
    const privateKey = await openPrivateKey(kekPem, passphrase);
    const record = parseDekRecord(fromHex(vectors.dek_record));
    const dek = await unwrapDek(record, privateKey);
    const keys = new StreamKeys();
    keys.addDek(record, dek);
    return { privateKey, record, dek, keys };
  })();
  return opened;
}

/**
 * Seal a chunk under the vector DEK (whose bytes vectors.json publishes), for tests that need
 * chunks the vectors lack. `h` overrides the fields of the first vector chunk; `h.version`
 * (default 1) is the version byte, and `h.trailer` bytes are appended after the ciphertext
 * as they are (a version-2 checkpoint's `scheme u16 | sig_len u16 | signature`).
 */
export async function sealChunk(h, plaintext) {
  const base = parseChunk(fromHex(vectors.chunks[0].sealed));
  const f = { ...base, ...h };
  const agentBytes = h.agent !== undefined ? utf8(h.agent) : base.agentBytes;
  const flags = h.flags ?? ((f.final ? 1 : 0) | (f.gap ? 2 : 0));
  const fixed = new Uint8Array(16); // seq u64 | capture_time_us i64
  view(fixed).setBigUint64(0, BigInt(f.seq));
  view(fixed).setBigInt64(8, BigInt(f.captureUs));
  const aad = concat(utf8('SSCK'), new Uint8Array([h.version ?? 1, 1, f.kind, flags]), f.dekId, f.sessionId, u32be(f.streamId),
    fixed, u16be(agentBytes.length), agentBytes, u32be(plaintext.length + 16));
  const subtle = globalThis.crypto.subtle;
  const ikm = await subtle.importKey('raw', fromHex(vectors.dek), 'HKDF', false, ['deriveKey']);
  const key = await subtle.deriveKey(
    { name: 'HKDF', hash: 'SHA-256', salt: f.dekId, info: streamKeyInfo(f.sessionId, f.streamId, f.kind, agentBytes) },
    ikm, { name: 'AES-GCM', length: 256 }, false, ['encrypt']);
  const ct = await subtle.encrypt({ name: 'AES-GCM', iv: nonce(f.seq, flags & 1), additionalData: aad }, key, plaintext);
  return concat(aad, new Uint8Array(ct), h.trailer ?? new Uint8Array(0));
}

/** A version-2 signature block by hand: `scheme u16 | sig_len u16 | signature`. */
export function signatureBlock(scheme, signature) {
  return concat(u16be(scheme), u16be(signature.length), signature);
}
