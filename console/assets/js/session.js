// One recorded session in the page: its index (what the server knows without keys), the keys
// that open it (private key → DEKs → stream keys, all non-extractable CryptoKeys), and its
// chunks fetched a few at a time by byte range, checked and opened here. Decoded frames are
// kept in a small LRU cache, so memory stays bounded whatever the session's length. `prove`
// checks what the store holds as `sealstream verify --agent-ca` does (proof.js): the agent's
// signatures, the hash chain, numbering and the final chunk; once it has run, the frame list and
// capture times come from the chunks' own headers, not from the index. Frames that are screen
// updates (`*.ssu`) are shown as the screen they make (screen.js): a ScreenTrack walks back to
// the last keyframe and composites forward, through the same fetching and opening.

import * as api from './api.js';

/** Index flag bit 7 (the server's): the chunk's plaintext is empty. */
const INDEX_EMPTY = 0x80;
import { parseChunk, parseChunkAt, StreamKeys, KIND_ACTIVITY, KIND_FRAME, KIND_KEYSTROKES, FLAG_GAP, HEADER_LEN, TAG_LEN } from './chunk.js';
import { parseDekRecord, unwrapDek } from './dek.js';
import { openPrivateKey, kekId } from './keyfile.js';
import { parsePayload } from './payload.js';
import { toHex, fromHex, equalBytes } from './hex.js';
import { AgentCa, StreamProof } from './proof.js';
import { ScreenTrack, browserDecodePng, isMissingChunk, isUpdateName, pngName } from './screen.js';

const FETCH_AHEAD = 8;
/** Chunks fetched at once while walking back to a screen's keyframe. */
const FETCH_BACK = 16;
const KEEP_FRAMES = 24;
const SEALED_BYTES = 16 * 1024 * 1024;
/** Chunks per request while proving (the server's limit). */
const PROVE_BATCH = 64;
/** Worst first: the session's verdict is its worst stream's. */
const SEVERITY = ['tampered', 'unsigned', 'incomplete', 'verified'];

export class Recording {
  /** `decodePng(png, w, h)`: RGBA bytes of a screen update's rectangle (screen.js; the browser's by default). */
  constructor(summary, { decodePng = browserDecodePng } = {}) {
    this.summary = summary;
    this.decodePng = decodePng;
    this.agentHex = summary.agent_hex;
    this.id = summary.session;
    this.frameStream = summary.streams.find((s) => s.kind === KIND_FRAME)?.stream ?? null;
    this.keyStream = summary.streams.find((s) => s.kind === KIND_KEYSTROKES)?.stream ?? null;
    this.activityStream = summary.streams.find((s) => s.kind === KIND_ACTIVITY)?.stream ?? null;
    this.frames = []; // {seq, captureUs, gap, len}
    this.keyRows = [];
    this.activityRows = [];
    this.track = null; // the frames stream's screens (screen updates), made when first needed
    this.gaps = [];
    this.keys = null;
    this.bitmaps = new Map(); // seq → Promise<{bitmap, name, captureUs}>
    this.sealed = new Map(); // `${stream}/${seq}` → Uint8Array, dropped once opened
    this.sealedBytes = 0;
    this.rows = new Map(); // stream → every index row, in seq order (what `prove` fetches)
    this.proofs = new Map(); // stream → {proof: StreamProof, fed: Set of seqs, verdict}
  }

  get encrypted() { return this.summary.encrypted !== false; }
  get unlocked() { return this.keys !== null; }

  /** Read the index: every chunk's sequence number, capture time and DEK, no bytes. */
  async loadIndex() {
    const rows = [];
    let fromSeq = 0;
    for (;;) {
      const r = await api.index(this.agentHex, this.id, { fromSeq });
      rows.push(...r.chunks);
      if (!r.more) break;
      fromSeq = r.chunks[r.chunks.length - 1].seq + 1;
    }
    this.#addRows(rows);
  }

  #addRows(rows) {
    // A chunk with an empty plaintext (the marker that ends a stream, an idle stream's
    // checkpoint) carries no frame.
    const emptyLen = HEADER_LEN + this.agentHex.length / 2 + TAG_LEN;
    for (const r of rows) {
      if (!this.rows.has(r.stream)) this.rows.set(r.stream, []);
      const all = this.rows.get(r.stream);
      if (!all.length || all[all.length - 1].seq < r.seq) all.push(r);
      // The index marks an empty plaintext (bit 7; its length shows it to anyone); rows indexed
      // before it did are recognised by length (version-1 chunks only).
      const empty = ((r.flags ?? 0) & INDEX_EMPTY) !== 0 || r.len === emptyLen;
      if (r.stream === this.frameStream && empty && !((r.flags ?? 0) & FLAG_GAP)) continue;
      const row = { seq: r.seq, captureUs: r.capture_us ?? 0, gap: ((r.flags ?? 0) & FLAG_GAP) !== 0, dekId: r.dek_id, len: r.len };
      if (r.stream === this.frameStream) {
        if (this.frames.length && this.frames[this.frames.length - 1].seq >= r.seq) continue;
        (row.gap ? this.gaps : this.frames).push(row);
      } else if (r.stream === this.keyStream || r.stream === this.activityStream) {
        const list = r.stream === this.keyStream ? this.keyRows : this.activityRows;
        if (list.length && list[list.length - 1].seq >= r.seq) continue;
        list.push(row);
      }
    }
  }

  /** New chunks indexed since the last look (live view): the number of new frames. */
  async poll() {
    const before = this.frames.length;
    const next = (list) => (list.length ? list[list.length - 1].seq + 1 : 0);
    for (const [stream, list] of [[this.frameStream, this.frames.concat(this.gaps).sort((a, b) => a.seq - b.seq)], [this.keyStream, this.keyRows],
      [this.activityStream, this.activityRows]]) {
      if (stream === null) continue;
      const r = await api.index(this.agentHex, this.id, { stream, fromSeq: next(list) });
      this.#addRows(r.chunks);
    }
    const s = await api.session(this.agentHex, this.id);
    this.summary = s;
    return this.frames.length - before;
  }

  /**
   * Check every stream as stored, without keys (proof.js): fetch each chunk the index lists
   * (once; a later call fetches only what was indexed since), the DEK records it names, and
   * judge. `caPem`: the agent CA to check signatures against, or null (nothing pinned: signed
   * streams are then `unsigned`). Returns the session's verdict (its worst stream's). Frames
   * and their capture times are then taken from the chunks themselves.
   */
  async prove(caPem) {
    if (this.ca === undefined) this.ca = caPem ? await AgentCa.fromPem(caPem) : null;
    const agent = this.summary.agent;
    for (const [stream, rows] of this.rows) {
      let p = this.proofs.get(stream);
      if (!p) {
        p = { proof: new StreamProof({ agent, sessionId: this.id, streamId: stream, ca: this.ca }), fed: new Set(), records: new Set(), verdict: null };
        this.proofs.set(stream, p);
      }
      for (const dek of new Set(rows.map((r) => r.dek_id).filter(Boolean))) {
        if (p.records.has(dek)) continue;
        p.records.add(dek);
        try {
          await p.proof.addRecord(await api.dekRecord(dek));
        } catch (err) {
          if (err.status !== 404) throw err; // a missing record is the verdict's to say
        }
      }
      const todo = rows.filter((r) => !p.fed.has(r.seq));
      for (let i = 0; i < todo.length;) {
        let count = 1;
        while (count < PROVE_BATCH && todo[i + count]?.seq === todo[i].seq + count) count += 1;
        const { bytes } = await api.chunks(this.agentHex, this.id, stream, todo[i].seq, count);
        for (let offset = 0; offset < bytes.length;) {
          const { length } = parseChunkAt(bytes, offset);
          const chunk = parseChunk(bytes.slice(offset, offset + length));
          await p.proof.add(chunk);
          p.fed.add(Number(chunk.seq));
          offset += length;
        }
        i += count;
      }
      p.verdict = await p.proof.verdict();
      if (stream === this.frameStream) this.#framesFromChunks(p.proof.chunkList());
    }
    return this.verdict();
  }

  /** The session's verdict: its worst stream's, or null before `prove`. */
  verdict() {
    const vs = [...this.proofs.values()].map((p) => p.verdict).filter(Boolean);
    if (!vs.length) return null;
    return vs.reduce((a, b) => (SEVERITY.indexOf(b.status) < SEVERITY.indexOf(a.status) ? b : a));
  }

  /** The frame list from the chunks' own headers: numbers, capture times, what is proven. */
  #framesFromChunks(list) {
    const dek = new Map((this.rows.get(this.frameStream) ?? []).map((r) => [r.seq, r.dek_id]));
    const frames = [];
    const gaps = [];
    for (const c of list) {
      if (c.empty && !c.gap) continue;
      (c.gap ? gaps : frames).push({ seq: c.seq, captureUs: c.captureUs, gap: c.gap, dekId: dek.get(c.seq), proven: c.proven });
    }
    // Screens composited from another list of frames than this one (not only more at its end)
    // may miss an update: composite again.
    if (this.frames.some((f, i) => frames[i]?.seq !== f.seq)) this.track?.clear();
    this.frames = frames;
    this.gaps = gaps;
  }

  /**
   * Open the keys: the DEK records the index names, the KEK private key file (the registered
   * one, or `keyFileText` the reviewer picked), opened with `passphrase`. Throws
   * WrongPassphraseError, KeyFormError, UnwrapError or ApiError.
   */
  async unlock(passphrase, keyFileText) {
    const dekIds = new Set([...this.frames, ...this.gaps, ...this.keyRows, ...this.activityRows].map((r) => r.dekId).filter(Boolean));
    const records = [];
    for (const id of dekIds) records.push(parseDekRecord(await api.dekRecord(id)));
    const byKek = new Map();
    for (const rec of records) {
      const id = rec.kekId;
      if (!byKek.has(id)) byKek.set(id, []);
      byKek.get(id).push(rec);
    }
    const known = new Map((await api.keks()).map((k) => [k.kek_id, k]));
    const keys = new StreamKeys();
    for (const [id, recs] of byKek) {
      const kek = known.get(id);
      let pem = keyFileText;
      if (!pem) {
        if (!kek || !kek.private_file) throw new Error(`KEK ${id} has no key file on the server: pick the private key file from your disk`);
        // The public key names the KEK (a non-extractable private key cannot give its SPKI).
        const pub = await api.kekFile(id, 'public');
        if ((await kekId(pub)) !== id) throw new Error(`the server's public key file for ${id} has another KEK id`);
        pem = await api.kekFile(id, 'private');
      }
      const privateKey = await openPrivateKey(pem, kek && !kek.priv_encrypted ? '' : passphrase);
      for (const rec of recs) keys.addDek(rec, await unwrapDek(rec, privateKey));
    }
    this.keys = keys;
  }

  /** Forget every key and everything decrypted. */
  lock() {
    this.keys = null;
    for (const p of this.bitmaps.values()) p.then((f) => f.bitmap?.close?.(), () => {});
    this.bitmaps.clear();
    this.track?.clear();
    this.track = null;
    this.sealed.clear();
    this.sealedBytes = 0;
  }

  async #sealedChunk(stream, seq, count) {
    const key = `${stream}/${seq}`;
    const cached = this.sealed.get(key);
    if (cached) {
      this.sealed.delete(key);
      this.sealedBytes -= cached.length;
      return cached;
    }
    const { bytes } = await api.chunks(this.agentHex, this.id, stream, seq, count);
    if (bytes.length === 0) throw Object.assign(new Error(`chunk ${seq} of stream ${stream} was not served`), { notServed: true });
    const first = parseChunkAt(bytes, 0).length;
    // The chunks after the one asked for wait in a bounded cache for the player to reach them.
    let offset = first;
    for (let s = seq + 1; offset < bytes.length; s += 1) {
      const { length } = parseChunkAt(bytes, offset);
      this.#keepSealed(`${stream}/${s}`, bytes.slice(offset, offset + length));
      offset += length;
    }
    return bytes.subarray(0, first);
  }

  /** Fetched ahead, not yet opened: at most SEALED_BYTES, the oldest dropped first. */
  #keepSealed(key, bytes) {
    const old = this.sealed.get(key);
    if (old) {
      this.sealed.delete(key);
      this.sealedBytes -= old.length;
    }
    this.sealed.set(key, bytes);
    this.sealedBytes += bytes.length;
    while (this.sealedBytes > SEALED_BYTES && this.sealed.size > 1) {
      const [oldest, b] = this.sealed.entries().next().value;
      this.sealed.delete(oldest);
      this.sealedBytes -= b.length;
    }
  }

  /** Check that the server served the chunk asked for, then open it (its tag is checked). */
  async #open(stream, seq, count) {
    if (!this.keys) throw new Error('locked');
    const bytes = await this.#sealedChunk(stream, seq, count);
    const chunk = parseChunk(bytes);
    if (chunk.streamId !== stream || chunk.seq !== BigInt(seq) || toHex(chunk.sessionId) !== this.id
      || !equalBytes(chunk.agentBytes, fromHex(this.agentHex))) {
      throw new Error(`the server answered with another chunk than ${stream}/${seq}: refusing it`);
    }
    const p = this.proofs.get(stream);
    if (!p) return { chunk, payload: parsePayload(chunk, await this.keys.open(chunk)) };
    // Proven: it must be the very chunk the proof judged, and a failed tag is recorded there.
    if (!(await p.proof.add(chunk)).same) throw new Error(`chunk ${seq} was served with other bytes than the ones verified: refusing it`);
    let plain;
    try {
      plain = await p.proof.open(chunk, this.keys);
    } catch (err) {
      p.verdict = await p.proof.verdict();
      throw err;
    }
    return { chunk, payload: parsePayload(chunk, plain) };
  }

  /**
   * Frame number `i` (of `frames`) decoded to an ImageBitmap, with its name and time. A screen
   * update is the whole screen it makes: `update` true, `malformed` its FormatError when it
   * does not parse (the screen before it is shown), `bitmap` null while no update made a screen.
   */
  frame(i) {
    const row = this.frames[i];
    if (!row) return Promise.reject(new Error(`no frame ${i}`));
    let p = this.bitmaps.get(row.seq);
    if (!p) {
      p = this.#decode(i);
      this.bitmaps.set(row.seq, p);
      p.catch(() => this.bitmaps.delete(row.seq));
      while (this.bitmaps.size > KEEP_FRAMES) {
        const [oldest, q] = this.bitmaps.entries().next().value;
        this.bitmaps.delete(oldest);
        q.then((f) => f.bitmap?.close?.(), () => {});
      }
    } else {
      this.bitmaps.delete(row.seq);
      this.bitmaps.set(row.seq, p);
    }
    return p;
  }

  /** Open frame `i`'s chunk (fetching the next few with it): its payload. */
  async #payload(i) {
    const row = this.frames[i];
    const ahead = this.frames.slice(i, i + FETCH_AHEAD);
    let count = 1;
    while (count < ahead.length && ahead[count].seq === row.seq + count) count += 1;
    return (await this.#open(this.frameStream, row.seq, count)).payload;
  }

  async #decode(i) {
    const row = this.frames[i];
    const payload = await this.#payload(i);
    if (payload.type !== 'frame') {
      return { bitmap: null, name: '', captureUs: row.captureUs, image: null, empty: payload.type === 'empty' };
    }
    const { frame } = payload;
    if (isUpdateName(frame.name)) {
      const s = await this.#screens().at(row.seq, new Map([[row.seq, { type: 'update', bytes: frame.image, name: frame.name }]]));
      const bitmap = s.screen
        ? await createImageBitmap(new ImageData(s.screen.data, s.screen.width, s.screen.height), { premultiplyAlpha: 'none', colorSpaceConversion: 'none' })
        : null;
      return { bitmap, name: frame.name, captureUs: row.captureUs, image: null, update: true, malformed: s.malformed, skipped: s.skipped };
    }
    let bitmap = null;
    try {
      bitmap = await createImageBitmap(new Blob([frame.image], { type: frame.mime }));
    } catch {
      // Authentic, but not an image this browser decodes (the player says so on the canvas).
    }
    return { bitmap, name: frame.name, captureUs: row.captureUs, image: frame.image, mime: frame.mime };
  }

  /**
   * The screen frame `i` shows when it is a screen update: {update: true, screen (a Screen,
   * not to be changed; null before any update made one), malformed, skipped, name}; or
   * {update: false} for another frame. Seeking composites from the last keyframe before it.
   */
  screen(i) {
    const row = this.frames[i];
    if (!row) return Promise.reject(new Error(`no frame ${i}`));
    return this.#screens().at(row.seq);
  }

  /**
   * Frame `i` as a file for an export: {name, bytes, mime, captureUs}: an image as captured, a
   * screen update as the PNG of the whole screen it makes (`<stem>.png`); null when the chunk
   * holds no frame or the update is malformed (export writes nothing for it).
   */
  async frameFile(i) {
    const row = this.frames[i];
    const payload = await this.#payload(i);
    if (payload.type !== 'frame') return null;
    const { frame } = payload;
    if (isUpdateName(frame.name)) {
      const s = await this.#screens().at(row.seq, new Map([[row.seq, { type: 'update', bytes: frame.image, name: frame.name }]]));
      if (s.malformed || !s.screen) return null;
      return { name: pngName(frame.name), bytes: await s.screen.png(), mime: 'image/png', captureUs: row.captureUs };
    }
    return { name: frame.name, bytes: frame.image, mime: frame.mime, captureUs: row.captureUs };
  }

  /** The frames stream's screens, keyed by sequence number. */
  #screens() {
    this.track ??= new ScreenTrack({
      decodePng: this.decodePng,
      before: (seq) => {
        const i = this.#frameBefore(seq);
        return i < 0 ? null : this.frames[i].seq;
      },
      load: async (seq) => {
        if (!this.keys) throw new Error('locked');
        let payload;
        try {
          if (!this.sealed.has(`${this.frameStream}/${seq}`)) await this.#fetchBack(seq);
          ({ payload } = await this.#open(this.frameStream, seq, 1));
        } catch (error) {
          if (isMissingChunk(error)) return { type: 'missing', error };
          throw error;
        }
        if (payload.type === 'frame' && isUpdateName(payload.frame.name)) {
          return { type: 'update', bytes: payload.frame.image, name: payload.frame.name };
        }
        return { type: 'other' };
      },
    });
    return this.track;
  }

  /** The index (in `frames`) of the last frame before `seq`, or -1. */
  #frameBefore(seq) {
    let lo = 0;
    let hi = this.frames.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.frames[mid].seq < seq) lo = mid + 1; else hi = mid;
    }
    return lo - 1;
  }

  /** Walking back: fetch the frames right before `seq` with it, up to FETCH_BACK, kept sealed until opened. */
  async #fetchBack(seq) {
    let from = seq;
    for (let i = this.#frameBefore(seq); i >= 0 && seq - from + 1 < FETCH_BACK && this.frames[i].seq === from - 1; i -= 1) {
      if (this.sealed.has(`${this.frameStream}/${from - 1}`)) break;
      from -= 1;
    }
    const { bytes } = await api.chunks(this.agentHex, this.id, this.frameStream, from, seq - from + 1);
    for (let offset = 0, s = from; offset < bytes.length; s += 1) {
      const { length } = parseChunkAt(bytes, offset);
      this.#keepSealed(`${this.frameStream}/${s}`, bytes.slice(offset, offset + length));
      offset += length;
    }
  }

  /** Every keystroke event, in order: {timeUs, line, event, seq}. */
  keystrokes(fromIndex = 0) {
    return this.#events(this.keyStream, this.keyRows, 'keystrokes', fromIndex);
  }

  /** Every activity event (kind 3: focus, idle, session start and end …), in order: {timeUs, line, event, seq}. */
  activity(fromIndex = 0) {
    return this.#events(this.activityStream, this.activityRows, 'activity', fromIndex);
  }

  async #events(stream, rows, type, fromIndex) {
    const out = [];
    for (let i = fromIndex; i < rows.length; i += 1) {
      const row = rows[i];
      let count = 1;
      while (count < 64 && rows[i + count]?.seq === row.seq + count) count += 1;
      const { payload } = await this.#open(stream, row.seq, count);
      if (payload.type === type) {
        for (const l of payload.lines) {
          const ts = l.event && typeof l.event.ts === 'number' ? l.event.ts * 1000 : row.captureUs;
          out.push({ timeUs: ts, line: l.raw, event: l.event, seq: row.seq });
        }
      }
    }
    return out;
  }
}
