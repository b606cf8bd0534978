// The keystrokes report: the keystrokes and window titles of every session of a time range and
// set of agents the reviewer may see, searched in this page. Only keystroke and activity streams
// are fetched (each session's whole streams, WIDTH sessions at a time), each chunk checked to be
// the one asked for, opened with the overviews' keys and fed to the stream's proof (proof.js),
// so each row carries its session's verdict. Keystroke events are matched by their own time (the
// range) and text, window title and application, focus changes of the activity stream by their
// window title and class (the search, case-insensitive; empty: every event); the table keeps the
// first MAX_ROWS matches by time, and a click on a row opens the player at that moment.
// Sessions whose KEK is not open show one "Encrypted" row each, without their text.

import * as api from './api.js';
import { KIND_ACTIVITY, KIND_KEYSTROKES, TamperedError } from './chunk.js';
import { parsePayload } from './payload.js';
import { StreamProof } from './proof.js';
import { toHex } from './hex.js';
import { LockedError, fillAgents, fmtUtc, inputUs, pool, selectedAgents } from './keyring.js';

/** Sessions searched at once (a browser opens 6 connections to one server). */
const WIDTH = 6;
/** Chunks per request (the server's limit). */
const BATCH = 64;
const MAX_ROWS = 1000;
const PAGE = 1000;

/** What an event says: {text, window, app} (the agent's fields, or the raw line). */
export function eventFields(line) {
  const e = line.event;
  if (!e) return { text: line.raw, window: '', app: '' };
  const str = (...vs) => vs.find((v) => typeof v === 'string') ?? '';
  const text = str(e.text, e.key) || (typeof e.text === 'undefined' && typeof e.key === 'undefined' ? line.raw : '');
  return { text, window: str(e.window, e.title), app: str(e.app, e.class, e.process) };
}

/** The text a focus change of the activity stream shows in a row: {text, window, app}; null for other activity. */
export function focusFields(line) {
  const e = line.event;
  if (!e || e.event !== 'focus') return null;
  const str = (...vs) => vs.find((v) => typeof v === 'string') ?? '';
  return { text: '(window focused)', window: str(e.title), app: str(e.class, e.app) };
}

/** The streams the report reads of an /api/overview row: [{stream, kind, chunks}] (keystrokes, activity). */
export function searchedStreams(s) {
  const out = [];
  if (s.key_stream !== null && s.key_stream !== undefined && s.key_chunks > 0) {
    out.push({ stream: s.key_stream, kind: KIND_KEYSTROKES, chunks: s.key_chunks });
  }
  const act = (s.streams ?? []).find((t) => t.kind === KIND_ACTIVITY);
  if (act && act.next_seq > 0) out.push({ stream: act.stream, kind: KIND_ACTIVITY, chunks: act.next_seq });
  return out;
}

/**
 * Search one session (an /api/overview row): fetch its keystroke and activity streams whole,
 * open each chunk with `keyring`'s keys through the stream's proof, and keep the events in range
 * whose fields hold `needle` (lower case; empty: every keystroke and focus change). Returns
 * 'locked' when its KEK is not open, 'cancelled' when `cancelled()` turns true; else {matches
 * (the first MAX_ROWS by time: {timeUs, text, window, app}), count (every match), badge (the
 * worst stream verdict: {status, text, title})}.
 */
export async function searchSession(s, keyring, { needle = '', inRange = () => true, cancelled = () => false } = {}) {
  if (s.encrypted === true && !keyring.customerOpen) return 'locked';
  const matches = [];
  let count = 0;
  let problem = null;
  let worst = null;
  const order = ['tampered', 'unsigned', 'incomplete', 'verified'];
  for (const st of searchedStreams(s)) {
    const proof = new StreamProof({ agent: s.agent, sessionId: s.session, streamId: st.stream, ca: await keyring.ca() });
    const fed = new Set();
    let kept = 0;
    for (let seq = 0; seq < st.chunks;) {
      let chunks;
      try {
        chunks = await keyring.fetchChunks(s.agent_hex, s.session, st.stream, seq, BATCH);
      } catch (err) {
        if (err.status === 404) break; // not stored from here on: the proof says what is missing
        throw err;
      }
      if (cancelled()) return 'cancelled';
      if (!chunks.length) break;
      for (const chunk of chunks) {
        const dek = toHex(chunk.dekId);
        try {
          await keyring.ensureDek(chunk.dekId);
        } catch (err) {
          if (!(err instanceof LockedError)) throw err;
          return 'locked';
        }
        if (!fed.has(dek)) {
          fed.add(dek);
          await proof.addRecord(await keyring.record(dek));
        }
        let plain;
        try {
          plain = await proof.open(chunk, keyring.streamKeys);
        } catch (err) {
          if (!(err instanceof TamperedError)) throw err;
          problem ??= err.message;
          continue;
        }
        const payload = parsePayload(chunk, plain);
        const type = st.kind === KIND_KEYSTROKES ? 'keystrokes' : 'activity';
        if (chunk.kind !== st.kind || payload.type !== type) continue;
        for (const line of payload.lines) {
          const f = type === 'keystrokes' ? eventFields(line) : focusFields(line);
          if (!f) continue;
          const ts = line.event && typeof line.event.ts === 'number' ? line.event.ts * 1000 : Number(chunk.captureUs);
          if (!inRange(ts)) continue;
          const hay = type === 'keystrokes' ? `${f.text}\n${f.window}\n${f.app}` : `${f.window}\n${f.app}`;
          if (needle && !hay.toLowerCase().includes(needle)) continue;
          count += 1;
          // A stream's events are in time order: its first MAX_ROWS are all the table can keep.
          if (kept < MAX_ROWS) { kept += 1; matches.push({ timeUs: ts, ...f, needle }); }
        }
      }
      seq += chunks.length;
    }
    const verdict = await proof.verdict();
    if (cancelled()) return 'cancelled';
    if (!worst || order.indexOf(verdict.status) < order.indexOf(worst.status)) worst = verdict;
  }
  // The streams' events, merged by time: the first MAX_ROWS are all the table can keep.
  matches.sort((a, b) => a.timeUs - b.timeUs);
  matches.length = Math.min(matches.length, MAX_ROWS);
  const live = worst && worst.status === 'incomplete' && s.state === 'recording' && worst.finalSeq === null;
  const badge = worst
    ? { status: live ? 'recording' : worst.status, text: live ? 'recording now' : worst.status, title: problem ?? worst.message }
    : { status: 'incomplete', text: 'incomplete', title: problem ?? 'nothing stored' };
  return { matches, count, badge };
}

export class Report {
  /**
   * `els`: {view, filter, agents, since, until, search, form, passphrase, error, state, table};
   * `keyring`: the overviews' Keyring; `onOpen(session, timeUs)`.
   */
  constructor(els, keyring, onOpen) {
    Object.assign(this, { els, keyring, onOpen });
    this.query = 0;
    this.rows = []; // {timeUs, tr}, by time
    this.hits = 0;
    els.filter.addEventListener('submit', (e) => { e.preventDefault(); this.run().catch((err) => this.#fail(err)); });
    els.form.addEventListener('submit', (e) => { e.preventDefault(); this.#decrypt(); });
    els.table.addEventListener('click', (e) => {
      const tr = e.target.closest('tr');
      const row = tr && this.rows.find((r) => r.tr === tr);
      if (row) this.onOpen(row.session, row.timeUs);
    });
  }

  async show() {
    this.els.view.hidden = false;
    if (!this.els.since.value) {
      // The last 24 hours, as the datetime-local inputs show UTC.
      this.els.since.value = new Date(Date.now() - 86_400_000).toISOString().slice(0, 16);
    }
    await fillAgents(this.els.agents);
  }

  hide() {
    this.els.view.hidden = true;
    this.#clear();
  }

  /** Forget every decrypted result (the keyring is locked by the caller). */
  lock() {
    this.#clear();
    this.els.form.hidden = false;
  }

  #clear() {
    this.query += 1;
    this.rows = [];
    this.hits = 0;
    this.els.table.replaceChildren();
    this.els.state.textContent = '';
    for (const k of ['state', 'firstResultMs', 'lastResultMs', 'doneMs', 'hits', 'sessions']) delete this.els.view.dataset[k];
  }

  #fail(err) {
    this.els.error.textContent = err.message;
    this.els.view.dataset.state = 'failed';
  }

  async #decrypt() {
    const pass = this.els.passphrase.value;
    this.els.passphrase.value = '';
    this.els.error.textContent = '';
    try {
      const { opened, failed } = await this.keyring.unlock(pass, null);
      if (failed.size) this.els.error.textContent = [...new Set(failed.values())].join(' ');
      if (opened.length) await this.run();
    } catch (err) {
      this.els.error.textContent = `Cannot decrypt: ${err.message}`;
    }
  }

  /** Search every session of the filter; rows appear as each session's stream is read. */
  async run() {
    this.#clear();
    const q = this.query;
    const view = this.els.view;
    this.t0 = performance.now();
    const t0 = this.t0;
    view.dataset.state = 'running';
    this.els.error.textContent = '';
    const needle = this.els.search.value.trim().toLowerCase();
    const sinceUs = inputUs(this.els.since);
    const untilUs = inputUs(this.els.until);
    const agents = selectedAgents(this.els.agents);
    await this.keyring.unlock('', null, { standardOnly: true });
    const sessions = [];
    let cursor = null;
    do {
      const page = await api.overview({ agents, sinceUs, untilUs, slots: 0, limit: PAGE, cursor });
      if (q !== this.query) return;
      sessions.push(...page.sessions.filter((s) => searchedStreams(s).length > 0));
      cursor = page.next;
    } while (cursor);
    let done = 0;
    let locked = 0;
    const progress = () => {
      this.els.state.textContent = `${done} of ${sessions.length} sessions searched · ${this.hits} hit${this.hits === 1 ? '' : 's'}`
        + `${this.hits > MAX_ROWS ? ` (the first ${MAX_ROWS} by time shown)` : ''}${locked ? ` · ${locked} encrypted` : ''}`;
    };
    progress();
    const inRange = (us) => (sinceUs === null || us >= sinceUs) && (untilUs === null || us <= untilUs);
    await pool(sessions, WIDTH, async (s) => {
      if (q !== this.query) return;
      try {
        const found = await this.#searchSession(s, q, needle, inRange);
        if (found === 'locked') locked += 1;
      } catch (err) {
        if (q !== this.query) return;
        this.#add(s, { timeUs: s.first_capture_us, text: `not searched: ${err.message}`, window: '', app: '' }, 'error');
      }
      done += 1;
      if (q === this.query) progress();
    });
    if (q !== this.query) return;
    progress();
    this.els.form.hidden = locked === 0;
    view.dataset.doneMs = String(performance.now() - t0);
    view.dataset.sessions = String(sessions.length);
    view.dataset.hits = String(this.hits);
    view.dataset.state = 'done';
  }

  /** Search one session and add its matches: 'locked' when its KEK is not open. */
  async #searchSession(s, q, needle, inRange) {
    const found = await searchSession(s, this.keyring, { needle, inRange, cancelled: () => q !== this.query });
    if (found === 'cancelled' || q !== this.query) return 'cancelled';
    if (found === 'locked') {
      this.#add(s, { timeUs: s.first_capture_us, text: 'Encrypted', window: '', app: '' }, 'encrypted');
      return 'locked';
    }
    this.hits += found.count - found.matches.length;
    for (const m of found.matches) this.#add(s, m, 'hit', found.badge);
    return found.count;
  }

  /** Insert a row at its time (the table keeps the first MAX_ROWS hits by time). */
  #add(s, m, kind, badge = null) {
    if (kind === 'hit') this.hits += 1;
    const view = this.els.view;
    if (kind === 'hit' && view.dataset.firstResultMs === undefined) view.dataset.firstResultMs = String(performance.now() - (this.t0 ?? 0));
    let lo = 0;
    let hi = this.rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.rows[mid].timeUs <= m.timeUs) lo = mid + 1; else hi = mid;
    }
    if (lo >= MAX_ROWS) return;
    const tr = document.createElement('tr');
    tr.className = kind;
    tr.dataset.agent = s.agent;
    tr.dataset.session = s.session;
    tr.dataset.timeUs = String(m.timeUs);
    tr.title = 'Open the player at this moment';
    const cell = (...parts) => { const td = document.createElement('td'); td.append(...parts); tr.append(td); return td; };
    cell(`${fmtUtc(m.timeUs)}.${String(Math.floor(m.timeUs / 1000) % 1000).padStart(3, '0')}`).className = 'mono';
    cell(s.agent);
    const sessionCell = cell(s.session.slice(0, 8));
    if (badge) {
      const b = document.createElement('span');
      b.className = `badge ${badge.status}`;
      b.textContent = badge.text;
      b.title = badge.title;
      sessionCell.append(' ', b);
    }
    cell([m.window, m.app].filter(Boolean).join(' — '));
    if (kind === 'encrypted') {
      const b = document.createElement('span');
      b.className = 'badge encrypted';
      b.textContent = 'Encrypted';
      cell(b, ' decrypt to search this session');
    } else {
      cell(...highlight(m.text, m.needle)).className = kind === 'hit' ? 'mono' : 'error';
    }
    const row = { timeUs: m.timeUs, tr, session: s };
    this.els.table.insertBefore(tr, this.rows[lo]?.tr ?? null);
    this.rows.splice(lo, 0, row);
    if (this.rows.length > MAX_ROWS) this.rows.pop().tr.remove();
    if (kind === 'hit') view.dataset.lastResultMs = String(performance.now() - (this.t0 ?? 0));
  }
}

/** `text` as nodes, each (case-insensitive) occurrence of `needle` in a <mark>. */
function highlight(text, needle) {
  const lower = text.toLowerCase();
  if (!needle || lower.length !== text.length) return [text];
  const out = [];
  let at = 0;
  for (let i = lower.indexOf(needle); i >= 0; i = lower.indexOf(needle, at)) {
    if (i > at) out.push(text.slice(at, i));
    const m = document.createElement('mark');
    m.textContent = text.slice(i, i + needle.length);
    out.push(m);
    at = i + needle.length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}
