// The player: frames of a Recording drawn on a canvas at their capture times, a timeline to
// seek by clicking (gaps and search hits marked on it, a time axis under it, the time under
// the pointer shown), play/pause at 1–16×, frame steps. A screen update (`*.ssu`) shows the
// whole screen it makes: the Recording composites it (from the last keyframe when seeking,
// incrementally when playing).

/** How many frames back an empty chunk (a version-2 checkpoint) looks for the image it shows. */
const EMPTY_LOOKBACK = 16;
/** Tick steps of the time axis, in seconds: the smallest that leaves room for every label. */
const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
/** Room for one tick label (HH:MM:SS), in pixels. */
const TICK_ROOM_PX = 110;

/** `us` as HH:MM:SS (UTC); with the date before it when `withDate`. */
export function clockLabel(us, withDate = false) {
  const iso = new Date(us / 1000).toISOString();
  return withDate ? `${iso.slice(5, 10)} ${iso.slice(11, 19)}` : iso.slice(11, 19);
}

/** Axis ticks over [startUs, endUs] for a timeline `widthPx` wide: [{us, label}]. */
export function axisTicks(startUs, endUs, widthPx) {
  const spanS = Math.max(0.001, (endUs - startUs) / 1e6);
  const room = Math.max(2, Math.floor(widthPx / TICK_ROOM_PX));
  const stepS = TICK_STEPS.find((s) => spanS / s <= room) ?? 86400 * Math.ceil(spanS / 86400 / room);
  const stepUs = stepS * 1e6;
  const ticks = [];
  let day = null;
  for (let t = Math.ceil(startUs / stepUs) * stepUs; t <= endUs; t += stepUs) {
    const d = new Date(t / 1000).toISOString().slice(0, 10);
    // The date where the axis starts a new UTC day (and on the first tick of a multi-day span).
    const withDate = day !== null ? d !== day : endUs - startUs >= 86_400e6;
    ticks.push({ us: t, label: stepS >= 86400 ? d : clockLabel(t, withDate) });
    day = d;
  }
  return ticks;
}

export class Player {
  constructor({ canvas, timeline, marks, cursor, clock, info, onTime, onError, onPlaying, axis, progress, hover }) {
    Object.assign(this, { canvas, timeline, marks, cursor, clock, info, onTime, onError, onPlaying, axis, progress, hover });
    this.rec = null;
    this.index = 0;
    this.speed = 1;
    this.playing = false;
    this.timeUs = 0;
    this.shownSeq = null;
    this.drawing = 0;
    timeline.addEventListener('click', (e) => {
      const r = timeline.getBoundingClientRect();
      this.seekTime(this.#start() + ((e.clientX - r.left) / r.width) * this.#span());
    });
    // The time under the pointer, and an axis redrawn for the timeline's width.
    timeline.addEventListener('pointermove', (e) => {
      if (!this.hover || !this.rec?.frames.length) return;
      const r = timeline.getBoundingClientRect();
      const f = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
      this.hover.hidden = false;
      this.hover.style.left = `${100 * f}%`;
      this.hover.textContent = clockLabel(this.#start() + f * this.#span());
    });
    timeline.addEventListener('pointerleave', () => { if (this.hover) this.hover.hidden = true; });
    if (this.axis) new ResizeObserver(() => this.#renderAxis()).observe(timeline);
  }

  load(rec) {
    this.pause();
    this.rec = rec;
    this.index = 0;
    this.timeUs = this.#start();
    this.renderMarks([]);
    return this.show(0);
  }

  #start() { return this.rec?.frames[0]?.captureUs ?? 0; }
  #end() { const f = this.rec?.frames; return f?.length ? f[f.length - 1].captureUs : 0; }
  #span() { return Math.max(1, this.#end() - this.#start()); }
  /** Where `us` is on the timeline, in % of its width: 0 before the first frame, 100 after the last. */
  #pct(us) { return Math.min(100, Math.max(0, (100 * (us - this.#start())) / this.#span())); }
  #x(us) { return `${this.#pct(us)}%`; }

  /** Marks: gaps from the index, and `hitsUs` (keystroke search hits); and the time axis. */
  renderMarks(hitsUs) {
    if (!this.rec) return;
    this.marks.replaceChildren();
    /** A mark at `us`, or a band from `us` to `toUs`. */
    const add = (cls, us, title, toUs) => {
      const m = document.createElement('div');
      m.className = `mark ${cls}`;
      // Clamped to the timeline (keystrokes may fall before the first frame or after the
      // last), and shifted by its own width in proportion, so a mark at 100 % ends there.
      const p = this.#pct(us);
      m.style.left = `${p}%`;
      if (toUs === undefined) m.style.translate = `-${p}% 0`;
      else m.style.width = `${this.#pct(toUs) - p}%`;
      if (us < this.#start() || us > this.#end()) title = `${title ?? ''} (${us < this.#start() ? 'before the first' : 'after the last'} frame)`.trim();
      if (title) m.title = title;
      this.marks.append(m);
    };
    // A gap spans what the agent dropped: after the last frame it kept, up to the gap record.
    for (const g of this.rec.gaps) {
      const kept = this.rec.frames.findLast((f) => f.seq < g.seq);
      add('gap', kept?.captureUs ?? g.captureUs, `gap before chunk ${g.seq}: dropped by the agent`, g.captureUs);
    }
    const unproven = this.rec.frames.find((f) => f.proven === false);
    if (unproven) add('unproven', unproven.captureUs, `chunk ${unproven.seq}: from here on not proven signed by the agent`, this.#end());
    for (const us of hitsUs) add('hit', us, 'search hit');
    this.#renderAxis();
  }

  /** The time axis under the timeline: ticks at round times, labelled HH:MM:SS (UTC). */
  #renderAxis() {
    if (!this.axis) return;
    const width = this.timeline.clientWidth;
    if (!this.rec?.frames.length || !width) { this.axis.replaceChildren(); return; }
    const ticks = axisTicks(this.#start(), this.#end(), width);
    this.axis.replaceChildren(...ticks.flatMap(({ us, label }) => {
      const p = this.#pct(us);
      const tick = document.createElement('div');
      tick.className = 'tick';
      tick.style.left = `${p}%`;
      const text = document.createElement('div');
      // Labels near an end are kept inside the timeline.
      text.className = `tick-label${p < 4 ? ' first' : p > 96 ? ' last' : ''}`;
      text.style.left = `${p}%`;
      text.textContent = label;
      return [tick, text];
    }));
  }

  /** The frame shown at time `us`: the last one captured at or before it. */
  #indexAt(us) {
    const f = this.rec.frames;
    let lo = 0;
    let hi = f.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (f[mid].captureUs <= us) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  seekTime(us) {
    if (!this.rec?.frames.length) return Promise.resolve();
    this.timeUs = Math.min(Math.max(us, this.#start()), this.#end());
    this.playStartWall = performance.now();
    this.playStartUs = this.timeUs;
    return this.show(this.#indexAt(this.timeUs), true);
  }

  step(delta) {
    this.pause();
    const i = Math.min(Math.max(this.index + delta, 0), this.rec.frames.length - 1);
    return this.show(i);
  }

  /** Draw frame `i`; `keepTime` leaves the clock where a seek put it. */
  async show(i, keepTime = false) {
    if (!this.rec?.frames.length) return;
    this.index = i;
    const row = this.rec.frames[i];
    if (!keepTime) this.timeUs = row.captureUs;
    this.#updateClock();
    if (!this.rec.unlocked) {
      // Locked: the clock moves, nothing is decrypted; say which frame was asked for.
      this.canvas.dataset.lockedIndex = String(i);
      return;
    }
    delete this.canvas.dataset.lockedIndex;
    const ticket = ++this.drawing;
    try {
      let f = await this.rec.frame(i);
      // Warm the cache for what plays next.
      if (i + 1 < this.rec.frames.length) this.rec.frame(i + 1).catch(() => {});
      // An empty chunk (an idle stream's checkpoint) captured nothing new: the screen is still
      // the last image before it.
      const before = f.empty ? await this.#imageBefore(i, ticket) : null;
      if (ticket !== this.drawing || !this.rec?.unlocked) return;
      if (before) f = before.frame;
      if (f.bitmap) {
        if (this.canvas.width !== f.bitmap.width || this.canvas.height !== f.bitmap.height) {
          this.canvas.width = f.bitmap.width;
          this.canvas.height = f.bitmap.height;
        }
        this.canvas.getContext('2d').drawImage(f.bitmap, 0, 0);
      } else {
        if (this.canvas.width < 640) {
          this.canvas.width = 960;
          this.canvas.height = 540;
        }
        const ctx = this.canvas.getContext('2d');
        ctx.fillStyle = '#222';
        ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
        ctx.fillStyle = '#ddd';
        ctx.font = '20px sans-serif';
        const what = f.update ? `${f.name}: no screen yet (no screen update before it could be shown)`
          : f.image ? `${f.name || 'frame'}: ${f.image.length} bytes, authentic, not an image this browser can show` : 'no image in this chunk';
        ctx.fillText(what, 20, 40);
      }
      this.shownSeq = row.seq;
      this.canvas.dataset.seq = String(row.seq);
      this.canvas.dataset.captureUs = String(row.captureUs);
      this.canvas.dataset.shown = f.bitmap ? (f.update ? 'screen' : 'image') : 'undecodable';
      const since = before ? ` (nothing new since frame ${before.index + 1})` : '';
      // A screen update that does not parse leaves the screen as it was (docs/format.md).
      const update = f.malformed ? ` (malformed screen update, the screen before it: ${f.malformed.message})`
        : f.skipped?.length ? ` (${f.skipped.length} earlier update${f.skipped.length === 1 ? '' : 's'} could not be opened)` : '';
      this.info.textContent = `frame ${i + 1} of ${this.rec.frames.length} ${f.name ? `(${f.name})` : ''}${since}${update}`;
    } catch (err) {
      if (ticket === this.drawing) this.onError(err);
    }
  }

  /** The nearest frame before `i` that is not an empty chunk: {frame, index}, or null. */
  async #imageBefore(i, ticket) {
    for (let j = i - 1; j >= 0 && j >= i - EMPTY_LOOKBACK && ticket === this.drawing; j -= 1) {
      const frame = await this.rec.frame(j);
      if (!frame.empty) return { frame, index: j };
    }
    return null;
  }

  #updateClock() {
    this.cursor.style.left = this.#x(this.timeUs);
    if (this.progress) this.progress.style.width = this.#x(this.timeUs);
    this.clock.textContent = new Date(this.timeUs / 1000).toISOString().replace('T', ' ').replace('Z', ' UTC');
    this.onTime?.(this.timeUs);
  }

  play() {
    if (this.playing || !this.rec?.frames.length) return;
    if (this.index >= this.rec.frames.length - 1) this.index = 0;
    this.playing = true;
    this.onPlaying?.(true);
    this.playStartWall = performance.now();
    this.playStartUs = this.rec.frames[this.index].captureUs;
    this.timeUs = this.playStartUs;
    const tick = async () => {
      if (!this.playing) return;
      this.timeUs = this.playStartUs + (performance.now() - this.playStartWall) * 1000 * this.speed;
      const i = this.#indexAt(this.timeUs);
      if (i !== this.index) await this.show(i, true); else this.#updateClock();
      if (this.timeUs >= this.#end() && !this.follow) { this.pause(); return; }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  /** Stop playing (also when the recording ends): `onPlaying(false)` says so. */
  pause() {
    const was = this.playing;
    this.playing = false;
    if (was) this.onPlaying?.(false);
  }

  setSpeed(s) {
    this.speed = s;
    this.playStartWall = performance.now();
    this.playStartUs = this.timeUs;
  }

  /** Forget the frame on screen (Lock). */
  clear() {
    this.pause();
    this.drawing += 1;
    this.canvas.getContext('2d').clearRect(0, 0, this.canvas.width, this.canvas.height);
    delete this.canvas.dataset.seq;
    delete this.canvas.dataset.captureUs;
    delete this.canvas.dataset.shown;
    delete this.canvas.dataset.lockedIndex;
    this.info.textContent = '';
  }
}
