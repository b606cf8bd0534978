// Sealed chunks (docs/format.md "Sealed chunk"): parsing with every rule of the spec, the
// per-stream HKDF key, the STREAM nonce, and AES-256-GCM opening. Keys stay non-extractable.

import { concat, toHex, u16be, u32be, utf8, view } from './hex.js';
import { ByteReader, FormatError, readAgent } from './reader.js';

export { FormatError };

const subtle = globalThis.crypto.subtle;

export const KIND_FRAME = 1;
export const KIND_KEYSTROKES = 2;
export const FLAG_FINAL = 0x01;
export const FLAG_GAP = 0x02;
export const TAG_LEN = 16;
export const MAX_PLAINTEXT = 16 * 1024 * 1024;
export const MAX_CIPHERTEXT = MAX_PLAINTEXT + TAG_LEN;
/** Bytes of a chunk before its agent id: everything up to agent_len. */
export const FIXED_HEADER_LEN = 62;

/** A chunk failed authentication (or names another agent than its DEK): it was altered. */
export class TamperedError extends Error {
  constructor(message) {
    super(message);
    this.name = 'TamperedError';
  }
}

/** No DEK is known for a chunk's dek_id. */
export class UnknownDekError extends Error {
  constructor(dekId) {
    super(`no DEK record for DEK ${toHex(dekId)}`);
    this.name = 'UnknownDekError';
    this.dekId = dekId;
  }
}

/**
 * Parse the chunk starting at `offset` of `bytes` (more may follow). Returns {version, suite,
 * kind, flags, final, gap, dekId, sessionId, streamId, seq, captureUs, agent, agentBytes, aad,
 * ciphertext, bytes, offset, length}; `length` is how many bytes the chunk uses, `seq` and
 * `captureUs` are BigInts, byte fields are subarrays of `bytes`.
 */
export function parseChunkAt(bytes, offset = 0) {
  const r = new ByteReader('chunk', bytes, offset);
  r.magic('SSCK');
  const version = r.known('version', 1);
  const suite = r.known('suite', 1);
  const kind = r.u8('kind');
  if (kind !== KIND_FRAME && kind !== KIND_KEYSTROKES) throw new FormatError(`chunk: unknown kind ${kind}`);
  const flags = r.u8('flags');
  if (flags & ~(FLAG_FINAL | FLAG_GAP)) throw new FormatError(`chunk: reserved flag bits set (flags 0x${flags.toString(16)})`);
  if (flags === (FLAG_FINAL | FLAG_GAP)) throw new FormatError('chunk: a gap record cannot be final');
  const dekId = r.bytesOf(16, 'dek_id');
  const sessionId = r.bytesOf(16, 'session_id');
  const streamId = r.u32('stream_id');
  const seq = r.u64('seq');
  const captureUs = r.i64('capture_time_us');
  const { agent, agentBytes } = readAgent(r);
  const ctLen = r.bounded('ct_len', r.u32('ct_len'), TAG_LEN, MAX_CIPHERTEXT);
  const aad = bytes.subarray(offset, r.pos);
  const ciphertext = r.bytesOf(ctLen, 'ciphertext');
  const length = r.pos - offset;
  return {
    version, suite, kind, flags, final: (flags & FLAG_FINAL) !== 0, gap: (flags & FLAG_GAP) !== 0,
    dekId, sessionId, streamId, seq, captureUs, agent, agentBytes, aad, ciphertext,
    bytes: bytes.subarray(offset, offset + length), offset, length,
  };
}

/** Parse `bytes` as exactly one chunk (nothing before or after it). */
export function parseChunk(bytes) {
  const chunk = parseChunkAt(bytes, 0);
  if (chunk.length !== bytes.length) {
    throw new FormatError(`chunk: ${bytes.length - chunk.length} bytes after the end of the chunk`);
  }
  return chunk;
}

const STREAM_INFO = utf8('sealstream/1 stream');

/** The HKDF info of a stream key: "sealstream/1 stream" || session || stream || kind || agent_len || agent. */
export function streamKeyInfo(sessionId, streamId, kind, agentBytes) {
  return concat(STREAM_INFO, sessionId, u32be(streamId), new Uint8Array([kind]), u16be(agentBytes.length), agentBytes);
}

/** The stream key: HKDF-SHA256(salt = dek_id, ikm = DEK, info) as a non-extractable AES-256-GCM key. */
export function deriveStreamKey(dekKey, dekId, sessionId, streamId, kind, agentBytes) {
  return subtle.deriveKey(
    { name: 'HKDF', hash: 'SHA-256', salt: dekId, info: streamKeyInfo(sessionId, streamId, kind, agentBytes) },
    dekKey,
    { name: 'AES-GCM', length: 256 },
    false,
    ['decrypt'],
  );
}

/** The 12-byte nonce: 00 00 00 || seq (u64) || final (u8). */
export function nonce(seq, final) {
  const out = new Uint8Array(12);
  view(out).setBigUint64(3, BigInt(seq));
  out[11] = final ? 1 : 0;
  return out;
}

/** The plaintext of `chunk` (from parseChunk) under its stream key; TamperedError if the tag fails. */
export async function openChunk(streamKey, chunk) {
  try {
    const plain = await subtle.decrypt(
      { name: 'AES-GCM', iv: nonce(chunk.seq, chunk.final), additionalData: chunk.aad, tagLength: 128 },
      streamKey,
      chunk.ciphertext,
    );
    return new Uint8Array(plain);
  } catch (err) {
    if (err.name !== 'OperationError') throw err;
    throw new TamperedError(`chunk ${chunk.seq} of stream ${chunk.streamId}: authentication failed`);
  }
}

/**
 * The DEKs a page has unwrapped and the stream keys derived from them, each derived once.
 * A chunk opens only under a DEK whose record names the chunk's agent (docs/format.md).
 */
export class StreamKeys {
  #deks = new Map(); // dek_id hex → {record, key}
  #keys = new Map(); // (dek, session, stream, kind, agent) → Promise<CryptoKey>

  /** Remember `dekKey` (from unwrapDek) for `record` (from parseDekRecord). */
  addDek(record, dekKey) {
    this.#deks.set(toHex(record.dekId), { record, key: dekKey });
  }

  hasDek(dekId) {
    return this.#deks.has(toHex(dekId));
  }

  /** The stream key for `chunk`: UnknownDekError without its DEK, TamperedError if the agents differ. */
  keyFor(chunk) {
    const dekHex = toHex(chunk.dekId);
    const dek = this.#deks.get(dekHex);
    if (!dek) return Promise.reject(new UnknownDekError(chunk.dekId));
    if (toHex(dek.record.agentBytes) !== toHex(chunk.agentBytes)) {
      return Promise.reject(new TamperedError(
        `chunk ${chunk.seq} of stream ${chunk.streamId} names agent "${chunk.agent}" but DEK ${dekHex} belongs to "${dek.record.agent}"`,
      ));
    }
    const id = [dekHex, toHex(chunk.sessionId), chunk.streamId, chunk.kind, toHex(chunk.agentBytes)].join('/');
    let key = this.#keys.get(id);
    if (!key) {
      key = deriveStreamKey(dek.key, chunk.dekId, chunk.sessionId, chunk.streamId, chunk.kind, chunk.agentBytes);
      this.#keys.set(id, key);
      key.catch(() => this.#keys.delete(id));
    }
    return key;
  }

  /** The plaintext of `chunk`. */
  async open(chunk) {
    return openChunk(await this.keyFor(chunk), chunk);
  }
}
