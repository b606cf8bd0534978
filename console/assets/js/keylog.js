// The keystroke log beside the player: events in time order, the one at the player's time
// highlighted, a click seeks there, and a search marks its hits (and returns their times).

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
      const e = ev.event;
      li.textContent = e ? `${t} ${e.app ?? ''} ${e.key ?? ''} ${e.window ?? ''}` : `${t} ${ev.line}`;
      li.title = ev.line;
      return li;
    });
    this.list.replaceChildren(...items);
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
      li.scrollIntoView({ block: 'nearest' });
    }
  }

  /** Mark events whose raw line contains `text` (case-insensitive); their times. */
  search(text) {
    const needle = text.toLowerCase();
    const hits = [];
    this.events.forEach((ev, i) => {
      const hit = needle !== '' && ev.line.toLowerCase().includes(needle);
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
