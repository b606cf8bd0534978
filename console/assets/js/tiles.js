// A tile of the overviews' grids (Live Montage, Screen Snapshots): one frame of one session,
// "Encrypted" until the keys that open it are in the page, then decrypted here and drawn on a
// canvas of its own. A tile keeps one decoded frame, its canvas's pixels: the ImageBitmap is
// closed as soon as it is drawn, and the ciphertext is not kept. A click opens the player there.
// A screen update (`*.ssu`) is drawn as the screen it makes (screen.js), composited from the
// last keyframe before it; a Live Montage tile keeps that screen, so its next frame composites
// on from it.

import { KIND_FRAME } from './chunk.js';
import { LockedError, fmtUtc } from './keyring.js';
import { parsePayload } from './payload.js';
import { ScreenTrack, isMissingChunk, isUpdateName } from './screen.js';

/** Frames wider than this are drawn scaled down (a tile is a preview). */
const MAX_TILE_WIDTH = 640;
/** Chunks fetched at once walking back to a keyframe. */
const FETCH_BACK = 32;

/**
 * The screens of session `s`'s frames stream (an /api/overview row) for a tile, by sequence
 * number: chunks fetched FETCH_BACK at a time walking back, each checked to be the one asked
 * for and opened with `keyring`'s keys. Only the screen composited last is kept (no cache of
 * others: a tile shows one frame).
 */
export function tileScreens(keyring, s, decodePng) {
  const fetched = new Map(); // seq → parsed chunk, not yet opened
  return new ScreenTrack({
    ...(decodePng ? { decodePng } : {}),
    snapshotBytes: 0,
    itemBytes: 0,
    before: (seq) => (seq > 0 ? seq - 1 : null),
    load: async (seq) => {
      let payload;
      try {
        let chunk = fetched.get(seq);
        if (!chunk) {
          fetched.clear();
          const from = Math.max(0, seq - FETCH_BACK + 1);
          let chunks;
          try {
            chunks = await keyring.fetchChunks(s.agent_hex, s.session, s.frame_stream, from, seq - from + 1);
          } catch (err) {
            if (err.status === 401 || err.status === 403) throw err;
            // Chunks missing in the range (dropped by the agent): this one alone.
            chunks = await keyring.fetchChunks(s.agent_hex, s.session, s.frame_stream, seq, 1);
          }
          for (const c of chunks) fetched.set(Number(c.seq), c);
          chunk = fetched.get(seq);
          if (!chunk) throw Object.assign(new Error(`chunk ${seq} was not served`), { notServed: true });
        }
        fetched.delete(seq);
        payload = parsePayload(chunk, await keyring.open(chunk));
      } catch (error) {
        if (isMissingChunk(error)) return { type: 'missing', error };
        throw error;
      }
      return payload.type === 'frame' && isUpdateName(payload.frame.name)
        ? { type: 'update', bytes: payload.frame.image, name: payload.frame.name } : { type: 'other' };
    },
  });
}

export class Tile {
  /**
   * `session`: an /api/overview row; `frame`: one of its `frames` ({seq, capture_us, dek_id});
   * `onOpen(session, captureUs)`: open the player there.
   */
  constructor(session, frame, onOpen) {
    this.session = session;
    this.frame = frame;
    this.drawn = null; // seq on the canvas
    this.ticket = 0;
    this.screens = null; // the stream's screens (tileScreens), kept between renders when asked to
    const el = document.createElement('figure');
    el.className = 'tile';
    el.dataset.agent = session.agent;
    el.dataset.session = session.session;
    el.tabIndex = 0;
    el.title = 'Open this session in the player';
    this.cover = document.createElement('div');
    this.cover.className = 'tile-cover';
    this.canvas = document.createElement('canvas');
    this.canvas.hidden = true;
    const cap = document.createElement('figcaption');
    this.who = document.createElement('span');
    this.who.textContent = `${session.agent} · ${session.session.slice(0, 8)}`;
    this.when = document.createElement('span');
    this.when.className = 'mono';
    this.badge = document.createElement('span');
    this.badge.className = 'badge';
    cap.append(this.who, ' ', this.when, ' ', this.badge);
    el.append(this.cover, this.canvas, cap);
    const open = () => onOpen(this.session, Number(this.canvas.dataset.captureUs || this.frame?.capture_us || 0) || null);
    el.addEventListener('click', open);
    el.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
    this.el = el;
    this.#encrypted();
  }

  /** Nothing decrypted on this tile (before Decrypt, after Lock). */
  #encrypted(text = 'Encrypted') {
    this.ticket += 1;
    this.drawn = null;
    this.screens?.clear();
    this.screens = null;
    this.canvas.getContext('2d').clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.canvas.hidden = true;
    delete this.canvas.dataset.seq;
    delete this.canvas.dataset.captureUs;
    this.cover.hidden = false;
    this.cover.textContent = text;
    this.el.dataset.state = text === 'Encrypted' ? 'encrypted' : 'none';
    this.when.textContent = this.frame ? fmtUtc(this.frame.capture_us) : '';
  }

  /** Forget the frame shown (Lock). */
  clear() {
    this.#encrypted(this.frame ? 'Encrypted' : 'no frame');
  }

  /** The session's row again (live: a newer frame). */
  update(session, frame) {
    if (session.frame_stream !== this.session.frame_stream) this.screens = null;
    this.session = session;
    this.frame = frame;
  }

  /**
   * Show `this.frame` if the keys are in the page (else Encrypted): fetch its chunk, check it
   * is the one asked for, open it, decode it (a screen update: composite it), draw it and close
   * the bitmap. `keepScreen`: keep the composited screen for the next frame (Live Montage).
   */
  async render(keyring, { keepScreen = false } = {}) {
    const f = this.frame;
    if (!f) { this.#encrypted('no frame'); return; }
    if (this.drawn === f.seq) return;
    const ticket = ++this.ticket;
    const generation = keyring.generation;
    const s = this.session;
    try {
      if (!(await keyring.canOpen(f.dek_id))) {
        if (ticket === this.ticket && this.drawn === null) this.#encrypted();
        return;
      }
      const trust = keyring.trust(f.dek_id).catch((err) => ({ signed: false, why: `signature not checked: ${err.message}` }));
      const { chunk, payload } = await keyring.openOne(s.agent_hex, s.session, s.frame_stream, f.seq);
      if (chunk.kind !== KIND_FRAME || payload.type !== 'frame') throw new Error(`chunk ${f.seq} holds no frame`);
      let bitmap = null;
      let what = 'not an image this browser shows';
      if (isUpdateName(payload.frame.name)) {
        const screens = this.screens ?? tileScreens(keyring, s);
        const shot = await screens.at(f.seq, new Map([[f.seq, { type: 'update', bytes: payload.frame.image, name: payload.frame.name }]]));
        this.screens = keepScreen && ticket === this.ticket ? screens : null;
        if (shot.screen) {
          bitmap = await createImageBitmap(new ImageData(shot.screen.data, shot.screen.width, shot.screen.height),
            { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
        } else {
          what = 'no screen yet';
        }
      } else {
        try {
          bitmap = await createImageBitmap(new Blob([payload.frame.image], { type: payload.frame.mime }));
        } catch {
          // authentic, but not an image this browser decodes
        }
      }
      if (ticket !== this.ticket || generation !== keyring.generation) { bitmap?.close(); return; }
      if (bitmap) {
        const scale = Math.min(1, MAX_TILE_WIDTH / bitmap.width);
        const w = Math.max(1, Math.round(bitmap.width * scale));
        const h = Math.max(1, Math.round(bitmap.height * scale));
        if (this.canvas.width !== w || this.canvas.height !== h) {
          this.canvas.width = w;
          this.canvas.height = h;
        }
        this.canvas.getContext('2d').drawImage(bitmap, 0, 0, w, h);
        bitmap.close();
        this.canvas.hidden = false;
        this.cover.hidden = true;
        this.el.dataset.state = 'shown';
      } else {
        this.canvas.hidden = true;
        this.cover.hidden = false;
        this.cover.textContent = `${payload.frame.name || 'frame'}: authentic, ${what}`;
        this.el.dataset.state = 'undecodable';
      }
      // The time is the chunk's own (bound by its tag), not the index's.
      this.drawn = f.seq;
      this.canvas.dataset.seq = String(f.seq);
      this.canvas.dataset.captureUs = String(chunk.captureUs);
      this.when.textContent = fmtUtc(chunk.captureUs);
      const t = await trust;
      if (ticket !== this.ticket) return;
      this.badge.className = `badge ${t.signed ? 'verified' : 'unsigned'}`;
      this.badge.textContent = t.signed ? 'signed' : 'unsigned';
      this.badge.title = `${t.why}. Open the session for the proof of the whole recording.`;
    } catch (err) {
      if (ticket !== this.ticket) return;
      if (err instanceof LockedError) { this.#encrypted(); return; }
      this.#encrypted(`not shown: ${err.message}`);
      this.el.dataset.state = 'error';
    }
  }
}

/**
 * Keep the tiles of `grid` in step with `rows` (/api/overview rows), one tile per frame of each
 * row (a row without frames: one "no frame" tile): existing tiles are updated in place, gone
 * ones removed (their canvases dropped). Returns the tiles in order.
 */
export function syncTiles(grid, tiles, rows, onOpen) {
  const byKey = new Map(tiles.map((t) => [t.key, t]));
  const next = [];
  for (const s of rows) {
    const frames = s.frames.length ? s.frames : [null];
    frames.forEach((f, i) => {
      const key = `${s.agent_hex}/${s.session}/${i}`;
      let t = byKey.get(key);
      if (t) {
        byKey.delete(key);
        t.update(s, f);
      } else {
        t = new Tile(s, f, onOpen);
        t.key = key;
      }
      next.push(t);
    });
  }
  for (const gone of byKey.values()) gone.clear();
  grid.replaceChildren(...next.map((t) => t.el));
  return next;
}
