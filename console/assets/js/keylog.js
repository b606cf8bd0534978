// The keystroke log beside the player: events in time order, the one at the player's time
// highlighted, a click seeks there, and a search marks its hits (and returns their times). The
// activity log (activity.js) is the same list for activity events.

export class KeyLog {
  constructor({ list, onSeek }) {
    this.list = list;
    this.onSeek = onSeek;
    this.events = [];
    this.current = -1;
    list.addEventListener('click', (e) => {
      const li = e.target.closest('li');
      if (li) this.onSeek(this.events[Number(li.dataset.i)].timeUs);
    });
  }

  show(events) {
    this.events = events;
    this.current = -1;
    const items = events.map((ev, i) => {
      const li = document.createElement('li');
      li.dataset.i = String(i);
      const t = new Date(ev.timeUs / 1000).toISOString().slice(11, 23);
      const span = (cls, text) => { const s = document.createElement('span'); s.className = cls; s.textContent = text; return s; };
      li.append(span('key-time', t), ' ', ...this.item(ev, span));
      li.title = ev.line;
      return li;
    });
    this.list.replaceChildren(...items);
  }

  /** The nodes of an event's line after its time; `span(cls, text)` makes one. */
  item(ev, span) {
    const e = ev.event;
    if (!e) return [span('key-typed', ev.line)];
    // What was typed first (`text`; an event without one, its `key`), then where.
    const typed = typedText(e);
    const where = [e.app ?? e.class, e.window ?? e.title].filter((w) => typeof w === 'string' && w !== '').join(' · ');
    return [span('key-typed', typed ?? ev.line), ' ', span('key-where', where)];
  }

  /** Highlight the last event at or before `us`. */
  at(us) {
    let lo = -1;
    let hi = this.events.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.events[mid].timeUs <= us) lo = mid; else hi = mid - 1;
    }
    if (lo === this.current) return;
    this.list.children[this.current]?.classList.remove('current');
    this.current = lo;
    const li = this.list.children[lo];
    if (li) {
      li.classList.add('current');
      // Scroll the log itself, never the page (scrollIntoView would move the whole page
      // away from its header on every frame of a decrypt or of live view).
      const box = this.list.getBoundingClientRect();
      const r = li.getBoundingClientRect();
      if (r.top < box.top) this.list.scrollTop -= box.top - r.top;
      else if (r.bottom > box.bottom) this.list.scrollTop += r.bottom - box.bottom;
    }
  }

  /** Mark the events `text` finds (matchesEvent); their times. */
  search(text) {
    const needle = text.toLowerCase();
    const hits = [];
    this.events.forEach((ev, i) => {
      const hit = matchesEvent(ev, needle);
      this.list.children[i].classList.toggle('hit', hit);
      if (hit) hits.push(ev.timeUs);
    });
    return hits;
  }

  clear() {
    this.events = [];
    this.list.replaceChildren();
  }
}

/**
 * Does `needle` (lower case; empty finds nothing) occur in an event ({line, event}), case-
 * insensitively: in its raw line, or in what its fields say once decoded from JSON (what was
 * typed, the window title, the application or window class), so a title written with `\u`
 * escapes is found as it reads.
 */
export function matchesEvent(ev, needle) {
  if (needle === '') return false;
  if (ev.line.toLowerCase().includes(needle)) return true;
  const e = ev.event;
  if (!e) return false;
  return ['text', 'key', 'window', 'title', 'app', 'class']
    .some((k) => typeof e[k] === 'string' && e[k].toLowerCase().includes(needle));
}

/** What an event says was typed: its `text`, else its `key`; null when it has neither. */
export function typedText(e) {
  for (const k of ['text', 'key']) if (typeof e[k] === 'string') return e[k];
  return null;
}
