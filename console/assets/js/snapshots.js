// Screen Snapshots: a grid of frames by agent and time, decrypted in this page. "Latest" shows
// each session's newest frame captured in the range (the sessions whose captures overlap it,
// newest first); "Hour" shows, for each session of one hour, its newest frame of every five
// minutes of that hour. Tiles say "Encrypted" until the passphrase is given (one unlock for
// every tile of a KEK). A page of sessions at a time, so the frames held stay bounded.

import * as api from './api.js';
import { syncTiles } from './tiles.js';
import { fillAgents, inputUs, pool, selectedAgents } from './keyring.js';

const WIDTH = 4;
const HOUR_US = 3_600_000_000;
const HOUR_SLOTS = 12;
const LATEST_PAGE = 48;
const HOUR_PAGE = 8;

export class Snapshots {
  /**
   * `els`: {view, filter, agents, mode, since, until, hour, grid, form, passphrase, error,
   * state, next, first}; `keyring`: the overviews' Keyring; `onOpen(session, captureUs)`.
   */
  constructor(els, keyring, onOpen) {
    Object.assign(this, { els, keyring, onOpen });
    this.tiles = [];
    this.cursor = null;
    this.query = 0;
    els.filter.addEventListener('submit', (e) => { e.preventDefault(); this.#load(null).catch((err) => this.#fail(err)); });
    els.mode.addEventListener('change', () => this.#modeInputs());
    els.next.addEventListener('click', () => this.#load(this.cursor).catch((err) => this.#fail(err)));
    els.first.addEventListener('click', () => this.#load(null).catch((err) => this.#fail(err)));
    els.form.addEventListener('submit', (e) => { e.preventDefault(); this.#decrypt(); });
    this.#modeInputs();
  }

  async show() {
    this.els.view.hidden = false;
    await fillAgents(this.els.agents);
    await this.#load(null);
  }

  hide() {
    this.els.view.hidden = true;
    this.query += 1;
    for (const t of this.tiles) t.clear();
    this.tiles = [];
    this.els.grid.replaceChildren();
  }

  lock() {
    for (const t of this.tiles) t.clear();
    this.#formState();
  }

  #modeInputs() {
    const hour = this.els.mode.value === 'hour';
    for (const el of [this.els.since, this.els.until]) el.closest('label').hidden = hour;
    this.els.hour.closest('label').hidden = !hour;
  }

  /** What the filter asks for: the overview's parameters. */
  #params() {
    const agents = selectedAgents(this.els.agents);
    if (this.els.mode.value === 'hour') {
      const start = inputUs(this.els.hour);
      if (start === null) throw new Error('pick the hour to show');
      const hour = start - (start % HOUR_US);
      return { agents, sinceUs: hour, untilUs: hour + HOUR_US - 1, slots: HOUR_SLOTS, limit: HOUR_PAGE };
    }
    return { agents, sinceUs: inputUs(this.els.since), untilUs: inputUs(this.els.until), slots: 1, limit: LATEST_PAGE };
  }

  async #load(cursor) {
    const q = ++this.query;
    this.els.error.textContent = '';
    const params = this.#params();
    const page = await api.overview({ ...params, cursor });
    if (q !== this.query) return;
    this.cursor = page.next;
    this.els.next.hidden = !page.next;
    this.els.first.hidden = cursor === null;
    const rows = page.sessions.filter((s) => s.frame_stream !== null);
    // New tiles for a new query: none shows a frame of the last one meanwhile.
    for (const t of this.tiles) t.clear();
    this.tiles = syncTiles(this.els.grid, [], rows, this.onOpen);
    this.els.view.dataset.sessions = String(rows.length);
    const frames = this.tiles.filter((t) => t.frame).length;
    this.els.state.textContent = `${rows.length} session${rows.length === 1 ? '' : 's'}, ${frames} frame${frames === 1 ? '' : 's'}`
      + (params.slots > 1 ? ' (the newest of every five minutes)' : ' (the newest of each session in the range)');
    const deks = this.tiles.map((t) => t.frame?.dek_id).filter(Boolean);
    await this.keyring.openStandard(await this.keyring.keksOf(deks));
    this.#formState();
    await pool(this.tiles, WIDTH, (t) => (q === this.query ? t.render(this.keyring) : null));
    this.#formState();
  }

  #fail(err) {
    this.els.error.textContent = err.message;
    if (err.status === 401) this.hide();
  }

  #formState() {
    this.els.form.hidden = !this.tiles.some((t) => t.el.dataset.state === 'encrypted');
  }

  async #decrypt() {
    const pass = this.els.passphrase.value;
    this.els.passphrase.value = '';
    this.els.error.textContent = '';
    try {
      const deks = this.tiles.map((t) => t.frame?.dek_id).filter(Boolean);
      const { failed } = await this.keyring.unlock(pass, await this.keyring.keksOf(deks));
      if (failed.size) this.els.error.textContent = [...new Set(failed.values())].join(' ');
      await pool(this.tiles, WIDTH, (t) => t.render(this.keyring));
      this.#formState();
    } catch (err) {
      this.els.error.textContent = `Cannot decrypt: ${err.message}`;
    }
  }
}
