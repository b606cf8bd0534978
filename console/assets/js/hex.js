// Byte helpers shared by the console's crypto modules: hex, UTF-8, concatenation, comparison,
// big-endian integers and UUID text. Everything binary is a Uint8Array.

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lowercase hex of `bytes`. */
export function toHex(bytes) {
  let out = '';
  for (const b of bytes) out += HEX[b];
  return out;
}

/** Bytes of an even-length hex string (either case); throws on anything else. */
export function fromHex(text) {
  if (typeof text !== 'string' || text.length % 2 !== 0 || /[^0-9a-fA-F]/.test(text)) {
    throw new TypeError('not a hex string of whole bytes');
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lossyDecoder = new TextDecoder('utf-8', { ignoreBOM: true });

/** UTF-8 bytes of `text`, with no Unicode normalization. */
export function utf8(text) {
  return encoder.encode(text);
}

/** Text of UTF-8 `bytes`; throws TypeError on invalid UTF-8 unless `lossy`. */
export function fromUtf8(bytes, { lossy = false } = {}) {
  return (lossy ? lossyDecoder : strictDecoder).decode(bytes);
}

/** One Uint8Array holding all `parts` in order. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** True if `a` and `b` hold the same bytes. Not constant-time; use only on public data. */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A DataView over exactly the bytes of `bytes`. */
export function view(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Big-endian u16 / u32 bytes. */
export function u16be(n) {
  return new Uint8Array([(n >>> 8) & 0xff, n & 0xff]);
}
export function u32be(n) {
  const out = new Uint8Array(4);
  view(out).setUint32(0, n);
  return out;
}

/** The canonical 8-4-4-4-12 text of a 16-byte id. */
export function uuidString(bytes) {
  const h = toHex(bytes);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The 16 bytes of a UUID written as text (hyphens optional). */
export function uuidBytes(text) {
  const bytes = fromHex(text.replaceAll('-', ''));
  if (bytes.length !== 16) throw new TypeError('a UUID is 16 bytes');
  return bytes;
}
