// Bounds-checked big-endian reader for sealstream's binary structures (DEK records, chunks,
// payloads) and the FormatError they throw. Every length is checked before it is used.

import { fromUtf8, view } from './hex.js';

/** A structure breaks a rule of docs/format.md; the message says which. */
export class FormatError extends Error {
  constructor(message) {
    super(message);
    this.name = 'FormatError';
  }
}

export class ByteReader {
  /** Read `what` (named in errors) from bytes[start, end). */
  constructor(what, bytes, start = 0, end = bytes.length) {
    if (!(bytes instanceof Uint8Array)) throw new TypeError(`${what}: expected a Uint8Array`);
    if (!(start >= 0 && start <= end && end <= bytes.length)) {
      throw new FormatError(`${what}: offset ${start} is outside the ${bytes.length} bytes given`);
    }
    this.what = what;
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
    this.dv = view(bytes);
  }

  get remaining() {
    return this.end - this.pos;
  }

  need(n, field) {
    if (n > this.remaining) {
      throw new FormatError(
        `${this.what}: truncated: ${field} needs ${n} bytes at offset ${this.pos}, ${this.remaining} left`,
      );
    }
  }

  bytesOf(n, field) {
    this.need(n, field);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  u8(field) {
    this.need(1, field);
    return this.bytes[this.pos++];
  }

  u16(field) {
    this.need(2, field);
    const v = this.dv.getUint16(this.pos);
    this.pos += 2;
    return v;
  }

  u32(field) {
    this.need(4, field);
    const v = this.dv.getUint32(this.pos);
    this.pos += 4;
    return v;
  }

  u64(field) {
    this.need(8, field);
    const v = this.dv.getBigUint64(this.pos);
    this.pos += 8;
    return v;
  }

  i64(field) {
    this.need(8, field);
    const v = this.dv.getBigInt64(this.pos);
    this.pos += 8;
    return v;
  }

  magic(ascii) {
    const got = this.bytesOf(ascii.length, 'magic');
    if (String.fromCharCode(...got) !== ascii) {
      throw new FormatError(`${this.what}: bad magic (expected "${ascii}")`);
    }
  }

  /** A u8 that must be `expected` (a number, or an array of the values known), named `field` (version, suite). */
  known(field, expected) {
    const v = this.u8(field);
    const values = [expected].flat();
    if (!values.includes(v)) {
      throw new FormatError(`${this.what}: unknown ${field} ${v} (this reader knows ${knownList(values)})`);
    }
    return v;
  }

  bounded(field, value, min, max) {
    if (value < min || value > max) {
      throw new FormatError(`${this.what}: ${field} ${value} is outside ${min}..=${max}`);
    }
    return value;
  }

  finish() {
    if (this.pos !== this.end) {
      throw new FormatError(`${this.what}: ${this.end - this.pos} bytes after the end of the structure`);
    }
  }
}

/** "1", "1 and 2", "1, 2 and 3". */
function knownList(values) {
  return values.length === 1 ? `${values[0]}` : `${values.slice(0, -1).join(', ')} and ${values[values.length - 1]}`;
}

/** Largest agent id: 64 characters, 256 UTF-8 bytes (docs/format.md "Identifiers"). */
export const AGENT_MAX_BYTES = 256;
export const AGENT_MAX_CHARS = 64;

/** Read `agent_len u16 | agent`, checking the agent id rules; returns {agent, agentBytes}. */
export function readAgent(r) {
  const len = r.bounded('agent_len', r.u16('agent_len'), 1, AGENT_MAX_BYTES);
  const agentBytes = r.bytesOf(len, 'agent');
  let agent;
  try {
    agent = fromUtf8(agentBytes);
  } catch {
    throw new FormatError(`${r.what}: agent id is not UTF-8`);
  }
  const chars = [...agent].length;
  if (chars > AGENT_MAX_CHARS) {
    throw new FormatError(`${r.what}: agent id has ${chars} characters, at most ${AGENT_MAX_CHARS} allowed`);
  }
  if (/\p{Cc}/u.test(agent)) throw new FormatError(`${r.what}: agent id contains a control character`);
  return { agent, agentBytes };
}

/** Longest signature a checkpoint or DEK record may carry (docs/format.md: sig_len 1..=512). */
export const MAX_SIGNATURE_LEN = 512;

/**
 * Read `scheme u16 | sig_len u16 | signature` (docs/format.md "Agent signatures"); returns
 * {scheme, signature}. The scheme is not checked here: verifying a signature refuses a scheme
 * it does not know.
 */
export function readSignature(r) {
  const scheme = r.u16('scheme');
  const len = r.bounded('sig_len', r.u16('sig_len'), 1, MAX_SIGNATURE_LEN);
  const signature = r.bytesOf(len, 'signature');
  return { scheme, signature };
}
