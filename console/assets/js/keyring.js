// The keys the overviews share (Live Montage, Screen Snapshots, the keystrokes report): each KEK's
// private key opened once with the passphrase and kept as a non-extractable CryptoKey, so one
// unlock opens every session whose DEKs that KEK wraps; DEK records fetched once and unwrapped on
// demand (a live session's new DEK needs no new passphrase); stream keys derived once. Chunks are
// fetched one request at a time, checked to be the chunk asked for, and opened here. Lock forgets
// all of it. The passphrase is a JS value only while a key file is opened; it is never sent.

import * as api from './api.js';
import { parseChunk, parseChunkAt, StreamKeys } from './chunk.js';
import { parseDekRecord, unwrapDek } from './dek.js';
import { openPrivateKey, kekId, WrongPassphraseError, KeyFormError } from './keyfile.js';
import { parsePayload } from './payload.js';
import { toHex, fromHex, equalBytes } from './hex.js';
import { AgentCa, ProofError, verifyDekRecord } from './proof.js';

/** A chunk's KEK is not open here: the view shows it as Encrypted. */
export class LockedError extends Error {
  constructor(kek) {
    super(`encrypted: KEK ${kek} is not open in this page`);
    this.name = 'LockedError';
    this.kek = kek;
  }
}

export class Keyring {
  #privateKeys = new Map(); // KEK id → non-extractable RSA-OAEP CryptoKey (unwrap only)
  #records = new Map(); // DEK id hex → Promise<parsed DEK record>
  #trust = new Map(); // DEK id hex → Promise<{signed, why}>
  #keys = new StreamKeys();
  #ca; // Promise<AgentCa | null>, asked once
  #generation = 0;
  #triedStandard = new Set(); // KEK ids asked for as server-held since the last lock
  #customerOpen = 0; // customer (passphrase) KEKs open

  /** Bumped by every lock: work started before it must not show what it decrypted. */
  get generation() { return this.#generation; }
  get unlocked() { return this.#privateKeys.size > 0; }
  /** Has a passphrase opened a customer KEK here (else encrypted sessions are not fetched)? */
  get customerOpen() { return this.#customerOpen > 0; }
  isOpen(kek) { return this.#privateKeys.has(kek); }

  /** The DEK record `dekHex`, parsed (fetched once; the fetch is audited). */
  record(dekHex) {
    let r = this.#records.get(dekHex);
    if (!r) {
      r = api.dekRecord(dekHex).then(parseDekRecord);
      this.#records.set(dekHex, r);
      r.catch(() => this.#records.delete(dekHex));
    }
    return r;
  }

  /** The KEK ids of these DEKs' records (a record that cannot be fetched names none). */
  async keksOf(dekHexes) {
    const keks = new Set();
    for (const d of new Set(dekHexes)) {
      try {
        keks.add((await this.record(d)).kekId);
      } catch (err) {
        if (err.status !== 404) throw err; // a missing record: its tile says so when opened
      }
    }
    return keks;
  }

  /**
   * Open the KEKs `kekIds` (every KEK the console offers a key file of, when null) that are
   * not open yet: customer KEKs with `passphrase`, server-held ones without one; with
   * `standardOnly`, only the server-held ones. Returns {opened: [ids], failed: Map id → words}.
   */
  async unlock(passphrase, kekIds = null, { standardOnly = false } = {}) {
    const offered = new Map((await api.keks()).map((k) => [k.kek_id, k]));
    const want = kekIds ? [...kekIds] : [...offered.keys()].filter((id) => offered.get(id).private_file);
    const opened = [];
    const failed = new Map();
    for (const id of want) {
      if (this.#privateKeys.has(id)) continue;
      const kek = offered.get(id);
      if (standardOnly && (!kek || kek.priv_encrypted)) continue;
      if (!kek || !kek.private_file) {
        failed.set(id, `KEK ${id} has no key file on this console: open the session in the player and pick the key file from your disk`);
        continue;
      }
      try {
        // The public key names the KEK (a non-extractable private key cannot give its SPKI).
        const pub = await api.kekFile(id, 'public');
        if ((await kekId(pub)) !== id) throw new Error(`the server's public key file for ${id} has another KEK id`);
        const pem = await api.kekFile(id, 'private');
        this.#privateKeys.set(id, await openPrivateKey(pem, kek.priv_encrypted ? passphrase : ''));
        if (kek.priv_encrypted) this.#customerOpen += 1;
        opened.push(id);
      } catch (err) {
        if (err instanceof WrongPassphraseError) failed.set(id, 'Wrong passphrase for this key file.');
        else if (err instanceof KeyFormError) failed.set(id, err.message);
        else failed.set(id, `KEK ${id}: ${err.message}`);
      }
    }
    return { opened, failed };
  }

  /**
   * Open the server-held KEKs among `kekIds` (no passphrase: standard mode shows as usual),
   * asking the server once per KEK until the next lock.
   */
  async openStandard(kekIds) {
    const todo = [...kekIds].filter((k) => !this.#privateKeys.has(k) && !this.#triedStandard.has(k));
    if (!todo.length) return;
    for (const k of todo) this.#triedStandard.add(k);
    await this.unlock('', todo, { standardOnly: true });
  }

  /** Make sure the DEK `dekId` (bytes) is unwrapped: LockedError when its KEK is not open. */
  async ensureDek(dekId) {
    if (this.#keys.hasDek(dekId)) return;
    const generation = this.#generation;
    const record = await this.record(toHex(dekId));
    const key = this.#privateKeys.get(record.kekId);
    if (!key) throw new LockedError(record.kekId);
    const dek = await unwrapDek(record, key);
    if (generation === this.#generation) this.#keys.addDek(record, dek);
  }

  /** Can chunks of DEK `dekHex` be opened now (its KEK open)? */
  async canOpen(dekHex) {
    if (!dekHex) return false;
    return this.#privateKeys.has((await this.record(dekHex)).kekId);
  }

  /**
   * Sealed chunks `fromSeq ..` (at most `count`) of a stream, each checked to be the chunk
   * asked for (agent, session, stream, sequence number): [parsed chunk].
   */
  async fetchChunks(agentHex, sessionHex, stream, fromSeq, count) {
    const { bytes } = await api.chunks(agentHex, sessionHex, stream, fromSeq, count);
    const out = [];
    for (let offset = 0, seq = fromSeq; offset < bytes.length; seq += 1) {
      const { length } = parseChunkAt(bytes, offset);
      const chunk = parseChunk(bytes.slice(offset, offset + length));
      if (chunk.streamId !== stream || chunk.seq !== BigInt(seq) || toHex(chunk.sessionId) !== sessionHex
        || !equalBytes(chunk.agentBytes, fromHex(agentHex))) {
        throw new Error(`the server answered with another chunk than ${stream}/${seq}: refusing it`);
      }
      out.push(chunk);
      offset += length;
    }
    return out;
  }

  /** The plaintext of a parsed chunk (its GCM tag checked): LockedError when its KEK is not open. */
  async open(chunk) {
    const generation = this.#generation;
    await this.ensureDek(chunk.dekId);
    const plain = await this.#keys.open(chunk);
    if (generation !== this.#generation) throw new LockedError('(locked meanwhile)');
    return plain;
  }

  /** The stream keys, for a StreamProof's `open` (call ensureDek first). */
  get streamKeys() { return this.#keys; }

  /** One chunk, fetched, checked and opened: {chunk, payload} (payload.js). */
  async openOne(agentHex, sessionHex, stream, seq) {
    const [chunk] = await this.fetchChunks(agentHex, sessionHex, stream, seq, 1);
    if (!chunk) throw new Error(`chunk ${seq} of stream ${stream} was not served`);
    return { chunk, payload: parsePayload(chunk, await this.open(chunk)) };
  }

  /** The agent CA the console pins (null: none configured). */
  ca() {
    if (!this.#ca) {
      this.#ca = api.agentCa().then((c) => (c.pem ? AgentCa.fromPem(c.pem) : null));
      this.#ca.catch(() => { this.#ca = undefined; });
    }
    return this.#ca;
  }

  /**
   * Is DEK `dekHex`'s record signed by a CA-issued agent (the agent the record names)? A cheap
   * first look for a tile: {signed, why}. The player proves the whole recording.
   */
  trust(dekHex) {
    let t = this.#trust.get(dekHex);
    if (!t) {
      t = (async () => {
        const record = await this.record(dekHex);
        if (record.version !== 2) return { signed: false, why: 'not signed by a CA-issued agent: the key record carries no agent signature' };
        const ca = await this.ca();
        if (!ca) return { signed: false, why: 'no agent CA configured on this console: signatures are not checked' };
        try {
          await verifyDekRecord(record);
          await ca.check(record.cert, record.agent, record.createdUs);
          return { signed: true, why: `key record signed by agent "${record.agent}" (CA ${ca.fingerprint})` };
        } catch (err) {
          if (!(err instanceof ProofError)) throw err;
          return { signed: false, why: `not signed by a CA-issued agent: ${err.message}` };
        }
      })();
      this.#trust.set(dekHex, t);
      t.catch(() => this.#trust.delete(dekHex));
    }
    return t;
  }

  /** Forget every key (Lock, logout, idle). Records and trust are public facts and stay. */
  lock() {
    this.#generation += 1;
    this.#privateKeys.clear();
    this.#triedStandard.clear();
    this.#customerOpen = 0;
    this.#keys = new StreamKeys();
  }
}

/**
 * Run `fn` over `items`, at most `width` at a time; `fn`'s errors are its own to handle.
 * Resolves when every item is done.
 */
export async function pool(items, width, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/** UTC text of a capture time (µs): `2026-11-27 10:00:00`. */
export function fmtUtc(us) {
  return us ? new Date(Number(us) / 1000).toISOString().replace('T', ' ').slice(0, 19) : '';
}

/** A datetime-local input's value as µs since the epoch (read as UTC), or null. */
export function inputUs(input) {
  return input.value ? Date.parse(`${input.value}Z`) * 1000 : null;
}

/** The agents a multiple <select> has selected, as hex of their ids (none: all). */
export function selectedAgents(select) {
  return [...select.selectedOptions].map((o) => o.value).filter(Boolean);
}

/** Fill a multiple <select> with the agents the caller may see. */
export async function fillAgents(select) {
  const keep = new Set(selectedAgents(select));
  const list = await api.agents();
  select.replaceChildren(...list.map((a) => {
    const o = new Option(a.agent, a.agent_hex);
    o.selected = keep.has(a.agent_hex);
    return o;
  }));
}
