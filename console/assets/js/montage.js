// Live Montage: a grid of every session recording now that the reviewer may see, one tile each
// showing its newest frame, "Encrypted" until the passphrase is given (one unlock opens every
// tile whose DEKs the same KEK wraps; a server-held KEK's tiles open without one). The grid asks
// the server every POLL_MS which sessions are live and which frame is their newest, and a tile
// decrypts a frame only when it changed. A click on a tile opens the player on that session.

import * as api from './api.js';
import { syncTiles } from './tiles.js';
import { pool } from './keyring.js';

const POLL_MS = 2000;
/** Tiles decrypted at once. */
const WIDTH = 4;
const MAX_SESSIONS = 200;

export class Montage {
  /** `els`: {view, grid, form, passphrase, error, state}; `keyring`: the overviews' Keyring; `onOpen(session, captureUs)`. */
  constructor(els, keyring, onOpen) {
    Object.assign(this, { els, keyring, onOpen });
    this.tiles = [];
    this.timer = null;
    this.busy = false;
    els.form.addEventListener('submit', (e) => { e.preventDefault(); this.#decrypt(); });
  }

  get shown() { return !this.els.view.hidden; }

  async show() {
    this.els.view.hidden = false;
    this.els.error.textContent = '';
    await this.refresh();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.refresh(), POLL_MS);
  }

  /** Leave the view: stop polling and drop the tiles (and their frames). */
  hide() {
    this.els.view.hidden = true;
    clearInterval(this.timer);
    this.timer = null;
    for (const t of this.tiles) t.clear();
    this.tiles = [];
    this.els.grid.replaceChildren();
  }

  /** Forget what was decrypted (the keyring is locked by the caller). */
  lock() {
    for (const t of this.tiles) t.clear();
    this.#formState();
  }

  async refresh() {
    if (this.busy || !this.shown) return;
    this.busy = true;
    try {
      const { sessions } = await api.overview({ live: true, slots: 1, limit: MAX_SESSIONS });
      if (!this.shown) return;
      this.tiles = syncTiles(this.els.grid, this.tiles, sessions, this.onOpen);
      this.els.state.textContent = sessions.length
        ? `${sessions.length} session${sessions.length === 1 ? '' : 's'} recording now · updated ${new Date().toISOString().slice(11, 19)} UTC`
        : 'No session is recording now.';
      this.els.view.dataset.sessions = String(sessions.length);
      // Server-held KEKs need no passphrase.
      const deks = this.tiles.map((t) => t.frame?.dek_id).filter(Boolean);
      await this.keyring.openStandard(await this.keyring.keksOf(deks));
      this.#formState();
      await pool(this.tiles, WIDTH, (t) => t.render(this.keyring, { keepScreen: true }));
    } catch (err) {
      this.els.state.textContent = `live montage: ${err.message}`;
      if (err.status === 401) this.hide(); // logged out: stop asking
    } finally {
      this.busy = false;
    }
  }

  /** The passphrase form shows while a tile is still Encrypted. */
  #formState() {
    const locked = this.tiles.some((t) => t.el.dataset.state === 'encrypted');
    this.els.form.hidden = !locked;
  }

  async #decrypt() {
    const pass = this.els.passphrase.value;
    this.els.passphrase.value = '';
    this.els.error.textContent = '';
    try {
      const deks = this.tiles.map((t) => t.frame?.dek_id).filter(Boolean);
      const { failed } = await this.keyring.unlock(pass, await this.keyring.keksOf(deks));
      if (failed.size) this.els.error.textContent = [...new Set(failed.values())].join(' ');
      await pool(this.tiles, WIDTH, (t) => t.render(this.keyring, { keepScreen: true }));
      this.#formState();
    } catch (err) {
      this.els.error.textContent = `Cannot decrypt: ${err.message}`;
    }
  }
}
