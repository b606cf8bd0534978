// Minimal DER reader and writer for the key files the console reads (PKCS#8, PBES2 parameters,
// PKCS#1, SPKI, X.509 certificates) and PEM decoding. Strict DER: definite, minimal lengths;
// every read is bounds-checked and errors are DerError.

export class DerError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DerError';
  }
}

export const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  SEQUENCE: 0x30,
  SET: 0x31,
};

/**
 * The TLV at `offset` of bytes[.., end): {tag, start, valueStart, end, value, der}, where `der`
 * is the whole encoding (tag, length and value) and `value` the contents, both subarrays.
 */
export function readTlv(bytes, offset = 0, end = bytes.length) {
  if (offset + 2 > end) throw new DerError(`truncated DER at offset ${offset}`);
  const tag = bytes[offset];
  if ((tag & 0x1f) === 0x1f) throw new DerError(`high tag numbers are not supported (offset ${offset})`);
  let len = bytes[offset + 1];
  let valueStart = offset + 2;
  if (len === 0x80) throw new DerError(`indefinite length at offset ${offset} (BER, not DER)`);
  if (len > 0x80) {
    const n = len & 0x7f;
    if (n > 4 || valueStart + n > end) throw new DerError(`bad length at offset ${offset}`);
    if (bytes[valueStart] === 0) throw new DerError(`non-minimal length at offset ${offset}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + bytes[valueStart + i];
    if (len < 0x80) throw new DerError(`non-minimal length at offset ${offset}`);
    valueStart += n;
  }
  if (valueStart + len > end) throw new DerError(`length ${len} at offset ${offset} runs past the end`);
  return {
    tag,
    start: offset,
    valueStart,
    end: valueStart + len,
    value: bytes.subarray(valueStart, valueStart + len),
    der: bytes.subarray(offset, valueStart + len),
  };
}

/** Dotted text of an OBJECT IDENTIFIER's contents. */
export function oidToString(value) {
  if (value.length === 0) throw new DerError('empty OID');
  const arcs = [];
  let n = 0n;
  let fresh = true;
  for (const b of value) {
    if (fresh && b === 0x80) throw new DerError('non-minimal OID arc');
    n = (n << 7n) | BigInt(b & 0x7f);
    fresh = (b & 0x80) === 0;
    if (fresh) {
      arcs.push(n);
      n = 0n;
    }
  }
  if (!fresh) throw new DerError('truncated OID');
  const first = arcs[0] < 40n ? 0n : arcs[0] < 80n ? 1n : 2n;
  return [first, arcs[0] - first * 40n, ...arcs.slice(1)].join('.');
}

/** Sequential reader over the TLVs inside bytes[start, end). */
export class DerReader {
  constructor(bytes, start = 0, end = bytes.length, what = 'DER') {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
    this.what = what;
  }

  get done() {
    return this.pos >= this.end;
  }

  peekTag() {
    return this.done ? undefined : this.bytes[this.pos];
  }

  /** The next TLV; with `tag`, it must have that tag. */
  next(tag, name = 'element') {
    if (this.done) throw new DerError(`${this.what}: ${name} is missing`);
    const tlv = readTlv(this.bytes, this.pos, this.end);
    if (tag !== undefined && tlv.tag !== tag) {
      throw new DerError(`${this.what}: ${name} has tag 0x${tlv.tag.toString(16)}, expected 0x${tag.toString(16)}`);
    }
    this.pos = tlv.end;
    return tlv;
  }

  /** The next TLV if it has `tag`, else null (nothing consumed). */
  optional(tag) {
    return this.peekTag() === tag ? this.next(tag) : null;
  }

  /** A reader over the contents of the next constructed element (SEQUENCE by default). */
  sequence(name = 'SEQUENCE', tag = TAG.SEQUENCE) {
    const tlv = this.next(tag, name);
    return new DerReader(this.bytes, tlv.valueStart, tlv.end, name);
  }

  oid(name = 'OID') {
    return oidToString(this.next(TAG.OID, name).value);
  }

  /** An INTEGER's contents (big-endian two's complement), checked to be minimal. */
  integer(name = 'INTEGER') {
    const v = this.next(TAG.INTEGER, name).value;
    if (v.length === 0) throw new DerError(`${this.what}: empty ${name}`);
    if (v.length > 1 && ((v[0] === 0 && v[1] < 0x80) || (v[0] === 0xff && v[1] >= 0x80))) {
      throw new DerError(`${this.what}: non-minimal ${name}`);
    }
    return v;
  }

  /** A non-negative INTEGER that fits a JS number exactly. */
  smallInteger(name = 'INTEGER') {
    const v = this.integer(name);
    if (v[0] & 0x80) throw new DerError(`${this.what}: ${name} is negative`);
    if (v.length > 7) throw new DerError(`${this.what}: ${name} is too large`);
    let n = 0;
    for (const b of v) n = n * 256 + b;
    return n;
  }

  octetString(name = 'OCTET STRING') {
    return this.next(TAG.OCTET_STRING, name).value;
  }

  /** A BIT STRING's bytes; it must have no unused bits. */
  bitString(name = 'BIT STRING') {
    const v = this.next(TAG.BIT_STRING, name).value;
    if (v.length === 0 || v[0] !== 0) throw new DerError(`${this.what}: ${name} has unused bits`);
    return v.subarray(1);
  }

  null(name = 'NULL') {
    if (this.next(TAG.NULL, name).value.length !== 0) throw new DerError(`${this.what}: ${name} is not empty`);
  }

  /** Nothing may follow. */
  finish() {
    if (!this.done) throw new DerError(`${this.what}: unexpected data after the last element`);
  }
}

/** DER of one element: `tag` and the concatenated `contents`. */
export function encodeTlv(tag, ...contents) {
  const len = contents.reduce((n, c) => n + c.length, 0);
  const lenBytes = [];
  if (len < 0x80) lenBytes.push(len);
  else {
    for (let n = len; n > 0; n = Math.floor(n / 256)) lenBytes.unshift(n % 256);
    lenBytes.unshift(0x80 | lenBytes.length);
  }
  const out = new Uint8Array(1 + lenBytes.length + len);
  out[0] = tag;
  out.set(lenBytes, 1);
  let at = 1 + lenBytes.length;
  for (const c of contents) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** DER of an OBJECT IDENTIFIER given in dotted text. */
export function encodeOid(dotted) {
  const arcs = dotted.split('.').map(BigInt);
  const body = [];
  for (const arc of [arcs[0] * 40n + arcs[1], ...arcs.slice(2)]) {
    const groups = [Number(arc & 0x7fn)];
    for (let n = arc >> 7n; n > 0n; n >>= 7n) groups.unshift(Number(n & 0x7fn) | 0x80);
    body.push(...groups);
  }
  return encodeTlv(TAG.OID, new Uint8Array(body));
}

/**
 * Every PEM block in `text`: [{label, headers, der}]. Text around blocks is ignored, CRLF and
 * trailing spaces are tolerated, RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`) are kept in
 * `headers` (name as written → value). A block without its END line or with bad base64 throws.
 */
export function pemBlocks(text) {
  if (typeof text !== 'string') throw new TypeError('PEM text must be a string');
  const lines = text.split(/\r\n|\r|\n/);
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    const begin = /^-----BEGIN ([^-]*)-----$/.exec(lines[i].trim());
    if (!begin) continue;
    const label = begin[1];
    const headers = {};
    let lastHeader = null;
    let body = '';
    let inHeaders = true;
    let closed = false;
    for (i++; i < lines.length; i++) {
      const line = lines[i].trim();
      if (line === `-----END ${label}-----`) {
        closed = true;
        break;
      }
      if (line.startsWith('-----')) throw new DerError(`PEM block "${label}" ends with "${line}"`);
      if (inHeaders) {
        const header = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
        if (header) {
          lastHeader = header[1];
          headers[lastHeader] = header[2];
          continue;
        }
        if (lastHeader && /^[ \t]/.test(lines[i]) && line) {
          headers[lastHeader] += line; // folded header line
          continue;
        }
        inHeaders = false;
        if (!line) continue;
      }
      body += line;
    }
    if (!closed) throw new DerError(`PEM block "${label}" has no END line`);
    blocks.push({ label, headers, der: base64Decode(body, label) });
  }
  return blocks;
}

/** The value of a PEM header, by case-insensitive name, or undefined. */
export function pemHeader(block, name) {
  const key = Object.keys(block.headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : block.headers[key];
}

function base64Decode(body, label) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0) {
    throw new DerError(`PEM block "${label}" is not valid base64`);
  }
  const bin = atob(body);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
