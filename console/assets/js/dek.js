// DEK records (docs/format.md "DEK record"): parsing with every rule of the spec (version 1, and
// version 2 with the agent's certificate and signature after `wrapped`), and unwrapping the DEK
// with the KEK's private key into a non-extractable HKDF key.

import { toHex, utf8 } from './hex.js';
import { ByteReader, FormatError, readAgent, readSignature } from './reader.js';

export { FormatError };

const subtle = globalThis.crypto.subtle;

/** The RSA-OAEP label of suite 1: the 16 ASCII bytes "sealstream/1 dek". */
export const DEK_LABEL = utf8('sealstream/1 dek');
export const MIN_WRAPPED_LEN = 256;
export const MAX_WRAPPED_LEN = 512;
/** Largest agent certificate (DER) a version-2 record may carry. */
export const MAX_CERT_LEN = 4096;
export const VERSION_1 = 1;
/** Signed by the agent (docs/format.md "Agent signatures"). */
export const VERSION_2 = 2;
/** What a version-2 record's signature covers, before the record's bytes 0 .. 84+a+w+c. */
export const DEK_SIGNATURE_CONTEXT = utf8('sealstream/2 dek record');

/** The DEK record's RSA-OAEP ciphertext does not open with the key given. */
export class UnwrapError extends Error {
  constructor(message) {
    super(message);
    this.name = 'UnwrapError';
  }
}

/**
 * Parse a DEK record. Returns {version, dekId, kekId ("sha256:" + hex), kekIdBytes, agentSession,
 * createdUs (BigInt), agent, agentBytes, wrapped, cert, scheme, signature, signed}; `cert` (DER),
 * `scheme`, `signature` and `signed` (the record's bytes the signature covers after
 * DEK_SIGNATURE_CONTEXT) are null in version 1. Throws FormatError naming the broken rule.
 */
export function parseDekRecord(bytes) {
  const r = new ByteReader('DEK record', bytes);
  r.magic('SSDK');
  const version = r.known('version', [VERSION_1, VERSION_2]);
  r.known('suite', 1);
  const dekId = r.bytesOf(16, 'dek_id');
  const kekIdBytes = r.bytesOf(32, 'kek_id');
  const agentSession = r.bytesOf(16, 'agent_session');
  const createdUs = r.i64('created_us');
  const { agent, agentBytes } = readAgent(r);
  const wrappedLen = r.bounded('wrapped_len', r.u16('wrapped_len'), MIN_WRAPPED_LEN, MAX_WRAPPED_LEN);
  const wrapped = r.bytesOf(wrappedLen, 'wrapped');
  const { cert, scheme, signature, signed } = version === VERSION_2 ? readAgentSignature(r) : UNSIGNED;
  r.finish();
  return {
    version, dekId, kekId: `sha256:${toHex(kekIdBytes)}`, kekIdBytes, agentSession, createdUs, agent, agentBytes, wrapped,
    cert, scheme, signature, signed,
  };
}

const UNSIGNED = { cert: null, scheme: null, signature: null, signed: null };

/** Version 2's tail: `cert_len u16 | cert | scheme u16 | sig_len u16 | signature`. */
function readAgentSignature(r) {
  const certLen = r.bounded('cert_len', r.u16('cert_len'), 1, MAX_CERT_LEN);
  const cert = r.bytesOf(certLen, 'cert');
  const signed = r.bytes.subarray(0, r.pos);
  return { cert, signed, ...readSignature(r) };
}

/**
 * The DEK of `record` (from parseDekRecord) as a non-extractable HKDF CryptoKey, unwrapped with
 * `privateKey` (from openPrivateKey, whose KEK id should equal record.kekId). Throws
 * UnwrapError if the key does not open it, FormatError if the DEK is not exactly 32 bytes.
 */
export async function unwrapDek(record, privateKey) {
  const oaep = { name: 'RSA-OAEP', label: DEK_LABEL };
  const hkdf = subtle.unwrapKey('raw', record.wrapped, privateKey, oaep, 'HKDF', false, ['deriveKey', 'deriveBits']);
  // HKDF takes a key of any length; an HMAC key declared 256 bits long takes only 32 bytes.
  const lengthCheck = subtle.unwrapKey('raw', record.wrapped, privateKey, oaep,
    { name: 'HMAC', hash: 'SHA-256', length: 256 }, false, ['sign']);
  const [dek, check] = await Promise.allSettled([hkdf, lengthCheck]);
  if (dek.status === 'rejected') {
    throw new UnwrapError(
      `DEK ${toHex(record.dekId)} does not unwrap with this private key ` +
        `(not the key of ${record.kekId}, or the record was altered): ${dek.reason?.name ?? dek.reason}`,
    );
  }
  if (check.status === 'rejected') {
    throw new FormatError(`DEK record ${toHex(record.dekId)}: the unwrapped DEK is not 32 bytes`);
  }
  return dek.value;
}
