// Screen updates (docs/format.md "Screen update", "Compositing") in the page's own modules:
// screen.js parses exactly what the spec allows and refuses the rest; its compositor paints
// rectangles pixel for pixel (keyframe, partial update, size change, a malformed update leaves
// the screen, a gap does not reset it); a ScreenTrack seeking into the middle makes the screen
// compositing from the start makes, loading only the updates since the last keyframe; and the
// session module (session.js, real sealed chunks from a fake console) and the ZIP export
// (export.js) show and write the composited screens. Node has no createImageBitmap: the tests
// give the compositor a PNG decoder of their own (node:zlib, 8-bit RGB, all five filters).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { deflateSync, inflateSync } from 'node:zlib';
import {
  Compositor, FormatError, Screen, ScreenTrack, checkPng, encodePng, isUpdateName, parseScreenUpdate, pngName,
} from '../assets/js/screen.js';
import { Recording } from '../assets/js/session.js';
import { exportFrames } from '../assets/js/export.js';
import { Keyring } from '../assets/js/keyring.js';
import { tileScreens } from '../assets/js/tiles.js';
import { concat, u16be, u32be, utf8 } from '../assets/js/hex.js';
import { passphrase, sealChunk } from '../test-support/helpers.mjs';
import { fakeConsole } from '../test-support/fake-console.mjs';

// ---- a PNG codec of the tests' own (not the page's) ----

const CRC = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();
const crc = (bytes) => {
  let c = -1;
  for (const b of bytes) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
};
const paeth = (a, b, c) => {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
};

/** `rgb` (w × h × 3) as an 8-bit RGB PNG, row y filtered with `filters[y % filters.length]`. */
function png(w, h, rgb, filters = [0, 1, 2, 3, 4]) {
  const stride = w * 3;
  const raw = Buffer.alloc((stride + 1) * h);
  for (let y = 0; y < h; y += 1) {
    const f = filters[y % filters.length];
    raw[y * (stride + 1)] = f;
    for (let i = 0; i < stride; i += 1) {
      const x = rgb[y * stride + i];
      const a = i >= 3 ? rgb[y * stride + i - 3] : 0;
      const b = y > 0 ? rgb[(y - 1) * stride + i] : 0;
      const c = i >= 3 && y > 0 ? rgb[(y - 1) * stride + i - 3] : 0;
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][f];
      raw[y * (stride + 1) + 1 + i] = (x - pred) & 0xff;
    }
  }
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc(body), body.length + 4);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return new Uint8Array(Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]));
}

/** Decode an 8-bit RGB, non-interlaced PNG of `w × h` pixels (CRCs checked) to RGBA bytes. */
function decodePng(data, w, h) {
  const b = Buffer.from(data.buffer, data.byteOffset, data.length);
  let at = 8;
  const idat = [];
  let ihdr = null;
  while (at < b.length) {
    const len = b.readUInt32BE(at);
    const type = b.toString('latin1', at + 4, at + 8);
    if (crc(b.subarray(at + 4, at + 8 + len)) !== b.readUInt32BE(at + 8 + len)) throw new Error(`${type}: bad CRC`);
    const body = b.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') ihdr = body;
    if (type === 'IDAT') idat.push(body);
    at += 12 + len;
    if (type === 'IEND') break;
  }
  if (!ihdr || ihdr.readUInt32BE(0) !== w || ihdr.readUInt32BE(4) !== h || ihdr[8] !== 8 || ihdr[9] !== 2 || ihdr[12] !== 0) {
    throw new Error('not an 8-bit RGB non-interlaced PNG of that size');
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = w * 3;
  if (raw.length !== (stride + 1) * h) throw new Error(`image data is ${raw.length} bytes`);
  const rgb = new Uint8Array(stride * h);
  for (let y = 0; y < h; y += 1) {
    const f = raw[y * (stride + 1)];
    for (let i = 0; i < stride; i += 1) {
      const a = i >= 3 ? rgb[y * stride + i - 3] : 0;
      const up = y > 0 ? rgb[(y - 1) * stride + i] : 0;
      const c = i >= 3 && y > 0 ? rgb[(y - 1) * stride + i - 3] : 0;
      const pred = [0, a, up, (a + up) >> 1, paeth(a, up, c)][f];
      if (pred === undefined) throw new Error(`filter type ${f}`);
      rgb[y * stride + i] = (raw[y * (stride + 1) + 1 + i] + pred) & 0xff;
    }
  }
  const rgba = new Uint8Array(w * h * 4);
  for (let p = 0; p < w * h; p += 1) rgba.set([rgb[p * 3], rgb[p * 3 + 1], rgb[p * 3 + 2], 255], p * 4);
  return rgba;
}

// ---- updates made by hand ----

/** A w × h picture whose every pixel differs with `seed`, x and y: offsets show. */
const picture = (w, h, seed) => {
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) out.set([(seed * 31 + x * 7) & 0xff, (seed * 17 + y * 13) & 0xff, (seed + x * y) & 0xff], (y * w + x) * 3);
  }
  return out;
};

/**
 * A screen update's bytes: `rects` [{x, y, w, h, seed}] each a PNG of picture(w, h, seed) (or
 * `png` bytes given); with `copies` [[sx, sy, w, h, dx, dy]] (even none), version 2's layout
 * under version 2's magic; `flags`, `magic` and `trailer` to break it.
 */
function ssu({ keyframe = false, width, height, copies, rects, flags, magic = [0x53, 0x53, 0x55, copies ? 2 : 1], trailer = [] }) {
  const parts = [Uint8Array.from(magic), Uint8Array.of(flags ?? (keyframe ? 1 : 0)), u16be(width), u16be(height)];
  if (copies) parts.push(u16be(copies.length), ...copies.flat().map(u16be));
  parts.push(u16be(rects.length));
  for (const r of rects) {
    const p = r.png ?? png(r.w, r.h, picture(r.w, r.h, r.seed));
    parts.push(u16be(r.x), u16be(r.y), u16be(r.w), u16be(r.h), u32be(p.length), p);
  }
  return concat(...parts, Uint8Array.from(trailer));
}

/**
 * The oracle: the screen (RGB) the spec's rule makes of `updates` [{keyframe, width, height,
 * copies, rects, malformed}] taken in order, written straight from the text, pixels from
 * picture(); each copy pixel by pixel from a snapshot of the screen taken just before it.
 */
function expected(updates) {
  let s = null;
  for (const u of updates) {
    if (!u || u.malformed) continue;
    if (u.keyframe || !s || s.w !== u.width || s.h !== u.height) s = { w: u.width, h: u.height, rgb: new Uint8Array(u.width * u.height * 3) };
    for (const [sx, sy, w, h, dx, dy] of u.copies ?? []) {
      const before = s.rgb.slice();
      for (let y = 0; y < h; y += 1) {
        for (let x = 0; x < w; x += 1) s.rgb.set(before.subarray(((sy + y) * s.w + sx + x) * 3, ((sy + y) * s.w + sx + x) * 3 + 3), ((dy + y) * s.w + dx + x) * 3);
      }
    }
    for (const r of u.rects) {
      const p = picture(r.w, r.h, r.seed);
      for (let y = 0; y < r.h; y += 1) {
        for (let x = 0; x < r.w; x += 1) s.rgb.set(p.subarray((y * r.w + x) * 3, (y * r.w + x) * 3 + 3), ((r.y + y) * s.w + r.x + x) * 3);
      }
    }
  }
  return s;
}

const sameScreen = (screen, want, what) => {
  assert.ok(screen, `${what}: no screen`);
  assert.deepEqual([screen.width, screen.height], [want.w, want.h], `${what}: size`);
  assert.ok(Buffer.from(screen.rgb()).equals(Buffer.from(want.rgb)), `${what}: pixels differ`);
};

const K1 = { keyframe: true, width: 8, height: 6, rects: [{ x: 0, y: 0, w: 8, h: 6, seed: 1 }] };
const P1 = { width: 8, height: 6, rects: [{ x: 2, y: 1, w: 3, h: 2, seed: 2 }, { x: 7, y: 5, w: 1, h: 1, seed: 3 }] };
const P2 = { width: 8, height: 6, rects: [{ x: 0, y: 0, w: 4, h: 4, seed: 4 }, { x: 3, y: 3, w: 5, h: 3, seed: 5 }] };
const RESIZED = { width: 5, height: 4, rects: [{ x: 1, y: 1, w: 2, h: 2, seed: 6 }] };

// ---- the tests' own codec ----

test("the tests' PNG codec round-trips every filter type", () => {
  for (const filters of [[0], [1], [2], [3], [4], [4, 3, 2, 1, 0]]) {
    const p = picture(7, 5, filters[0] + 9);
    const rgba = decodePng(png(7, 5, p, filters), 7, 5);
    const rgb = rgba.filter((_, i) => i % 4 !== 3);
    assert.deepEqual(rgb, p, `filters ${filters}`);
  }
});

// ---- parsing ----

test('a screen update parses field by field', () => {
  const u = parseScreenUpdate(ssu(P1));
  assert.equal(u.keyframe, false);
  assert.deepEqual([u.width, u.height], [8, 6]);
  assert.deepEqual(u.rects.map(({ x, y, w, h }) => [x, y, w, h]), [[2, 1, 3, 2], [7, 5, 1, 1]]);
  assert.deepEqual(u.rects[0].png, png(3, 2, picture(3, 2, 2)));
  const k = parseScreenUpdate(ssu(K1));
  assert.equal(k.keyframe, true);
  // The largest sizes the spec allows.
  const big = parseScreenUpdate(ssu({ width: 16384, height: 16384, rects: [{ x: 16383, y: 16383, w: 1, h: 1, seed: 0 }] }));
  assert.deepEqual([big.width, big.height, big.rects[0].x], [16384, 16384, 16383]);
  const many = Array.from({ length: 4096 }, (_, i) => ({ x: i % 64, y: Math.floor(i / 64), w: 1, h: 1, png: Uint8Array.of(1) }));
  assert.equal(parseScreenUpdate(ssu({ width: 64, height: 64, rects: many })).rects.length, 4096);
  assert.ok(isUpdateName('screen-00000001.ssu') && !isUpdateName('screen-00000001.png') && !isUpdateName('x.SSU'));
  assert.equal(pngName('screen-00000001.ssu'), 'screen-00000001.png');
});

test('a screen update that breaks a rule is refused, naming the rule', () => {
  const tooMany = Array.from({ length: 4097 }, () => ({ x: 0, y: 0, w: 1, h: 1, png: Uint8Array.of(1) }));
  const bad = {
    'bad magic': [ssu({ ...P1, magic: [0x53, 0x53, 0x56, 0x01] }), /bad magic/],
    'version 3': [ssu({ ...P1, magic: [0x53, 0x53, 0x55, 0x03] }), /unknown version 3 \(this reader knows 1 and 2\)/],
    'version 0': [ssu({ ...P1, magic: [0x53, 0x53, 0x55, 0x00] }), /unknown version 0/],
    'flag bit 1': [ssu({ ...P1, flags: 0x02 }), /reserved flag bits set \(flags 0x2\)/],
    'flag bit 7 on a keyframe': [ssu({ ...K1, flags: 0x81 }), /reserved flag bits set \(flags 0x81\)/],
    'width 0': [ssu({ width: 0, height: 6, rects: [{ x: 0, y: 0, w: 1, h: 1, seed: 0 }] }), /width 0 is outside 1..=16384/],
    'height 16385': [ssu({ width: 6, height: 16385, rects: [{ x: 0, y: 0, w: 1, h: 1, seed: 0 }] }), /height 16385 is outside 1..=16384/],
    'no rectangle': [ssu({ width: 8, height: 6, rects: [] }), /count 0 is outside 1..=4096/],
    '4097 rectangles': [ssu({ width: 8, height: 6, rects: tooMany }), /count 4097 is outside 1..=4096/],
    'empty rectangle': [ssu({ width: 8, height: 6, rects: [{ x: 0, y: 0, w: 0, h: 1, png: Uint8Array.of(1) }] }), /rectangle 0 .* is empty or outside/],
    'rectangle past the right edge': [ssu({ width: 8, height: 6, rects: [{ x: 6, y: 0, w: 3, h: 1, seed: 0 }] }), /rectangle 0 \(6,0 3×1\) is empty or outside the 8×6 screen/],
    'rectangle past the bottom': [ssu({ width: 8, height: 6, rects: [P1.rects[0], { x: 0, y: 5, w: 1, h: 2, seed: 0 }] }), /rectangle 1 \(0,5 1×2\)/],
    'x beyond the screen': [ssu({ width: 8, height: 6, rects: [{ x: 65535, y: 0, w: 1, h: 1, seed: 0 }] }), /rectangle 0/],
    'trailing byte': [ssu({ ...P1, trailer: [0] }), /1 bytes after the end/],
    'png_len past the end': [ssu(P1).subarray(0, ssu(P1).length - 1), /truncated: png needs/],
    'cut in a rectangle header': [ssu(P1).subarray(0, 15), /truncated/],
    'cut in the header': [ssu(P1).subarray(0, 9), /truncated/],
    'keyframe of two rectangles': [ssu({ ...K1, rects: [{ x: 0, y: 0, w: 8, h: 3, seed: 1 }, { x: 0, y: 3, w: 8, h: 3, seed: 1 }] }), /keyframe must be exactly one rectangle/],
    'keyframe not covering the screen': [ssu({ ...K1, rects: [{ x: 0, y: 0, w: 8, h: 5, seed: 1 }] }), /keyframe must be exactly one rectangle/],
    'keyframe at an offset': [ssu({ ...K1, width: 9, rects: [{ x: 1, y: 0, w: 8, h: 6, seed: 1 }] }), /keyframe must be exactly one rectangle/],
  };
  for (const [name, [bytes, message]] of Object.entries(bad)) {
    assert.throws(() => parseScreenUpdate(bytes), (e) => e instanceof FormatError && message.test(e.message), name);
  }
});

test('a rectangle PNG other than w × h pixels of 8-bit RGB, not interlaced, with right CRCs, is refused', () => {
  const good = png(3, 2, picture(3, 2, 2));
  checkPng(good, 3, 2);
  const edit = (at, v) => { const b = good.slice(); b[at] = v; return b; };
  const ihdrCrc = (b) => { const c = crc(b.subarray(12, 29)); new DataView(b.buffer).setUint32(29, c); return b; };
  const bad = {
    'another size': [good, 2, 3, /3×2 pixels, the rectangle is 2×3/],
    'no signature': [edit(1, 0x51), 3, 2, /no PNG signature/],
    'bad CRC': [edit(20, 9), 3, 2, /IHDR chunk: CRC mismatch/],
    '16-bit': [ihdrCrc(edit(24, 16)), 3, 2, /bit depth 16, colour type 2/],
    RGBA: [ihdrCrc(edit(25, 6)), 3, 2, /colour type 6/],
    interlaced: [ihdrCrc(edit(28, 1)), 3, 2, /interlaced/],
    'cut short': [good.subarray(0, good.length - 12), 3, 2, /truncated chunk|runs past/],
  };
  for (const [name, [bytes, w, h, message]] of Object.entries(bad)) {
    assert.throws(() => checkPng(bytes, w, h), (e) => e instanceof FormatError && message.test(e.message), name);
  }
});

// ---- compositing ----

test('compositing: a keyframe, partial updates over it, a size change from black', async () => {
  const c = new Compositor(decodePng);
  assert.equal(c.screen, null);
  const seen = [];
  for (const [u, what] of [[K1, 'keyframe'], [P1, 'partial update'], [P2, 'overlapping partial update'], [RESIZED, 'size change']]) {
    seen.push(u);
    const s = await c.apply(ssu(u));
    sameScreen(s, expected(seen), what);
  }
  // Spot checks against the pictures themselves: the size change started from black.
  const s = c.screen;
  assert.deepEqual([...s.data.subarray(0, 4)], [0, 0, 0, 255]);
  const p = picture(2, 2, 6);
  assert.deepEqual([...s.data.subarray((1 * 5 + 1) * 4, (1 * 5 + 1) * 4 + 3)], [...p.subarray(0, 3)]);
  // A partial update before any keyframe: black at its size, then its rectangles.
  const fresh = new Compositor(decodePng);
  sameScreen(await fresh.apply(ssu(P1)), expected([P1]), 'first update not a keyframe');
  // A keyframe of the same size replaces everything (nothing of before stays).
  sameScreen(await fresh.apply(ssu({ ...K1, rects: [{ ...K1.rects[0], seed: 9 }] })), expected([{ ...K1, rects: [{ ...K1.rects[0], seed: 9 }] }]), 'second keyframe');
});

test('a malformed update leaves the screen exactly as it was', async () => {
  const c = new Compositor(decodePng);
  await c.apply(ssu(K1));
  await c.apply(ssu(P1));
  const before = c.screen.rgb();
  const wrongSize = png(2, 2, picture(2, 2, 7));
  const corrupt = png(3, 2, picture(3, 2, 7)).slice();
  corrupt[corrupt.length - 20] ^= 0xff; // in IDAT: its CRC fails
  const broken = {
    // The first rectangle is good: nothing of it may be painted when the second is refused.
    'a PNG of another size': ssu({ width: 8, height: 6, rects: [{ x: 0, y: 0, w: 4, h: 4, seed: 8 }, { x: 0, y: 0, w: 3, h: 3, png: wrongSize }] }),
    'a corrupt PNG': ssu({ width: 8, height: 6, rects: [{ x: 0, y: 0, w: 4, h: 4, seed: 8 }, { x: 1, y: 1, w: 3, h: 2, png: corrupt }] }),
    'not a PNG': ssu({ width: 8, height: 6, rects: [{ x: 0, y: 0, w: 1, h: 1, png: utf8('GIF89a') }] }),
    'trailing bytes': ssu({ ...P2, trailer: [1, 2] }),
    'a keyframe at another size whose PNG fails': ssu({ keyframe: true, width: 4, height: 4, rects: [{ x: 0, y: 0, w: 4, h: 4, png: wrongSize }] }),
    'version 3': ssu({ ...P2, copies: [[0, 0, 1, 1, 1, 1]], magic: [0x53, 0x53, 0x55, 0x03] }),
  };
  for (const [what, bytes] of Object.entries(broken)) {
    await assert.rejects(c.apply(bytes), FormatError, what);
    assert.deepEqual([c.screen.width, c.screen.height], [8, 6], what);
    assert.ok(Buffer.from(c.screen.rgb()).equals(Buffer.from(before)), `${what}: the screen changed`);
  }
  // A decoder as lenient as a browser's (any PNG, any size) still gets only what the spec
  // allows: the compositor checks each PNG's header itself.
  const lenient = new Compositor((p, w, h) => new Uint8Array(w * h * 4).fill(200), c.screen);
  const sixteenBit = png(3, 2, picture(3, 2, 2)).slice();
  sixteenBit[24] = 16;
  new DataView(sixteenBit.buffer).setUint32(29, crc(sixteenBit.subarray(12, 29)));
  for (const [what, p] of [['another size', wrongSize], ['16-bit', sixteenBit]]) {
    await assert.rejects(lenient.apply(ssu({ width: 8, height: 6, rects: [{ x: 2, y: 1, w: 3, h: 2, png: p }] })), FormatError, what);
    assert.ok(Buffer.from(lenient.screen.rgb()).equals(Buffer.from(before)), `${what}: the screen changed`);
  }
  // A decoder that fails refuses the update as malformed too.
  const failing = new Compositor(() => { throw new Error('cannot decode'); }, c.screen);
  await assert.rejects(failing.apply(ssu(P2)), /rectangle 0: cannot decode/);
  assert.ok(Buffer.from(failing.screen.rgb()).equals(Buffer.from(before)));
});

// ---- a stream's screens: seeking ----

/**
 * A stream of frames for a ScreenTrack: keys 10, 20, 30 …; `frames` [{update} | {other} |
 * {missing} | {fails}] (missing: its chunk cannot be had, as one not stored or tampered;
 * fails: its load throws, as when the page is locked or the server fails).
 */
function fakeStream(frames) {
  const keys = frames.map((_, i) => (i + 1) * 10);
  const loads = [];
  const track = new ScreenTrack({
    decodePng,
    before: (k) => { const i = keys.indexOf(k); return i > 0 ? keys[i - 1] : null; },
    load: async (k) => {
      loads.push(k);
      const f = frames[keys.indexOf(k)];
      if (f.missing) return { type: 'missing', error: new Error(`chunk ${k} was not served`) };
      if (f.fails) throw new Error('locked');
      return f.other ? { type: 'other' } : { type: 'update', bytes: f.bytes ?? ssu(f.update), name: `screen-${k}.ssu` };
    },
  });
  return { keys, loads, track };
}

/** What the screen is after each frame of `frames`, by the oracle. */
const oracle = (frames) => frames.map((_, i) => expected(frames.slice(0, i + 1).map((f) => (f.update && !f.bytes ? f.update : null))));

const STREAM = [
  { update: K1 }, { update: P1 }, { other: true }, { update: P2 }, { update: { ...P1, rects: [{ x: 5, y: 0, w: 3, h: 6, seed: 11 }] } },
  { update: { ...K1, rects: [{ ...K1.rects[0], seed: 12 }] } }, { update: P1 }, { update: { ...P2, rects: [{ x: 1, y: 2, w: 2, h: 2, seed: 13 }] } },
  { update: RESIZED }, { update: { ...RESIZED, rects: [{ x: 0, y: 0, w: 5, h: 1, seed: 14 }] } },
  { update: { keyframe: true, width: 8, height: 6, rects: [{ x: 0, y: 0, w: 8, h: 6, seed: 15 }] } }, { update: P2 },
];

test('seeking to any frame makes the screen compositing from the start makes', async () => {
  const want = oracle(STREAM);
  const forward = fakeStream(STREAM);
  for (const [i, k] of forward.keys.entries()) {
    const s = await forward.track.at(k);
    if (STREAM[i].other) { assert.equal(s.update, false); continue; }
    sameScreen(s.screen, want[i], `frame ${i} played forward`);
  }
  // Playing forward loads each frame once.
  assert.deepEqual(forward.loads, forward.keys);
  // Seeks in any order, each on a fresh track and on one that moved about.
  const roaming = fakeStream(STREAM);
  for (const i of [7, 3, 11, 0, 9, 4, 6, 1, 10, 8, 5, 7]) {
    const k = roaming.keys[i];
    if (STREAM[i].other) continue;
    sameScreen((await roaming.track.at(k)).screen, want[i], `frame ${i} sought`);
    const fresh = fakeStream(STREAM);
    sameScreen((await fresh.track.at(k)).screen, want[i], `frame ${i} sought on a fresh track`);
  }
});

test('a seek loads only the last keyframe before the frame and the updates after it', async () => {
  // Frame 7 (key 80): the last keyframe before it is frame 5 (key 60).
  const { track, loads } = fakeStream(STREAM);
  await track.at(80);
  assert.deepEqual(loads.sort((a, b) => a - b), [60, 70, 80]);
  // Then playing forward: one load per frame.
  loads.length = 0;
  await track.at(90);
  assert.deepEqual(loads, [90]);
  // A seek back to frame 1 walks to frame 0's keyframe only.
  loads.length = 0;
  await track.at(20);
  assert.deepEqual(loads.sort((a, b) => a - b), [10, 20]);
  // And forward again to frame 7: its screen was kept, nothing is loaded.
  loads.length = 0;
  await track.at(80);
  assert.deepEqual(loads, []);
  // A seek past a size change: frame 9 walks back to frame 5 (a size change is no keyframe).
  const other = fakeStream(STREAM);
  await other.track.at(100);
  assert.deepEqual(other.loads.sort((a, b) => a - b), [60, 70, 80, 90, 100]);
});

test('a missing update or a gap does not reset the screen; the next keyframe repairs it', async () => {
  const frames = [{ update: K1 }, { update: P1 }, { missing: true }, { missing: true }, { update: P2 }, { update: { ...K1, rects: [{ ...K1.rects[0], seed: 3 }] } }];
  const { track, keys } = fakeStream(frames);
  const at4 = await track.at(keys[4]);
  sameScreen(at4.screen, expected([K1, P1, P2]), 'after the missing updates');
  assert.deepEqual(at4.skipped, [keys[3], keys[2]]);
  sameScreen((await track.at(keys[5])).screen, expected([{ ...K1, rects: [{ ...K1.rects[0], seed: 3 }] }]), 'the next keyframe');
  // The frame asked for itself cannot be had: said, not hidden.
  await assert.rejects(fakeStream(frames).track.at(keys[2]), /chunk 30 was not served/);
  // A load that fails otherwise (locked, the server down) stops the seek: nothing further back
  // is fetched, and nothing is shown as if it were the screen.
  const failing = fakeStream([{ update: K1 }, { update: P1 }, { fails: true }, { update: P2 }]);
  await assert.rejects(failing.track.at(failing.keys[3]), /locked/);
  assert.deepEqual(failing.loads, [failing.keys[3], failing.keys[2]]);
});

test('a malformed update shows the screen before it; a keyframe that does not decode is walked past', async () => {
  const badPng = ssu({ keyframe: true, width: 8, height: 6, rects: [{ x: 0, y: 0, w: 8, h: 6, png: png(8, 5, picture(8, 5, 1)) }] });
  const frames = [
    { update: K1 }, { update: P1 }, { bytes: ssu({ ...P2, trailer: [0] }), update: P2 }, { update: P2 },
    { bytes: badPng, update: K1 }, { update: RESIZED },
  ];
  const want = [expected([K1]), expected([K1, P1]), expected([K1, P1]), expected([K1, P1, P2]), expected([K1, P1, P2]), expected([K1, P1, P2, RESIZED])];
  for (const order of [[0, 1, 2, 3, 4, 5], [2, 5, 4], [4], [5]]) {
    const { track, keys } = fakeStream(frames);
    for (const i of order) {
      const s = await track.at(keys[i]);
      sameScreen(s.screen, want[i], `frame ${i} (order ${order})`);
      assert.equal(s.malformed !== null, i === 2 || i === 4, `frame ${i} malformed`);
    }
  }
  const { track, keys } = fakeStream(frames);
  assert.match((await track.at(keys[2])).malformed.message, /bytes after the end/);
  // No screen before the first update that parses.
  const none = fakeStream([{ bytes: utf8('not an update'), update: K1 }, { update: P1 }]);
  assert.equal((await none.track.at(none.keys[0])).screen, null);
  sameScreen((await none.track.at(none.keys[1])).screen, expected([P1]), 'the first good update');
});

test('memory stays bounded: screens kept for seeking fit their budget', async () => {
  const many = Array.from({ length: 40 }, (_, i) => ({ update: i % 10 === 0 ? K1 : { ...P1, rects: [{ x: i % 6, y: 1, w: 2, h: 2, seed: i }] } }));
  const keys = many.map((_, i) => i);
  const track = new ScreenTrack({
    decodePng,
    before: (k) => (k > 0 ? k - 1 : null),
    load: async (k) => ({ type: 'update', bytes: ssu(many[k].update) }),
    snapshotBytes: 5 * 8 * 6 * 4,
    itemBytes: 4096,
  });
  const want = oracle(many);
  for (const k of keys) sameScreen((await track.at(k)).screen, want[k], `frame ${k}`);
  for (const k of [3, 25, 39, 0, 17]) sameScreen((await track.at(k)).screen, want[k], `frame ${k} again`);
  assert.ok(track.loads < 40 + 5 * 10, `loads ${track.loads}`);
});

// ---- version 2: copies (a scroll) before the rectangles ----

/** A keyframe of 12 × 9 and version-2 updates over it (copies as [sx, sy, w, h, dx, dy]). */
const K2 = { keyframe: true, width: 12, height: 9, rects: [{ x: 0, y: 0, w: 12, h: 9, seed: 21 }] };
const SCROLL_UP = { width: 12, height: 9, copies: [[0, 2, 12, 7, 0, 0]], rects: [{ x: 0, y: 7, w: 12, h: 2, seed: 22 }] };
const SCROLL_DOWN = { width: 12, height: 9, copies: [[0, 0, 12, 6, 0, 3]], rects: [] };
const SIDEWAYS = { width: 12, height: 9, copies: [[0, 1, 10, 7, 2, 1], [3, 0, 9, 9, 0, 0]], rects: [] };
// The second copy reads what the first wrote; the rectangle is painted over the first's source after it.
const CHAIN = { width: 12, height: 9, copies: [[0, 0, 4, 4, 6, 3], [6, 3, 4, 4, 1, 5]], rects: [{ x: 0, y: 0, w: 3, h: 3, seed: 23 }] };
const DIAGONAL = { width: 12, height: 9, copies: [[1, 1, 8, 6, 3, 2], [3, 2, 8, 6, 2, 3]], rects: [] };
const NO_COPY = { width: 12, height: 9, copies: [], rects: [{ x: 4, y: 4, w: 2, h: 2, seed: 24 }] };
const K2_V2 = { ...K2, copies: [], rects: [{ ...K2.rects[0], seed: 25 }] };
// Another size without a keyframe: black, so the copy copies black; then the rectangle.
const RESIZED_V2 = { width: 7, height: 5, copies: [[0, 0, 3, 3, 4, 2]], rects: [{ x: 0, y: 0, w: 3, h: 3, seed: 26 }] };
const V2_UPDATES = [K2, SCROLL_UP, SCROLL_DOWN, SIDEWAYS, CHAIN, DIAGONAL, NO_COPY, K2_V2, SCROLL_UP, RESIZED_V2];

test('a version-2 update parses its copies field by field; version 1 has none', () => {
  const u = parseScreenUpdate(ssu(CHAIN));
  assert.deepEqual([u.version, u.keyframe, u.width, u.height], [2, false, 12, 9]);
  assert.deepEqual(u.copies, [{ sx: 0, sy: 0, w: 4, h: 4, dx: 6, dy: 3 }, { sx: 6, sy: 3, w: 4, h: 4, dx: 1, dy: 5 }]);
  assert.deepEqual(u.rects.map(({ x, y, w, h }) => [x, y, w, h]), [[0, 0, 3, 3]]);
  assert.deepEqual(u.rects[0].png, png(3, 3, picture(3, 3, 23)));
  const one = parseScreenUpdate(ssu(P1));
  assert.deepEqual([one.version, one.copies], [1, []]);
  // Copies only; no copy (a partial update, a keyframe); the most copies, at the screen's edges.
  assert.deepEqual(parseScreenUpdate(ssu(SCROLL_DOWN)).rects, []);
  assert.equal(parseScreenUpdate(ssu(NO_COPY)).copies.length, 0);
  assert.equal(parseScreenUpdate(ssu(K2_V2)).keyframe, true);
  const most = Array.from({ length: 4096 }, (_, i) => [i, 0, 16384 - i, 16384, 0, 0]);
  const big = parseScreenUpdate(ssu({ width: 16384, height: 16384, copies: most, rects: [] }));
  assert.deepEqual([big.copies.length, big.copies[4095]], [4096, { sx: 4095, sy: 0, w: 12289, h: 16384, dx: 0, dy: 0 }]);
});

test('a version-2 update that breaks a rule is refused, naming the rule', () => {
  const c = [0, 0, 1, 1, 1, 1];
  const dot = [{ x: 2, y: 2, w: 1, h: 1, seed: 2 }];
  const v2 = (copies, rects = [], more = {}) => ssu({ width: 8, height: 6, copies, rects, ...more });
  const bad = {
    'version 3': [v2([c], dot, { magic: [0x53, 0x53, 0x55, 0x03] }), /unknown version 3 \(this reader knows 1 and 2\)/],
    'version 255': [v2([], dot, { magic: [0x53, 0x53, 0x55, 0xff] }), /unknown version 255/],
    'no copy and no rectangle': [v2([]), /count 0 is outside 1..=4096/],
    'a keyframe with a copy': [ssu({ ...K1, copies: [c] }), /a keyframe has no copies \(it has 1\)/],
    'a keyframe of copies only': [ssu({ ...K1, copies: [[0, 0, 8, 6, 0, 0]], rects: [] }), /a keyframe has no copies/],
    'a keyframe without a rectangle': [ssu({ ...K1, copies: [], rects: [] }), /count 0 is outside 1..=4096/],
    'copy source past the right edge': [v2([[6, 0, 3, 1, 0, 0]]), /copy 0 \(6,0 3×1 to 0,0\) is empty or outside the 8×6 screen/],
    'copy source past the bottom': [v2([[0, 5, 1, 2, 0, 0]]), /copy 0 \(0,5 1×2 to 0,0\)/],
    'copy destination past the right edge': [v2([[0, 0, 3, 1, 6, 0]]), /copy 0 \(0,0 3×1 to 6,0\)/],
    'copy destination past the bottom': [v2([[0, 0, 1, 2, 0, 5]]), /copy 0 \(0,0 1×2 to 0,5\)/],
    'copy at x 65535': [v2([[65535, 0, 1, 1, 0, 0]]), /copy 0/],
    'copy 65535 wide': [v2([[1, 0, 65535, 1, 0, 0]]), /copy 0/],
    'copy of width 0': [v2([[0, 0, 0, 1, 1, 1]]), /copy 0 .* is empty/],
    'copy of height 0': [v2([[0, 0, 1, 0, 1, 1]]), /copy 0 .* is empty/],
    'a bad copy after a good one': [v2([c, [0, 0, 9, 1, 0, 0]]), /copy 1 \(0,0 9×1 to 0,0\)/],
    '4097 copies': [v2(Array(4097).fill(c)), /copies 4097 is outside 0..=4096/],
    'cut in a copy': [v2([c]).subarray(0, 11 + 8), /truncated: dx needs/],
    'no rectangle count': [v2([c]).subarray(0, 11 + 12), /truncated: count needs/],
    'a byte after copies only': [v2([c], [], { trailer: [0] }), /1 bytes after the end/],
    'flag bit 1': [v2([c], [], { flags: 2 }), /reserved flag bits set/],
    'rectangle past the right edge': [v2([c], [{ x: 6, y: 0, w: 3, h: 1, seed: 0 }]), /rectangle 0 \(6,0 3×1\)/],
    '4097 rectangles': [v2([c], Array(4097).fill({ x: 0, y: 0, w: 1, h: 1, png: Uint8Array.of(1) })), /count 4097 is outside 0..=4096/],
    // Each version's layout under the other's magic.
    'a version-1 update marked 2': [ssu({ ...P1, magic: [0x53, 0x53, 0x55, 0x02] }), /copy 0|truncated|after the end/],
    'a version-2 update marked 1': [v2([c], dot, { magic: [0x53, 0x53, 0x55, 0x01] }), /rectangle 0|truncated|after the end/],
  };
  for (const [name, [bytes, message]] of Object.entries(bad)) {
    assert.throws(() => parseScreenUpdate(bytes), (e) => e instanceof FormatError && message.test(e.message), `${name}`);
  }
});

test('Screen.copy moves any rectangle to any place as through a buffer, whatever the overlap', () => {
  // Every direction and amount of overlap, on a screen whose pixels all differ, against the oracle.
  const [W, H] = [9, 7];
  const base = Screen.black(W, H);
  base.paint(0, 0, W, H, decodePng(png(W, H, picture(W, H, 31)), W, H));
  const start = { keyframe: true, width: W, height: H, rects: [{ x: 0, y: 0, w: W, h: H, seed: 31 }] };
  let n = 0;
  for (const [w, h] of [[9, 7], [5, 4], [1, 7], [9, 1], [3, 3]]) {
    for (let sx = 0; sx + w <= W; sx += 2) {
      for (let sy = 0; sy + h <= H; sy += 2) {
        for (let dx = Math.max(0, sx - 3); dx + w <= W && dx <= sx + 3; dx += 1) {
          for (let dy = Math.max(0, sy - 3); dy + h <= H && dy <= sy + 3; dy += 1) {
            const s = base.clone();
            s.copy(sx, sy, w, h, dx, dy);
            const want = expected([start, { width: W, height: H, copies: [[sx, sy, w, h, dx, dy]], rects: [] }]);
            assert.ok(Buffer.from(s.rgb()).equals(Buffer.from(want.rgb)), `copy ${sx},${sy} ${w}×${h} to ${dx},${dy}`);
            assert.ok(s.data.every((v, i) => i % 4 !== 3 || v === 255), 'opaque');
            n += 1;
          }
        }
      }
    }
  }
  assert.ok(n > 400, `${n} copies`);
});

test('compositing version 2: scrolls up and down, overlapping copies in order, then the rectangles', async () => {
  const c = new Compositor(decodePng);
  const seen = [];
  for (const [i, u] of V2_UPDATES.entries()) {
    seen.push(u);
    sameScreen(await c.apply(ssu(u)), expected(seen), `update ${i}`);
  }
  // Spot checks against the pictures: scrolled up by 2, the top row is the keyframe's third.
  const up = new Compositor(decodePng);
  await up.apply(ssu(K2));
  await up.apply(ssu(SCROLL_UP));
  const k = picture(12, 9, 21);
  assert.deepEqual([...up.screen.rgb().subarray(0, 36)], [...k.subarray(2 * 36, 3 * 36)]);
  // The resized screen: black where the copy went (it copied black), the rectangle at 0,0.
  assert.deepEqual([...c.screen.rgb().subarray((2 * 7 + 4) * 3, (2 * 7 + 4) * 3 + 3)], [0, 0, 0]);
  // A version-2 update as the first: black, the copy copies black, then its rectangles.
  const first = new Compositor(decodePng);
  sameScreen(await first.apply(ssu(CHAIN)), expected([CHAIN]), 'version 2 first');
  // The widest screen: 4096 one-pixel copies, each reading what the one before it wrote.
  const wide = new Compositor(decodePng);
  const row = [{ keyframe: true, width: 16384, height: 1, rects: [{ x: 0, y: 0, w: 16384, h: 1, seed: 27 }] },
    { width: 16384, height: 1, copies: Array.from({ length: 4096 }, (_, i) => [i, 0, 1, 1, i + 1, 0]), rects: [] },
    { width: 16384, height: 1, copies: [[0, 0, 16383, 1, 1, 0], [2, 0, 16382, 1, 0, 0]], rects: [] }];
  for (const [i, u] of row.entries()) sameScreen(await wide.apply(ssu(u)), expected(row.slice(0, i + 1)), `wide ${i}`);
});

test('a malformed version-2 update leaves the screen exactly as it was, its good copies not made', async () => {
  const c = new Compositor(decodePng);
  await c.apply(ssu(K2));
  await c.apply(ssu(SCROLL_UP));
  const before = c.screen.rgb();
  const broken = {
    'a good copy and a PNG of another size': ssu({ ...SCROLL_DOWN, rects: [{ x: 0, y: 0, w: 3, h: 3, png: png(2, 2, picture(2, 2, 1)) }] }),
    'a good copy and not a PNG': ssu({ ...SCROLL_DOWN, rects: [{ x: 0, y: 0, w: 1, h: 1, png: utf8('GIF89a') }] }),
    'a good copy and a bad one': ssu({ ...SCROLL_DOWN, copies: [...SCROLL_DOWN.copies, [0, 0, 13, 1, 0, 0]] }),
    'copies and a trailing byte': ssu({ ...SCROLL_DOWN, trailer: [0] }),
    'a keyframe with a copy at another size': ssu({ keyframe: true, width: 4, height: 4, copies: [[0, 0, 1, 1, 1, 1]], rects: [{ x: 0, y: 0, w: 4, h: 4, seed: 1 }] }),
    'version 3': ssu({ ...SCROLL_DOWN, magic: [0x53, 0x53, 0x55, 0x03] }),
  };
  for (const [what, bytes] of Object.entries(broken)) {
    await assert.rejects(c.apply(bytes), FormatError, what);
    assert.deepEqual([c.screen.width, c.screen.height], [12, 9], what);
    assert.ok(Buffer.from(c.screen.rgb()).equals(Buffer.from(before)), `${what}: the screen changed`);
  }
});

test('seeking in a stream of version-2 updates makes the screen compositing from the start makes', async () => {
  const frames = [...V2_UPDATES.map((update) => ({ update })), { update: K2 }, { update: SCROLL_DOWN }, { update: SIDEWAYS },
    { bytes: ssu({ ...SCROLL_UP, trailer: [0] }), update: SCROLL_UP }, { update: DIAGONAL }, { update: CHAIN }];
  const want = oracle(frames);
  const forward = fakeStream(frames);
  for (const [i, k] of forward.keys.entries()) sameScreen((await forward.track.at(k)).screen, want[i], `frame ${i} played`);
  for (const i of [14, 3, 9, 5, 12, 0, 15, 8]) {
    const fresh = fakeStream(frames);
    sameScreen((await fresh.track.at(fresh.keys[i])).screen, want[i], `frame ${i} sought`);
    // Walking back stops at the last keyframe (a version-2 one among them), not before.
    const last = frames.slice(0, i + 1).findLastIndex((f) => f.update?.keyframe && !f.bytes);
    assert.deepEqual(fresh.loads.sort((a, b) => a - b), fresh.keys.slice(last, i + 1), `frame ${i}: loads`);
  }
});

// ---- the page's session module and ZIP export, over sealed chunks ----

/** A frame payload: name_len u16 | name | image. */
const framePayload = (name, image) => concat(u16be(utf8(name).length), utf8(name), image);
const T0 = 1_780_000_000_000_000;

/**
 * Seal a frames stream (stream 0): `frames` [{update} | {image} | {gap: [first, last]} |
 * {dropped: true}] at seq 0, 1, …; dropped ones are not stored (a gap record declares them).
 */
async function sealStream(frames) {
  const out = [];
  for (const [seq, f] of frames.entries()) {
    if (f.dropped) continue;
    const h = { seq, captureUs: T0 + seq * 500_000, streamId: 0, kind: 1, final: seq === frames.length - 1 };
    if (f.gap) {
      const g = new Uint8Array(40);
      const dv = new DataView(g.buffer);
      dv.setBigUint64(0, BigInt(f.gap[0]));
      dv.setBigUint64(8, BigInt(f.gap[1]));
      dv.setBigInt64(16, BigInt(T0 + f.gap[0] * 500_000));
      dv.setBigInt64(24, BigInt(T0 + f.gap[1] * 500_000));
      dv.setBigUint64(32, BigInt(f.gap[1] - f.gap[0] + 1));
      out.push(await sealChunk({ ...h, gap: true }, g));
    } else if (f.image) {
      out.push(await sealChunk(h, framePayload(`shot-${seq}.png`, png(4, 3, picture(4, 3, seq)))));
    } else {
      out.push(await sealChunk(h, framePayload(`screen-${String(seq + 1).padStart(8, '0')}.ssu`, f.bytes ?? ssu(f.update))));
    }
  }
  return out;
}

const SESSION = [
  { update: K1 }, { update: P1 }, { image: true }, { update: P2 }, { dropped: true }, { dropped: true }, { gap: [4, 5] },
  { update: { ...P1, rects: [{ x: 5, y: 0, w: 3, h: 6, seed: 11 }] } }, { bytes: ssu({ ...P2, trailer: [0] }), update: P2 },
  { update: { ...K1, rects: [{ ...K1.rects[0], seed: 12 }] } }, { update: P1 }, { update: RESIZED }, { update: P2 },
];
/** The screens of SESSION's frames in the page's frame list (gap records and dropped chunks are not frames). */
const SESSION_FRAMES = SESSION.map((f, seq) => ({ ...f, seq })).filter((f) => !f.dropped && !f.gap);
const sessionScreens = () => {
  const updates = [];
  return SESSION_FRAMES.map((f) => {
    if (f.image) return null;
    updates.push(f.bytes ? null : f.update);
    return expected(updates);
  });
};

async function openSession(t, stored) {
  const { summary, requests } = fakeConsole(t, stored);
  const rec = new Recording(summary, { decodePng });
  await rec.loadIndex();
  await rec.unlock(passphrase);
  return { rec, requests };
}

test('the session module shows each screen update as the screen it makes, sought or played, through a gap', async (t) => {
  const stored = await sealStream(SESSION);
  const want = sessionScreens();
  const { rec } = await openSession(t, stored);
  assert.deepEqual(rec.frames.map((f) => f.seq), SESSION_FRAMES.map((f) => f.seq));
  assert.deepEqual(rec.gaps.map((g) => g.seq), [6]);
  for (const [i, f] of SESSION_FRAMES.entries()) {
    const s = await rec.screen(i);
    if (f.image) { assert.equal(s.update, false); continue; }
    sameScreen(s.screen, want[i], `frame ${i} (seq ${f.seq}) played`);
    assert.equal(s.malformed !== null, f.seq === 8, `frame ${i} malformed`);
  }
  // From the middle, on a fresh page: the same screens; seq 10 decrypts only seqs 9 and 10.
  for (const i of [8, 6, 5, 1, 9]) {
    const { rec: fresh } = await openSession(t, stored);
    sameScreen((await fresh.screen(i)).screen, want[i], `frame ${i} (seq ${SESSION_FRAMES[i].seq}) sought`);
  }
  const { rec: mid } = await openSession(t, stored);
  const ten = SESSION_FRAMES.findIndex((f) => f.seq === 10);
  await mid.screen(ten);
  assert.equal(mid.track.loads, 2, 'opened from the keyframe at seq 9 only');
  await mid.screen(ten + 1);
  assert.equal(mid.track.loads, 3, 'playing on opens one more');
  // Lock forgets the screens.
  mid.lock();
  assert.equal(mid.track, null);
});

test("the player's frames: a screen update is drawn as the whole screen, a malformed one as the screen before it", async (t) => {
  // The browser's createImageBitmap and ImageData, as far as the page uses them for screens.
  const saved = [globalThis.createImageBitmap, globalThis.ImageData];
  globalThis.ImageData = class { constructor(data, width, height) { Object.assign(this, { data, width, height }); } };
  globalThis.createImageBitmap = async (src) => {
    if (!(src instanceof globalThis.ImageData)) throw new Error('not decodable here');
    return { width: src.width, height: src.height, rgba: src.data.slice(), close() {} };
  };
  t.after(() => { [globalThis.createImageBitmap, globalThis.ImageData] = saved; });
  const want = sessionScreens();
  const { rec } = await openSession(t, await sealStream(SESSION));
  for (const i of [9, 3, 4, 5, 6, 0, 1]) {
    const f = await rec.frame(i);
    const w = want[i];
    assert.equal(f.update, true, `frame ${i}`);
    assert.equal(f.name, `screen-${String(SESSION_FRAMES[i].seq + 1).padStart(8, '0')}.ssu`);
    assert.deepEqual([f.bitmap.width, f.bitmap.height], [w.w, w.h], `frame ${i}: size`);
    assert.ok(Buffer.from(f.bitmap.rgba.filter((_, j) => j % 4 !== 3)).equals(Buffer.from(w.rgb)), `frame ${i}: pixels`);
    assert.equal(f.malformed !== null, SESSION_FRAMES[i].seq === 8, `frame ${i}: malformed`);
  }
  // An image frame is still the image as captured.
  const image = await rec.frame(2);
  assert.equal(image.update, undefined);
  assert.deepEqual(image.image, png(4, 3, picture(4, 3, 2)));
});

test('a tampered update before the frame shown is skipped as missing, the frame itself refused', async (t) => {
  const stored = await sealStream(SESSION);
  stored[1] = stored[1].slice();
  stored[1][stored[1].length - 1] ^= 1; // seq 1's tag
  const { rec } = await openSession(t, stored);
  const s = await rec.screen(2 + 1); // seq 3: K1, (P1 refused), P2
  sameScreen(s.screen, expected([K1, P2]), 'without the tampered update');
  assert.deepEqual(s.skipped, [1]);
  await assert.rejects(rec.screen(1), /chunk 1 of stream 0: authentication failed/);
});

test("an overview tile's screen: the update composited from its keyframe, across a gap, through the overviews' keys", async (t) => {
  const { summary } = fakeConsole(t, await sealStream(SESSION));
  const ring = new Keyring();
  await ring.unlock(passphrase, null);
  const row = { ...summary, frame_stream: 0 };
  const want = sessionScreens();
  for (const i of [9, 4, 3, 7, 0]) {
    const { screen } = await tileScreens(ring, row, decodePng).at(SESSION_FRAMES[i].seq);
    sameScreen(screen, want[i], `tile at seq ${SESSION_FRAMES[i].seq}`);
  }
  // Kept between frames (Live Montage): the next frame composites on, opening only itself.
  const kept = tileScreens(ring, row, decodePng);
  await kept.at(10);
  const before = kept.loads;
  sameScreen((await kept.at(11)).screen, want[8], 'the next frame');
  assert.equal(kept.loads - before, 1);
});

/** The entries of a stored (uncompressed) ZIP: Map name → bytes. */
function unzip(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Map();
  for (let at = 0; dv.getUint32(at, true) === 0x04034b50;) {
    const size = dv.getUint32(at + 18, true);
    const nameLen = dv.getUint16(at + 26, true);
    const name = Buffer.from(bytes.subarray(at + 30, at + 30 + nameLen)).toString('utf8');
    out.set(name, bytes.subarray(at + 30 + nameLen, at + 30 + nameLen + size));
    at += 30 + nameLen + size;
  }
  return out;
}

test('the ZIP export writes each screen update as <stem>.png of the whole screen, images as captured', async (t) => {
  const stored = await sealStream(SESSION);
  const want = sessionScreens();
  const { rec } = await openSession(t, stored);
  const activity = [{ timeUs: T0, line: '{"ts":1780000000000,"event":"focus","title":"Plan.xlsx","class":"excel"}' }];
  const blob = await exportFrames(rec, [], { save: false, activity, from: 1 });
  const files = unzip(new Uint8Array(await blob.arrayBuffer()));
  const names = [...files.keys()];
  assert.deepEqual(names.filter((n) => n.startsWith('frames/')), [
    'frames/00000001-screen-00000002.png', 'frames/00000002-shot-2.png', 'frames/00000003-screen-00000004.png',
    'frames/00000007-screen-00000008.png', // seq 8 is malformed: nothing written for it
    'frames/00000009-screen-00000010.png', 'frames/00000010-screen-00000011.png', 'frames/00000011-screen-00000012.png',
    'frames/00000012-screen-00000013.png',
  ]);
  for (const [i, f] of SESSION_FRAMES.entries()) {
    if (i === 0 || f.image || f.bytes) continue;
    const name = `frames/${String(f.seq).padStart(8, '0')}-screen-${String(f.seq + 1).padStart(8, '0')}.png`;
    const w = want[i];
    const rgba = decodePng(files.get(name), w.w, w.h);
    assert.ok(Buffer.from(rgba.filter((_, j) => j % 4 !== 3)).equals(Buffer.from(w.rgb)), `${name}: pixels`);
  }
  assert.deepEqual(files.get('frames/00000002-shot-2.png'), png(4, 3, picture(4, 3, 2)));
  assert.equal(Buffer.from(files.get('activity.jsonl')).toString(), `${activity[0].line}\n`);
  const manifest = JSON.parse(Buffer.from(files.get('manifest.json')).toString());
  assert.ok(manifest.files.some((f) => f.name === 'frames/00000012-screen-00000013.png' && f.capture_time_us === T0 + 12 * 500_000));
});

test('version-2 updates through the session module, an overview tile and the ZIP export, across a gap', async (t) => {
  const session = [
    { update: K2 }, { update: SCROLL_UP }, { image: true }, { update: SCROLL_DOWN }, { dropped: true }, { dropped: true },
    { gap: [4, 5] }, { update: CHAIN }, { bytes: ssu({ ...SIDEWAYS, magic: [0x53, 0x53, 0x55, 0x03] }), update: SIDEWAYS },
    { update: DIAGONAL }, { update: K2_V2 }, { update: SCROLL_UP }, { update: RESIZED_V2 },
  ];
  const frames = session.map((f, seq) => ({ ...f, seq })).filter((f) => !f.dropped && !f.gap);
  const updates = [];
  const want = frames.map((f) => (f.image ? null : (updates.push(f.bytes ? null : f.update), expected(updates))));
  const stored = await sealStream(session);
  const { rec } = await openSession(t, stored);
  for (const [i, f] of frames.entries()) {
    const s = await rec.screen(i);
    if (f.image) { assert.equal(s.update, false); continue; }
    sameScreen(s.screen, want[i], `frame ${i} (seq ${f.seq}) played`);
    assert.equal(s.malformed !== null, f.seq === 8, `frame ${i} malformed`);
  }
  for (const i of [9, 6, 4, 1]) {
    const { rec: fresh } = await openSession(t, stored);
    sameScreen((await fresh.screen(i)).screen, want[i], `frame ${i} (seq ${frames[i].seq}) sought`);
  }
  // seq 11 opens only the version-2 keyframe at seq 10 and itself.
  const { rec: mid } = await openSession(t, stored);
  await mid.screen(frames.findIndex((f) => f.seq === 11));
  assert.equal(mid.track.loads, 2);
  // An overview tile, walked back through the gap.
  const ring = new Keyring();
  await ring.unlock(passphrase, null);
  const { summary } = fakeConsole(t, stored);
  for (const i of [5, 4, 3]) {
    sameScreen((await tileScreens(ring, { ...summary, frame_stream: 0 }, decodePng).at(frames[i].seq)).screen, want[i], `tile at seq ${frames[i].seq}`);
  }
  // The ZIP export: every screen but the malformed one's, as <stem>.png.
  const files = unzip(new Uint8Array(await (await exportFrames(rec, [], { save: false })).arrayBuffer()));
  for (const [i, f] of frames.entries()) {
    if (f.image) continue;
    const name = `frames/${String(f.seq).padStart(8, '0')}-screen-${String(f.seq + 1).padStart(8, '0')}.png`;
    if (f.bytes) { assert.ok(!files.has(name), `${name} is malformed`); continue; }
    const rgba = decodePng(files.get(name), want[i].w, want[i].h);
    assert.ok(Buffer.from(rgba.filter((_, j) => j % 4 !== 3)).equals(Buffer.from(want[i].rgb)), `${name}: pixels`);
  }
});

test("the page's PNG encoder writes 8-bit RGB PNGs a strict decoder reads back", async () => {
  const s = Screen.black(5, 3);
  s.paint(1, 1, 3, 2, decodePng(png(3, 2, picture(3, 2, 4)), 3, 2));
  const bytes = await s.png();
  checkPng(bytes, 5, 3);
  assert.deepEqual(decodePng(bytes, 5, 3).filter((_, i) => i % 4 !== 3), s.rgb());
  assert.deepEqual(await encodePng(1, 1, Uint8Array.of(1, 2, 3)).then((p) => decodePng(p, 1, 1)), Uint8Array.of(1, 2, 3, 255));
});

// ---- the shared fixture (tests/vectors/screen.json, written by src/protocol/screen.rs) ----

const FIXTURE = process.env.SEALSTREAM_SCREEN_FIXTURE ?? fileURLToPath(new URL('../../tests/vectors/screen.json', import.meta.url));
if (existsSync(FIXTURE)) {
  test("tests/vectors/screen.json: every update composites to the fixture's screen, played and sought", async () => {
    const { updates } = JSON.parse(readFileSync(FIXTURE, 'utf8'));
    assert.ok(updates.length > 0 && updates.some((u) => u.screen === 'malformed'));
    const bytes = updates.map((u) => Uint8Array.from(Buffer.from(u.image_hex, 'hex')));
    const sha = (s) => createHash('sha256').update(s.rgb()).digest('hex');
    const check = (s, u, what) => {
      assert.deepEqual([s.width, s.height], [u.screen.width, u.screen.height], `${u.name} ${what}: size`);
      assert.equal(sha(s), u.screen.rgb_sha256, `${u.name} ${what}: pixels`);
      assert.equal(pngName(u.name), u.screen.png_name);
    };
    const c = new Compositor(decodePng);
    for (const [i, u] of updates.entries()) {
      if (u.screen === 'malformed') {
        const before = c.screen && sha(c.screen);
        await assert.rejects(c.apply(bytes[i]), FormatError, u.name);
        assert.equal(c.screen && sha(c.screen), before, `${u.name}: the screen changed`);
      } else {
        check(await c.apply(bytes[i]), u, 'played');
      }
    }
    // Sought: each on a fresh track, walking back from it.
    for (const [i, u] of updates.entries()) {
      if (u.screen === 'malformed') continue;
      const track = new ScreenTrack({
        decodePng, before: (k) => (k > 0 ? k - 1 : null), load: async (k) => ({ type: 'update', bytes: bytes[k], name: updates[k].name }),
      });
      check((await track.at(i)).screen, u, 'sought');
    }
  });
}
