// The player: frames of a Recording drawn on a canvas at their capture times, a timeline to
// seek by clicking (gaps and search hits marked on it), play/pause at 1–16×, frame steps.

/** How many frames back an empty chunk (a version-2 checkpoint) looks for the image it shows. */
const EMPTY_LOOKBACK = 16;

export class Player {
  constructor({ canvas, timeline, marks, cursor, clock, info, onTime, onError }) {
    Object.assign(this, { canvas, timeline, marks, cursor, clock, info, onTime, onError });
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
  #x(us) { return `${(100 * (us - this.#start())) / this.#span()}%`; }

  /** Marks: gaps from the index, and `hitsUs` (keystroke search hits). */
  renderMarks(hitsUs) {
    if (!this.rec) return;
    this.marks.replaceChildren();
    const add = (cls, us, title) => {
      const m = document.createElement('div');
      m.className = `mark ${cls}`;
      m.style.left = this.#x(us);
      if (title) m.title = title;
      this.marks.append(m);
    };
    for (const g of this.rec.gaps) add('gap', g.captureUs, `gap before chunk ${g.seq}: dropped by the agent`);
    const unproven = this.rec.frames.find((f) => f.proven === false);
    if (unproven) add('unproven', unproven.captureUs, `chunk ${unproven.seq}: from here on not proven signed by the agent`);
    for (const us of hitsUs) add('hit', us, 'search hit');
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
        const what = f.image ? `${f.name || 'frame'}: ${f.image.length} bytes, authentic, not an image this browser can show` : 'no image in this chunk';
        ctx.fillText(what, 20, 40);
      }
      this.shownSeq = row.seq;
      this.canvas.dataset.seq = String(row.seq);
      this.canvas.dataset.captureUs = String(row.captureUs);
      this.canvas.dataset.shown = f.bitmap ? 'image' : 'undecodable';
      const since = before ? ` (nothing new since frame ${before.index + 1})` : '';
      this.info.textContent = `frame ${i + 1} of ${this.rec.frames.length} ${f.name ? `(${f.name})` : ''}${since}`;
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
    this.clock.textContent = new Date(this.timeUs / 1000).toISOString().replace('T', ' ').replace('Z', ' UTC');
    this.onTime?.(this.timeUs);
  }

  play() {
    if (this.playing || !this.rec?.frames.length) return;
    if (this.index >= this.rec.frames.length - 1) this.index = 0;
    this.playing = true;
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

  pause() { this.playing = false; }

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
