// Exports made in the browser from plaintext only it holds: a WebM video of the frames
// (canvas + MediaRecorder, each frame held for its real duration divided by the chosen
// speed), and a ZIP of the frames, the keystrokes, the activity and a manifest of their
// SHA-256s. Screen updates (`*.ssu`) are the screens they make, composited (screen.js): in the
// video as shown, in the ZIP as `<stem>.png`. The server is told that an export happens (audit),
// never what it contains.

import { toHex, utf8 } from './hex.js';
import { crc32 } from './screen.js';

function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

/**
 * Frames `from..=to` of `rec` as a WebM video; `progress(i, n)` as it goes. Returns the Blob.
 * The video is as large as the larger of the range's first and last frames (a session may
 * start with a tiny or blank screen); every frame is drawn whole, centred, at its own aspect.
 */
export async function exportVideo(rec, { from = 0, to = rec.frames.length - 1, speed = 1, progress, save = true } = {}) {
  const ends = [await rec.frame(from), await rec.frame(to)];
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(...ends.map((f) => f.bitmap?.width ?? 0)) || 960;
  canvas.height = Math.max(...ends.map((f) => f.bitmap?.height ?? 0)) || 540;
  const ctx = canvas.getContext('2d');
  const stream = canvas.captureStream(30);
  const type = ['video/webm;codecs=vp9', 'video/webm;codecs=vp8', 'video/webm'].find((t) => MediaRecorder.isTypeSupported(t));
  if (!type) throw new Error('this browser cannot record WebM video (MediaRecorder)');
  const recorder = new MediaRecorder(stream, { mimeType: type });
  const parts = [];
  recorder.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
  const done = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start(1000);
  const began = performance.now();
  for (let i = from; i <= to; i += 1) {
    const f = await rec.frame(i);
    if (f.bitmap) {
      const scale = Math.min(canvas.width / f.bitmap.width, canvas.height / f.bitmap.height);
      const w = f.bitmap.width * scale;
      const h = f.bitmap.height * scale;
      ctx.fillStyle = '#000';
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(f.bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    }
    const next = i < to ? rec.frames[i + 1].captureUs : f.captureUs + 1_000_000;
    const holdMs = Math.min(Math.max((next - f.captureUs) / 1000 / speed, 40), 10_000);
    progress?.(i - from + 1, to - from + 1);
    await new Promise((r) => setTimeout(r, holdMs));
  }
  recorder.stop();
  await done;
  const ms = performance.now() - began;
  // MediaRecorder writes a live stream's WebM: no duration. Say how long it is.
  const bytes = withWebmDuration(new Uint8Array(await new Blob(parts).arrayBuffer()), ms);
  const blob = new Blob([bytes], { type: 'video/webm' });
  if (save) download(blob, `session-${rec.id}.webm`);
  return blob;
}

const EBML_SEGMENT = 0x18538067;
const EBML_INFO = 0x1549a966;
const EBML_SEEK_HEAD = 0x114d9b74;
const EBML_SEEK_POSITION = 0x53ac;
const EBML_TIMECODE_SCALE = 0x2ad7b1;
const EBML_DURATION = 0x4489;

/** An EBML element ID (its length marker kept) at `at`: {id, len}. */
function ebmlId(b, at) {
  const first = b[at];
  const len = first >= 0x80 ? 1 : first >= 0x40 ? 2 : first >= 0x20 ? 3 : first >= 0x10 ? 4 : 0;
  if (!len || at + len > b.length) throw new Error('not an EBML element');
  let id = 0;
  for (let i = 0; i < len; i += 1) id = id * 256 + b[at + i];
  return { id, len };
}

/** An EBML size at `at`: {size (null: unknown), len}. */
function ebmlSize(b, at) {
  const first = b[at];
  let len = 1;
  while (len <= 8 && !(first & (0x100 >> len))) len += 1;
  if (len > 8 || at + len > b.length) throw new Error('bad EBML size');
  let size = first & (0xff >> len);
  let unknown = size === (0xff >> len);
  for (let i = 1; i < len; i += 1) {
    size = size * 256 + b[at + i];
    unknown = unknown && b[at + i] === 0xff;
  }
  return { size: unknown ? null : size, len };
}

/** `n` as an 8-byte EBML size. */
function ebmlSize8(n) {
  const out = new Uint8Array(8);
  out[0] = 0x01;
  for (let i = 7, v = n; i >= 1; i -= 1, v = Math.floor(v / 256)) out[i] = v % 256;
  return out;
}

/** The children of the element whose data is `start..end`: [{id, at, dataAt, size}]. */
function ebmlChildren(b, start, end) {
  const out = [];
  for (let at = start; at < end;) {
    const { id, len } = ebmlId(b, at);
    const s = ebmlSize(b, at + len);
    const dataAt = at + len + s.len;
    const size = s.size ?? end - dataAt;
    out.push({ id, at, dataAt, size });
    at = dataAt + size;
  }
  return out;
}

/**
 * `webm` with its Segment Info's Duration set to `ms` (added when MediaRecorder left it out),
 * so players and ffprobe know its length. Elements after Info move; a SeekHead's positions
 * are moved with them. Anything it cannot parse is returned as it was.
 */
export function withWebmDuration(webm, ms) {
  try {
    const top = ebmlChildren(webm, 0, webm.length);
    const seg = top.find((e) => e.id === EBML_SEGMENT);
    if (!seg) return webm;
    const children = ebmlChildren(webm, seg.dataAt, seg.dataAt + seg.size);
    const info = children.find((e) => e.id === EBML_INFO);
    if (!info) return webm;
    const fields = ebmlChildren(webm, info.dataAt, info.dataAt + info.size);
    const scaleField = fields.find((f) => f.id === EBML_TIMECODE_SCALE);
    let scale = 1_000_000;
    if (scaleField) { scale = 0; for (let i = 0; i < scaleField.size; i += 1) scale = scale * 256 + webm[scaleField.dataAt + i]; }
    const duration = new Uint8Array(11);
    duration.set([0x44, 0x89, 0x88]);
    new DataView(duration.buffer).setFloat64(3, (ms * 1_000_000) / scale);
    // Info's new data: its fields but any old Duration, then the Duration.
    const kept = fields.filter((f) => f.id !== EBML_DURATION).map((f) => webm.subarray(f.at, f.dataAt + f.size));
    const data = new Uint8Array(kept.reduce((n, k) => n + k.length, 0) + duration.length);
    let o = 0;
    for (const k of kept) { data.set(k, o); o += k.length; }
    data.set(duration, o);
    const idLen = ebmlId(webm, info.at).len;
    const newInfo = new Uint8Array(idLen + 8 + data.length);
    newInfo.set(webm.subarray(info.at, info.at + idLen));
    newInfo.set(ebmlSize8(data.length), idLen);
    newInfo.set(data, idLen + 8);
    const oldEnd = info.dataAt + info.size;
    const delta = newInfo.length - (oldEnd - info.at);
    const out = new Uint8Array(webm.length + delta);
    out.set(webm.subarray(0, info.at));
    out.set(newInfo, info.at);
    out.set(webm.subarray(oldEnd), info.at + newInfo.length);
    // A known Segment size grows by delta (MediaRecorder's is unknown).
    const segSize = ebmlSize(webm, seg.at + 4);
    if (segSize.size !== null) {
      if (segSize.len !== 8) return webm;
      out.set(ebmlSize8(seg.size + delta), seg.at + 4);
    }
    // SeekHead positions (relative to the Segment's data) of what comes after Info move too.
    const infoPos = info.at - seg.dataAt;
    for (const head of children.filter((e) => e.id === EBML_SEEK_HEAD && e.at < info.at)) {
      for (const seek of ebmlChildren(webm, head.dataAt, head.dataAt + head.size)) {
        for (const f of ebmlChildren(webm, seek.dataAt, seek.dataAt + seek.size)) {
          if (f.id !== EBML_SEEK_POSITION) continue;
          let pos = 0;
          for (let i = 0; i < f.size; i += 1) pos = pos * 256 + webm[f.dataAt + i];
          if (pos <= infoPos) continue;
          pos += delta;
          if (pos >= 256 ** f.size) return webm;
          for (let i = f.size - 1, v = pos; i >= 0; i -= 1, v = Math.floor(v / 256)) out[f.dataAt + i] = v % 256;
        }
      }
    }
    return out;
  } catch {
    return webm;
  }
}

/** A ZIP archive (stored, no compression) of [{name, bytes}]. */
export function zip(files) {
  const parts = [];
  const central = [];
  let offset = 0;
  for (const { name, bytes } of files) {
    const n = utf8(name);
    const crc = crc32(bytes);
    const local = new Uint8Array(30 + n.length);
    const v = new DataView(local.buffer);
    v.setUint32(0, 0x04034b50, true);
    v.setUint16(4, 20, true);
    v.setUint16(6, 0x0800, true); // UTF-8 names
    v.setUint32(14, crc, true);
    v.setUint32(18, bytes.length, true);
    v.setUint32(22, bytes.length, true);
    v.setUint16(26, n.length, true);
    local.set(n, 30);
    const c = new Uint8Array(46 + n.length);
    const w = new DataView(c.buffer);
    w.setUint32(0, 0x02014b50, true);
    w.setUint16(4, 20, true);
    w.setUint16(6, 20, true);
    w.setUint16(8, 0x0800, true);
    w.setUint32(16, crc, true);
    w.setUint32(20, bytes.length, true);
    w.setUint32(24, bytes.length, true);
    w.setUint16(28, n.length, true);
    w.setUint32(42, offset, true);
    c.set(n, 46);
    parts.push(local, bytes);
    central.push(c);
    offset += local.length + bytes.length;
  }
  const size = central.reduce((s, c) => s + c.length, 0);
  const end = new Uint8Array(22);
  const e = new DataView(end.buffer);
  e.setUint32(0, 0x06054b50, true);
  e.setUint16(8, files.length, true);
  e.setUint16(10, files.length, true);
  e.setUint32(12, size, true);
  e.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: 'application/zip' });
}

/**
 * Frames `from..=to` (a screen update as the PNG of the screen it makes), every keystroke event,
 * the activity events (`activity.jsonl`, when there are any) and manifest.json (SHA-256 of each
 * file) as a ZIP.
 */
export async function exportFrames(rec, keystrokes, { from = 0, to = rec.frames.length - 1, activity = [], progress, save = true } = {}) {
  const files = [];
  const ext = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/webp': 'webp' };
  for (let i = from; i <= to; i += 1) {
    const f = await rec.frameFile(i);
    progress?.(i - from + 1, to - from + 1);
    if (!f) continue;
    const seq = rec.frames[i].seq;
    const base = f.name || `frame.${ext[f.mime] ?? 'bin'}`;
    files.push({ name: `frames/${String(seq).padStart(8, '0')}-${base}`, bytes: f.bytes, captureUs: f.captureUs });
  }
  const jsonl = (events) => utf8(events.map((k) => `${k.line}\n`).join(''));
  files.push({ name: 'keystrokes.jsonl', bytes: jsonl(keystrokes) });
  if (activity.length) files.push({ name: 'activity.jsonl', bytes: jsonl(activity) });
  const manifest = {
    agent: rec.summary.agent,
    session: rec.id,
    made_by: 'sealstream review console (decrypted in the browser)',
    made_at: new Date().toISOString(),
    files: [],
  };
  for (const f of files) {
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', f.bytes));
    manifest.files.push({ name: f.name, bytes: f.bytes.length, sha256: toHex(digest), capture_time_us: f.captureUs ?? null });
  }
  files.push({ name: 'manifest.json', bytes: utf8(JSON.stringify(manifest, null, 2)) });
  const blob = zip(files);
  if (save) download(blob, `session-${rec.id}.zip`);
  return blob;
}
