// Sealed chunks (docs/format.md "Sealed chunk"): parsing with every rule of the spec (versions 1
// and 2, a version-2 checkpoint's signature after the ciphertext), the per-stream HKDF key, the
// STREAM nonce, and AES-256-GCM opening. Keys stay non-extractable.

import { concat, toHex, u16be, u32be, utf8, view } from './hex.js';
import { ByteReader, FormatError, MAX_SIGNATURE_LEN, readAgent, readSignature } from './reader.js';

export { FormatError, MAX_SIGNATURE_LEN };

const subtle = globalThis.crypto.subtle;

export const KIND_FRAME = 1;
export const KIND_KEYSTROKES = 2;
/** Activity batches: JSON lines as keystrokes (focus, idle, session start and end …). */
export const KIND_ACTIVITY = 3;
export const KINDS = [KIND_FRAME, KIND_KEYSTROKES, KIND_ACTIVITY];
export const FLAG_FINAL = 0x01;
export const FLAG_GAP = 0x02;
/** Version 2 only: a checkpoint; `scheme u16 | sig_len u16 | signature` follows the ciphertext. */
export const FLAG_CHECKPOINT = 0x04;
export const VERSION_1 = 1;
/** A signing agent's chunks (docs/format.md "Agent signatures"). */
export const VERSION_2 = 2;
export const VERSIONS = [VERSION_1, VERSION_2];
export const TAG_LEN = 16;
export const MAX_PLAINTEXT = 16 * 1024 * 1024;
export const MAX_CIPHERTEXT = MAX_PLAINTEXT + TAG_LEN;
/** Bytes of a chunk before its agent id: everything up to agent_len. */
export const FIXED_HEADER_LEN = 62;
/** Header bytes that do not depend on the agent id: FIXED_HEADER_LEN, agent_len and ct_len. */
export const HEADER_LEN = 66;

/** The flag bits a chunk of `version` may set. */
function knownFlags(version) {
  return version === VERSION_1 ? FLAG_FINAL | FLAG_GAP : FLAG_FINAL | FLAG_GAP | FLAG_CHECKPOINT;
}

/** Check `flags` of a chunk of `version`: no unknown bits, the checkpoint bit only in version 2. */
function checkFlags(version, flags) {
  const unknown = flags & ~knownFlags(version);
  if (unknown & FLAG_CHECKPOINT) {
    throw new FormatError(
      `chunk: reserved flag bits set (flags 0x${flags.toString(16)}: the checkpoint flag, bit 2, needs version 2, not ${version})`,
    );
  }
  if (unknown) throw new FormatError(`chunk: reserved flag bits set (flags 0x${flags.toString(16)})`);
  if ((flags & (FLAG_FINAL | FLAG_GAP)) === (FLAG_FINAL | FLAG_GAP)) {
    throw new FormatError('chunk: a gap record cannot be final');
  }
}

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
 * kind, flags, final, gap, checkpoint, dekId, sessionId, streamId, seq, captureUs, agent,
 * agentBytes, aad, ciphertext, core, scheme, signature, bytes, offset, length}; `length` is how
 * many bytes the chunk uses (66 + agent_len + ct_len, plus 4 + sig_len for a checkpoint),
 * `ciphertext` is exactly the ct_len bytes of ciphertext and tag, `core` the chunk without a
 * checkpoint's scheme, sig_len and signature, `scheme` and `signature` are null unless
 * `checkpoint`; `seq` and `captureUs` are BigInts, byte fields are subarrays of `bytes`.
 */
export function parseChunkAt(bytes, offset = 0) {
  const r = new ByteReader('chunk', bytes, offset);
  r.magic('SSCK');
  const version = r.known('version', VERSIONS);
  const suite = r.known('suite', 1);
  const kind = r.u8('kind');
  if (!KINDS.includes(kind)) throw new FormatError(`chunk: unknown kind ${kind}`);
  const flags = r.u8('flags');
  checkFlags(version, flags);
  const checkpoint = (flags & FLAG_CHECKPOINT) !== 0;
  const dekId = r.bytesOf(16, 'dek_id');
  const sessionId = r.bytesOf(16, 'session_id');
  const streamId = r.u32('stream_id');
  const seq = r.u64('seq');
  const captureUs = r.i64('capture_time_us');
  const { agent, agentBytes } = readAgent(r);
  const ctLen = r.bounded('ct_len', r.u32('ct_len'), TAG_LEN, MAX_CIPHERTEXT);
  const aad = bytes.subarray(offset, r.pos);
  const ciphertext = r.bytesOf(ctLen, 'ciphertext');
  const core = bytes.subarray(offset, r.pos);
  const { scheme, signature } = checkpoint ? readSignature(r) : { scheme: null, signature: null };
  const length = r.pos - offset;
  return {
    version, suite, kind, flags, final: (flags & FLAG_FINAL) !== 0, gap: (flags & FLAG_GAP) !== 0, checkpoint,
    dekId, sessionId, streamId, seq, captureUs, agent, agentBytes, aad, ciphertext, core, scheme, signature,
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
