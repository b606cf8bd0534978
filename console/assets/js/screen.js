// Screen updates (docs/format.md "Screen update" and "Compositing"): a frame named `*.ssu`
// holds the rectangles of the screen that changed, each an 8-bit RGB PNG, painted over the
// screen the stream's earlier updates made; version 2 first copies rectangles already on the
// screen (a scroll) elsewhere on it. Here: the update's parser (every rule of the
// spec), the compositor (one stream's screen, an RGBA buffer like ImageData's), a stream's
// screens by sequence number (ScreenTrack: walk back to the last keyframe, composite forward,
// bounded caches), and an 8-bit RGB PNG encoder for exports. PNGs are decoded by a function
// given to the compositor (`decodePng`: createImageBitmap in the browser), so everything else
// runs as well under Node.

import { ByteReader, FormatError } from './reader.js';
import { concat, u32be, utf8, view } from './hex.js';
import { TamperedError, UnknownDekError } from './chunk.js';

export { FormatError };

/** A frame whose name ends in this is a screen update. */
export const UPDATE_SUFFIX = '.ssu';
/** The update versions this reader knows (the magic's last byte); any other is malformed. */
export const UPDATE_VERSIONS = Object.freeze([1, 2]);
/** The newest update version this reader knows. */
export const UPDATE_VERSION = Math.max(...UPDATE_VERSIONS);
export const FLAG_KEYFRAME = 0x01;
export const MAX_SIDE = 16_384;
export const MAX_RECTS = 4_096;
export const MAX_COPIES = 4_096;
const WHAT = 'screen update';

/** Does a frame of this name carry a screen update? */
export function isUpdateName(name) {
  return typeof name === 'string' && name.endsWith(UPDATE_SUFFIX);
}

/** The exported screen's file name: `<stem>.ssu` → `<stem>.png`. */
export function pngName(updateName) {
  return `${isUpdateName(updateName) ? updateName.slice(0, -UPDATE_SUFFIX.length) : updateName}.png`;
}

/**
 * Parse a screen update (the frame's image bytes, version 1 or 2) and check its layout: magic
 * and version, flags, sizes, every copy's source and destination inside the screen (version 2;
 * none in a keyframe), every rectangle inside the screen, at least one copy or rectangle,
 * nothing after the last one, a keyframe exactly one rectangle covering the screen. The PNGs
 * are checked when they are decoded (Compositor.apply). Returns {version, keyframe, width,
 * height, copies: [{sx, sy, w, h, dx, dy}], rects: [{x, y, w, h, png}]}, `png` a subarray of
 * `bytes`; throws FormatError.
 */
export function parseScreenUpdate(bytes) {
  const r = new ByteReader(WHAT, bytes);
  r.magic('SSU');
  const version = r.known('version', UPDATE_VERSIONS);
  const flags = r.u8('flags');
  if (flags & ~FLAG_KEYFRAME) throw new FormatError(`${WHAT}: reserved flag bits set (flags 0x${flags.toString(16)})`);
  const keyframe = (flags & FLAG_KEYFRAME) !== 0;
  const width = r.bounded('width', r.u16('width'), 1, MAX_SIDE);
  const height = r.bounded('height', r.u16('height'), 1, MAX_SIDE);
  const copies = [];
  if (version >= 2) {
    const n = r.bounded('copies', r.u16('copies'), 0, MAX_COPIES);
    if (keyframe && n > 0) throw new FormatError(`${WHAT}: a keyframe has no copies (it has ${n})`);
    for (let i = 0; i < n; i += 1) {
      const [sx, sy, w, h, dx, dy] = ['sx', 'sy', 'w', 'h', 'dx', 'dy'].map((f) => r.u16(f));
      if (w === 0 || h === 0 || sx + w > width || sy + h > height || dx + w > width || dy + h > height) {
        throw new FormatError(`${WHAT}: copy ${i} (${sx},${sy} ${w}×${h} to ${dx},${dy}) is empty or outside the ${width}×${height} screen`);
      }
      copies.push({ sx, sy, w, h, dx, dy });
    }
  }
  // Version 1: 1..=4096 rectangles; version 2: 0..=4096, with at least one copy or rectangle.
  const count = r.bounded('count', r.u16('count'), copies.length > 0 ? 0 : 1, MAX_RECTS);
  const rects = [];
  for (let i = 0; i < count; i += 1) {
    const x = r.u16('x');
    const y = r.u16('y');
    const w = r.u16('w');
    const h = r.u16('h');
    if (w === 0 || h === 0 || x + w > width || y + h > height) {
      throw new FormatError(`${WHAT}: rectangle ${i} (${x},${y} ${w}×${h}) is empty or outside the ${width}×${height} screen`);
    }
    const png = r.bytesOf(r.u32('png_len'), 'png');
    rects.push({ x, y, w, h, png });
  }
  r.finish();
  if (keyframe && (rects.length !== 1 || rects[0].x !== 0 || rects[0].y !== 0 || rects[0].w !== width || rects[0].h !== height)) {
    throw new FormatError(`${WHAT}: a keyframe must be exactly one rectangle covering the whole screen`);
  }
  return { version, keyframe, width, height, copies, rects };
}

// ---- PNG ----

const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO-HDLC, as PNG and ZIP use it) of `bytes`, continuing from `crc`. */
export function crc32(bytes, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i += 1) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Check that `png` is what a rectangle may hold: the PNG signature, IHDR first saying exactly
 * `w × h` pixels of 8-bit truecolour (colour type 2), compression and filter method 0, not
 * interlaced; every chunk's CRC right, image data present, IEND at the end. A transparent
 * colour (tRNS) is refused: the screen has no transparency. Throws FormatError.
 */
export function checkPng(png, w, h) {
  const bad = (why) => new FormatError(`PNG: ${why}`);
  if (png.length < PNG_SIGNATURE.length || PNG_SIGNATURE.some((b, i) => png[i] !== b)) throw bad('no PNG signature');
  const dv = view(png);
  let at = PNG_SIGNATURE.length;
  let first = true;
  let idat = false;
  for (;;) {
    if (png.length - at < 12) throw bad(`truncated chunk at offset ${at}`);
    const len = dv.getUint32(at);
    if (len > 0x7fffffff || len > png.length - at - 12) throw bad(`chunk at offset ${at} runs past the end`);
    const type = String.fromCharCode(...png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, at + 8 + len);
    if (crc32(png.subarray(at + 4, at + 8 + len)) !== dv.getUint32(at + 8 + len)) throw bad(`${type} chunk: CRC mismatch`);
    if (first) {
      if (type !== 'IHDR' || len !== 13) throw bad('IHDR is not the first chunk');
      const d = view(data);
      const [pw, ph] = [d.getUint32(0), d.getUint32(4)];
      const [depth, colour, compression, filter, interlace] = data.subarray(8, 13);
      if (depth !== 8 || colour !== 2) throw bad(`bit depth ${depth}, colour type ${colour}: not 8-bit truecolour`);
      if (compression !== 0 || filter !== 0) throw bad('unknown compression or filter method');
      if (interlace !== 0) throw bad('interlaced');
      if (pw !== w || ph !== h) throw bad(`${pw}×${ph} pixels, the rectangle is ${w}×${h}`);
      first = false;
    } else if (type === 'IHDR') {
      throw bad('a second IHDR');
    } else if (type === 'IDAT') {
      idat = true;
    } else if (type === 'tRNS') {
      throw bad('a transparent colour (tRNS)');
    } else if (type === 'IEND') {
      if (!idat) throw bad('no image data');
      return;
    }
    at += 12 + len;
  }
}

/**
 * The browser's PNG decoder: createImageBitmap as the file says (no colour conversion), read
 * back through a canvas. Returns RGBA bytes, `w × h × 4`.
 */
export async function browserDecodePng(png, w, h) {
  const bitmap = await createImageBitmap(new Blob([png], { type: 'image/png' }), {
    colorSpaceConversion: 'none', premultiplyAlpha: 'none',
  });
  try {
    if (bitmap.width !== w || bitmap.height !== h) throw new FormatError(`PNG: decoded ${bitmap.width}×${bitmap.height}, not ${w}×${h}`);
    const canvas = new OffscreenCanvas(w, h);
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.globalCompositeOperation = 'copy';
    ctx.drawImage(bitmap, 0, 0);
    return ctx.getImageData(0, 0, w, h).data;
  } finally {
    bitmap.close();
  }
}

/** An image as an 8-bit RGB, non-interlaced PNG (zlib through CompressionStream, filter 0). */
export async function encodePng(width, height, rgb) {
  const rowLen = width * 3;
  const raw = new Uint8Array((rowLen + 1) * height);
  for (let y = 0; y < height; y += 1) raw.set(rgb.subarray(y * rowLen, (y + 1) * rowLen), y * (rowLen + 1) + 1);
  const zlib = new Uint8Array(await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream('deflate'))).arrayBuffer());
  const chunk = (type, data) => {
    const body = concat(utf8(type), data);
    return concat(u32be(data.length), body, u32be(crc32(body)));
  };
  const ihdr = new Uint8Array(13);
  view(ihdr).setUint32(0, width);
  view(ihdr).setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return concat(PNG_SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', zlib), chunk('IEND', new Uint8Array(0)));
}

// ---- the screen ----

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const OPAQUE_BLACK = LITTLE_ENDIAN ? 0xff000000 : 0x000000ff;

/** A screen: `width × height` pixels, RGBA row by row (ImageData's layout), always opaque. */
export class Screen {
  constructor(width, height, data) {
    this.width = width;
    this.height = height;
    this.data = data;
  }

  /** `width × height` pixels of black (0, 0, 0). */
  static black(width, height) {
    const data = new Uint8ClampedArray(width * height * 4);
    new Uint32Array(data.buffer).fill(OPAQUE_BLACK);
    return new Screen(width, height, data);
  }

  clone() {
    return new Screen(this.width, this.height, this.data.slice());
  }

  get byteLength() {
    return this.data.length;
  }

  /** Replace the pixels at `x, y` with `rgba` (`w × h × 4` bytes; its alpha is not used). */
  paint(x, y, w, h, rgba) {
    const stride = this.width * 4;
    const row = w * 4;
    for (let j = 0; j < h; j += 1) this.data.set(rgba.subarray(j * row, (j + 1) * row), (y + j) * stride + x * 4);
    // Opaque whatever the decoder said of alpha: the screen is RGB.
    for (let j = 0; j < h; j += 1) {
      const start = (y + j) * stride + x * 4 + 3;
      for (let i = start, end = start + row; i < end; i += 4) this.data[i] = 255;
    }
  }

  /**
   * Replace the `w × h` pixels at `dx, dy` with those at `sx, sy` as they were before (source
   * and destination may overlap): rows taken in the order that reads each source row before it
   * is written over, each row moved with copyWithin (memmove).
   */
  copy(sx, sy, w, h, dx, dy) {
    const stride = this.width * 4;
    const row = w * 4;
    const move = (j) => {
      const from = (sy + j) * stride + sx * 4;
      this.data.copyWithin((dy + j) * stride + dx * 4, from, from + row);
    };
    if (dy > sy) for (let j = h - 1; j >= 0; j -= 1) move(j);
    else for (let j = 0; j < h; j += 1) move(j);
  }

  /** The pixels as RGB bytes (what the format's fixtures hash, what a PNG export holds). */
  rgb() {
    const out = new Uint8Array(this.width * this.height * 3);
    for (let i = 0, o = 0; i < this.data.length; i += 4, o += 3) {
      out[o] = this.data[i];
      out[o + 1] = this.data[i + 1];
      out[o + 2] = this.data[i + 2];
    }
    return out;
  }

  /** The screen as an 8-bit RGB PNG. */
  png() {
    return encodePng(this.width, this.height, this.rgb());
  }
}

/**
 * One stream's screen, as the format's compositing rule makes it. `decodePng(png, w, h)`
 * returns (a promise of) the rectangle's RGBA bytes.
 */
export class Compositor {
  constructor(decodePng = browserDecodePng, screen = null) {
    this.decodePng = decodePng;
    this.screen = screen;
  }

  /**
   * Apply one update (its bytes, or parseScreenUpdate's result): every PNG is checked and
   * decoded first; then, for a keyframe, no screen yet, or another size, the screen becomes
   * black at the update's size, each copy is made in order (version 2), and each rectangle is
   * painted in order. Returns the screen
   * (this.screen, changed in place). A malformed update throws FormatError and leaves the
   * screen as it was.
   */
  async apply(update) {
    const u = update instanceof Uint8Array ? parseScreenUpdate(update) : update;
    const pixels = await Promise.all(u.rects.map(async (r, i) => {
      try {
        checkPng(r.png, r.w, r.h);
        const rgba = await this.decodePng(r.png, r.w, r.h);
        if (!rgba || rgba.length !== r.w * r.h * 4) throw new FormatError(`PNG: decoded to ${rgba?.length} bytes, not ${r.w}×${r.h}×4`);
        return rgba;
      } catch (err) {
        throw new FormatError(`${WHAT}: rectangle ${i}: ${err.message}`);
      }
    }));
    if (u.keyframe || !this.screen || this.screen.width !== u.width || this.screen.height !== u.height) {
      this.screen = Screen.black(u.width, u.height);
    }
    for (const c of u.copies) this.screen.copy(c.sx, c.sy, c.w, c.h, c.dx, c.dy);
    u.rects.forEach((r, i) => this.screen.paint(r.x, r.y, r.w, r.h, pixels[i]));
    return this.screen;
  }
}

/** A Map kept in least-recently-used order within `budget` bytes (`size(value)` each); unless the budget is 0, the newest entry stays. */
class LruBytes {
  constructor(budget, size) {
    this.budget = budget;
    this.size = size;
    this.map = new Map();
    this.bytes = 0;
  }

  get(key) {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  set(key, value) {
    this.delete(key);
    this.map.set(key, value);
    this.bytes += this.size(value);
    while (this.bytes > this.budget && this.map.size > (this.budget > 0 ? 1 : 0)) this.delete(this.map.keys().next().value);
  }

  delete(key) {
    if (!this.map.has(key)) return;
    this.bytes -= this.size(this.map.get(key));
    this.map.delete(key);
  }

  clear() {
    this.map.clear();
    this.bytes = 0;
  }
}

/**
 * Is `err` (from fetching or opening a frame's chunk) a chunk that cannot be had: not stored
 * (404), not opening (tampered, no DEK), or not a payload? Such a frame is missing; anything
 * else (locked, logged out, the server failing) stops a seek.
 */
export function isMissingChunk(err) {
  return err instanceof TamperedError || err instanceof UnknownDekError || err instanceof FormatError
    || err?.status === 404 || err?.notServed === true;
}

/** Composited screens kept for seeking back (at 1920×1080, 8 of them). */
const SNAPSHOT_BYTES = 64 * 1024 * 1024;
/** Updates kept as decrypted, so a seek back composites without fetching them again. */
const ITEM_BYTES = 32 * 1024 * 1024;

/**
 * The screens of one frames stream, by key (the frames' sequence numbers, in order):
 *
 *   const track = new ScreenTrack({ load, before, decodePng });
 *   const { update, screen, malformed } = await track.at(seq);
 *
 * `load(key)` gives the frame at `key` as {type: 'update', bytes, name} (a screen update's
 * bytes), {type: 'other'} (an image frame, an empty chunk: no effect on the screen) or
 * {type: 'missing', error} (its chunk cannot be had: isMissingChunk); what it throws stops the
 * seek. `before(key)` is the key of the frame before it, or null at the stream's start.
 * `at(key)` walks back from `key` to the nearest keyframe (or the screen it composited last,
 * or one it kept), then composites forward: a seek costs at most the updates since the last
 * keyframe, and playing forward one update. A missing frame before `key` does not reset the
 * screen (docs/format.md); `key`'s own error is thrown. The screens returned are shared with
 * the cache: do not change them.
 */
export class ScreenTrack {
  #work = null; // {key, screen}: the screen after `key`, changed in place as it moves forward
  #snapshots;
  #items;
  #queue = Promise.resolve();

  constructor({ load, before, decodePng = browserDecodePng, snapshotBytes = SNAPSHOT_BYTES, itemBytes = ITEM_BYTES }) {
    Object.assign(this, { load, before, decodePng });
    this.#snapshots = new LruBytes(snapshotBytes, (s) => (s.screen?.byteLength ?? 0) + 64);
    this.#items = new LruBytes(itemBytes, (i) => (i.bytes?.length ?? 0) + 64);
    this.loads = 0; // frames loaded (fetched and opened), for tests and benchmarks
  }

  /**
   * The screen after the frame at `key`: {update, screen, malformed, name, skipped}.
   * `update` false: that frame is not a screen update (nothing else is set). `screen`: null
   * when no update before it made one. `malformed`: the FormatError of `key`'s own update
   * when it does not parse or decode (the screen is then the one before it). `skipped`: the
   * keys walked over that could not be loaded. `known`: a Map key → frame already loaded.
   */
  at(key, known = null) {
    const run = this.#queue.then(() => this.#at(key, known));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Forget every screen and update held. */
  clear() {
    this.#work = null;
    this.#snapshots.clear();
    this.#items.clear();
  }

  async #item(key, known) {
    const k = known?.get(key);
    if (k) {
      this.#items.set(key, k);
      return k;
    }
    let item = this.#items.get(key);
    if (!item) {
      this.loads += 1;
      item = await this.load(key);
      if (item.type !== 'missing') this.#items.set(key, item);
    }
    return item;
  }

  async #at(key, known) {
    const item = await this.#item(key, known);
    if (item.type === 'missing') throw item.error;
    if (item.type !== 'update') return { update: false };
    let kept = this.#snapshots.get(key);
    if (!kept) {
      const state = await this.#compose(key, new Map([...(known ?? []), [key, item]]));
      kept = { screen: state.screen?.clone() ?? null, malformed: state.malformed, skipped: state.skipped };
      this.#snapshots.set(key, kept);
    }
    return { update: true, name: item.name, ...kept };
  }

  /** Make #work the screen after `key`: {screen, malformed, skipped}. */
  async #compose(key, known) {
    const todo = []; // {key, update} or {key, error}, newest first
    const skipped = [];
    let base; // undefined: the stream's start; 'keyframe'; or the Screen (or null) to start from
    for (let k = key; k !== null; k = this.before(k)) {
      if (this.#work && this.#work.key === k) { base = this.#work.screen; break; }
      const kept = this.#snapshots.get(k);
      if (kept) { base = kept.screen?.clone() ?? null; break; }
      const item = await this.#item(k, known);
      if (item.type === 'missing') {
        skipped.push(k); // does not reset the screen
        continue;
      }
      if (item.type !== 'update') continue;
      let update;
      try {
        update = parseScreenUpdate(item.bytes);
      } catch (error) {
        todo.push({ key: k, error });
        continue;
      }
      todo.push({ key: k, update });
      if (update.keyframe) { base = 'keyframe'; break; }
    }
    this.#work = null; // changed below; set again once consistent
    const c = new Compositor(this.decodePng, base === undefined || base === 'keyframe' ? null : base);
    let malformed = null;
    for (let i = todo.length - 1; i >= 0; i -= 1) {
      const t = todo[i];
      let error = t.error;
      if (!error) {
        try {
          await c.apply(t.update);
        } catch (err) {
          if (!(err instanceof FormatError)) throw err;
          error = err;
          if (base === 'keyframe' && i === todo.length - 1) {
            // The keyframe walked back to did not decode: the screen is the one before it.
            const prev = this.before(t.key);
            if (prev !== null) {
              const st = await this.#compose(prev, known);
              skipped.push(...st.skipped);
              c.screen = st.screen;
              this.#work = null;
            }
          }
        }
      }
      if (error && t.key === key) malformed = error;
    }
    this.#work = { key, screen: c.screen };
    return { screen: c.screen, malformed, skipped };
  }
}
