// Exports made in the browser from plaintext only it holds: a WebM video of the frames
// (canvas + MediaRecorder, each frame held for its real duration divided by the chosen
// speed), and a ZIP of the frames, the keystrokes and a manifest of their SHA-256s. The
// server is told that an export happens (audit), never what it contains.

import { toHex, utf8 } from './hex.js';

function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

/** Frames `from..=to` of `rec` as a WebM video; `progress(i, n)` as it goes. Returns the Blob. */
export async function exportVideo(rec, { from = 0, to = rec.frames.length - 1, speed = 1, progress, save = true } = {}) {
  const first = await rec.frame(from);
  const canvas = document.createElement('canvas');
  canvas.width = first.bitmap?.width ?? 960;
  canvas.height = first.bitmap?.height ?? 540;
  const ctx = canvas.getContext('2d');
  const stream = canvas.captureStream(30);
  const type = ['video/webm;codecs=vp9', 'video/webm;codecs=vp8', 'video/webm'].find((t) => MediaRecorder.isTypeSupported(t));
  if (!type) throw new Error('this browser cannot record WebM video (MediaRecorder)');
  const recorder = new MediaRecorder(stream, { mimeType: type });
  const parts = [];
  recorder.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
  const done = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start(1000);
  for (let i = from; i <= to; i += 1) {
    const f = await rec.frame(i);
    if (f.bitmap) ctx.drawImage(f.bitmap, 0, 0, canvas.width, canvas.height);
    const next = i < to ? rec.frames[i + 1].captureUs : f.captureUs + 1_000_000;
    const holdMs = Math.min(Math.max((next - f.captureUs) / 1000 / speed, 40), 10_000);
    progress?.(i - from + 1, to - from + 1);
    await new Promise((r) => setTimeout(r, holdMs));
  }
  recorder.stop();
  await done;
  const blob = new Blob(parts, { type: 'video/webm' });
  if (save) download(blob, `session-${rec.id}.webm`);
  return blob;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
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

/** Frames `from..=to`, every keystroke event and manifest.json (SHA-256 of each file) as a ZIP. */
export async function exportFrames(rec, keystrokes, { from = 0, to = rec.frames.length - 1, progress, save = true } = {}) {
  const files = [];
  const ext = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/webp': 'webp' };
  for (let i = from; i <= to; i += 1) {
    const f = await rec.frame(i);
    if (!f.image) continue;
    const seq = rec.frames[i].seq;
    const base = f.name || `frame.${ext[f.mime] ?? 'bin'}`;
    files.push({ name: `frames/${String(seq).padStart(8, '0')}-${base}`, bytes: f.image, captureUs: f.captureUs });
    progress?.(i - from + 1, to - from + 1);
  }
  files.push({ name: 'keystrokes.jsonl', bytes: utf8(keystrokes.map((k) => `${k.line}\n`).join('')) });
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
