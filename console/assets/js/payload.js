// Plaintext payloads (docs/format.md "Plaintext payloads"): frames (file name + image bytes; a
// screen update's are parsed by screen.js), keystroke and activity batches (JSON lines) and gap
// records (the range of chunks the agent dropped).

import { fromUtf8, view } from './hex.js';
import { ByteReader, FormatError } from './reader.js';
import { KIND_ACTIVITY, KIND_FRAME } from './chunk.js';

export { FormatError };

export const MAX_FRAME_NAME = 255;
export const GAP_LEN = 40;

/** The image type of `image` from its first bytes. */
export function guessMime(image) {
  const starts = (...sig) => sig.every((b, i) => image[i] === b);
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'image/png';
  if (starts(0xff, 0xd8, 0xff)) return 'image/jpeg';
  if (starts(0x52, 0x49, 0x46, 0x46) && image[8] === 0x57 && image[9] === 0x45 && image[10] === 0x42 && image[11] === 0x50) {
    return 'image/webp'; // "RIFF" size "WEBP"
  }
  return 'application/octet-stream';
}

/** A frame: `name_len u16 | name | image`. Returns {name, image, mime}. */
export function parseFrame(plaintext) {
  const r = new ByteReader('frame payload', plaintext);
  const len = r.bounded('name_len', r.u16('name_len'), 0, MAX_FRAME_NAME);
  let name;
  try {
    name = fromUtf8(r.bytesOf(len, 'name'));
  } catch (err) {
    if (err instanceof FormatError) throw err;
    throw new FormatError('frame payload: name is not UTF-8');
  }
  if (/[\/\\\0]/.test(name) || name === '.' || name === '..') {
    throw new FormatError(`frame payload: name ${JSON.stringify(name)} is not a plain file name`);
  }
  const image = r.bytesOf(r.remaining, 'image');
  return { name, image, mime: guessMime(image) };
}

/**
 * A keystroke batch: one entry per line, {raw, event}, where `raw` is the line's text without
 * its "\n" and `event` the parsed JSON object, or null if the line is not a JSON object (or not
 * UTF-8). A last line without "\n" is still returned.
 */
export function parseKeystrokes(plaintext) {
  const lines = [];
  let start = 0;
  while (start < plaintext.length) {
    let end = plaintext.indexOf(0x0a, start);
    if (end < 0) end = plaintext.length;
    lines.push(parseEventLine(plaintext.subarray(start, end)));
    start = end + 1;
  }
  return lines;
}

function parseEventLine(bytes) {
  let raw;
  try {
    raw = fromUtf8(bytes);
  } catch {
    return { raw: fromUtf8(bytes, { lossy: true }), event: null };
  }
  let event = null;
  try {
    const value = JSON.parse(raw);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) event = value;
  } catch {
    // not JSON
  }
  return { raw, event };
}

/** A gap record's 40 bytes: {firstSeq, lastSeq, firstCaptureUs, lastCaptureUs, count} as BigInts. */
export function parseGap(plaintext) {
  if (plaintext.length !== GAP_LEN) {
    throw new FormatError(`gap record: plaintext is ${plaintext.length} bytes, expected ${GAP_LEN}`);
  }
  const dv = view(plaintext);
  const gap = {
    firstSeq: dv.getBigUint64(0),
    lastSeq: dv.getBigUint64(8),
    firstCaptureUs: dv.getBigInt64(16),
    lastCaptureUs: dv.getBigInt64(24),
    count: dv.getBigUint64(32),
  };
  if (gap.lastSeq < gap.firstSeq || gap.lastSeq - gap.firstSeq + 1n !== gap.count) {
    throw new FormatError('gap record: range and count disagree');
  }
  return gap;
}

/**
 * The payload of an opened `chunk` (from parseChunk): {type: 'gap', gap} | {type: 'empty'} |
 * {type: 'frame', frame} | {type: 'keystrokes', lines} | {type: 'activity', lines} (an activity
 * batch: the same JSON lines as keystrokes). A gap record must end right before its
 * own seq; that it matches the hole in the stream is for the caller to check.
 */
export function parsePayload(chunk, plaintext) {
  if (chunk.gap) {
    const gap = parseGap(plaintext);
    if (gap.lastSeq + 1n !== chunk.seq) {
      throw new FormatError(`gap record ${chunk.seq}: declares ${gap.firstSeq}..=${gap.lastSeq}, not the chunks right before it`);
    }
    return { type: 'gap', gap };
  }
  if (plaintext.length === 0) return { type: 'empty' };
  if (chunk.kind === KIND_FRAME) return { type: 'frame', frame: parseFrame(plaintext) };
  if (chunk.kind === KIND_ACTIVITY) return { type: 'activity', lines: parseKeystrokes(plaintext) };
  return { type: 'keystrokes', lines: parseKeystrokes(plaintext) };
}
