// The console page: login, the list of agents and sessions, a session's player and keystroke
// log, decryption on demand, live view, exports, Lock / logout / idle lock, the audit log.
// Keys and plaintext live only in this page's memory (non-extractable CryptoKeys, decoded
// frames); Lock, logout and idle forget them.

import * as api from './api.js';
import { Recording } from './session.js';
import { Player } from './player.js';
import { KeyLog } from './keylog.js';
import { exportVideo, exportFrames } from './export.js';
import { WrongPassphraseError, KeyFormError } from './keyfile.js';

const $ = (id) => document.getElementById(id);
const LIVE_POLL_MS = 1000;

let me = null;
let rec = null;
let keystrokes = [];
let nextCursor = null;
let livePoll = null;
let idleTimer = null;
let range = null; // {from, to}: frame indexes of the export range, or null for the session
let agentCa; // {pem, fingerprint} of the agent CA the console pins, once asked

const player = new Player({
  canvas: $('frame'),
  timeline: $('timeline'),
  marks: $('timeline-marks'),
  cursor: $('timeline-cursor'),
  clock: $('clock'),
  info: $('frame-info'),
  onTime: (us) => keylog.at(us),
  onError: (err) => { $('player-error').textContent = err.message; showVerdict(); },
});
const keylog = new KeyLog({ list: $('keylog'), onSeek: (us) => player.seekTime(us) });

function status(text) { $('status').textContent = text; }

function fmtTime(us) {
  return us ? new Date(us / 1000).toISOString().replace('T', ' ').slice(0, 19) : '';
}

function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function showView(loggedIn) {
  $('login-view').hidden = loggedIn;
  $('main-view').hidden = !loggedIn;
  for (const id of ['logout', 'lock']) $(id).hidden = !loggedIn;
  $('audit-open').hidden = !(loggedIn && me?.role === 'admin');
  $('whoami').textContent = loggedIn ? `${me.user} (${me.role})` : '';
}

/** Forget every key and everything decrypted; the session stays selected, locked. */
function lock(reason) {
  if (rec) rec.lock();
  player.clear();
  keylog.clear();
  keystrokes = [];
  $('keys').hidden = true;
  $('key-state').textContent = reason ? `locked: ${reason}` : 'locked';
  if (rec) showDecrypt();
}

function resetIdle() {
  clearTimeout(idleTimer);
  if (!me) return;
  idleTimer = setTimeout(async () => {
    lock(`idle for ${me.idle_minutes} min`);
    try { await api.logout(); } catch { /* expired already */ }
    me = null;
    showView(false);
    status(`Logged out after ${me?.idle_minutes ?? 'some'} minutes idle; keys forgotten.`);
  }, me.idle_minutes * 60_000);
}
for (const ev of ['pointerdown', 'keydown']) document.addEventListener(ev, resetIdle, { passive: true });

async function afterLogin(m) {
  me = m;
  showView(true);
  resetIdle();
  await loadAgents();
  await loadSessions(true);
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').textContent = '';
  try {
    const m = await api.login($('login-user').value, $('login-password').value);
    $('login-password').value = '';
    await afterLogin(m);
  } catch (err) {
    $('login-error').textContent = err.message;
  }
});

$('logout').addEventListener('click', async () => {
  lock();
  stopLive();
  rec = null;
  try { await api.logout(); } catch { /* gone already */ }
  me = null;
  $('session-view').hidden = true;
  showView(false);
  status('Logged out; keys forgotten.');
});

$('lock').addEventListener('click', () => lock());

async function loadAgents() {
  const list = await api.agents();
  const sel = $('filter-agent');
  sel.replaceChildren(new Option('all agents', ''), ...list.map((a) => new Option(`${a.agent} (${a.sessions})`, a.agent)));
}

function filter() {
  const t = (id) => ($(id).value ? Date.parse($(id).value + 'Z') * 1000 : null);
  return { agent: $('filter-agent').value || null, sinceUs: t('filter-since'), untilUs: t('filter-until') };
}

async function loadSessions(fresh) {
  const body = $('sessions').tBodies[0];
  if (fresh) { body.replaceChildren(); nextCursor = null; }
  const page = await api.sessions({ ...filter(), cursor: fresh ? null : nextCursor });
  for (const s of page.sessions) {
    const tr = document.createElement('tr');
    tr.dataset.agent = s.agent_hex;
    tr.dataset.session = s.session;
    const cells = [s.agent, s.session.slice(0, 8), `${fmtTime(s.first_capture_us)} – ${fmtTime(s.last_capture_us).slice(11)}`,
      `${s.chunks} (${fmtBytes(s.bytes)})`];
    for (const c of cells) { const td = document.createElement('td'); td.textContent = c; tr.append(td); }
    const st = document.createElement('td');
    const badge = (cls, text) => { const b = document.createElement('span'); b.className = `badge ${cls}`; b.textContent = text; st.append(b, ' '); };
    badge(s.state, s.state === 'recording' ? 'recording now' : s.state);
    if (s.encrypted) badge('encrypted', 'Encrypted');
    if (s.gaps) badge('incomplete', `${s.gaps} gap${s.gaps > 1 ? 's' : ''}`);
    tr.append(st);
    tr.addEventListener('click', () => openSession(s, tr));
    body.append(tr);
  }
  nextCursor = page.next;
  $('sessions-more').hidden = !nextCursor;
}

$('filter').addEventListener('submit', (e) => { e.preventDefault(); loadSessions(true).catch((err) => status(err.message)); });
$('sessions-more').addEventListener('click', () => loadSessions(false).catch((err) => status(err.message)));

function showDecrypt() {
  $('decrypt-form').hidden = false;
  $('player').hidden = false;
  $('decrypt-error').textContent = '';
}

function describe() {
  const s = rec.summary;
  $('session-title').textContent = `${s.agent} · session ${s.session}`;
  $('session-facts').textContent = `${fmtTime(s.first_capture_us)} to ${fmtTime(s.last_capture_us)} UTC · ${rec.frames.length} frames, `
    + `${rec.keyRows.length} keystroke batches, ${fmtBytes(s.bytes)} · the index says ${s.state === 'recording' ? 'recording now' : s.state}`
    + `${s.gaps ? ` · ${s.gaps} gap(s) dropped by the agent` : ''}`;
  $('live-badge').hidden = s.state !== 'recording';
}

async function openSession(summary, tr) {
  for (const r of $('sessions').tBodies[0].rows) r.classList.toggle('selected', r === tr);
  clearVerdict();
  lock();
  stopLive();
  $('audit-view').hidden = true;
  $('session-view').hidden = false;
  $('player-error').textContent = '';
  $('export-state').textContent = '';
  $('key-search').value = '';
  $('key-hits').textContent = '';
  setRange(null);
  rec = new Recording(await api.session(summary.agent_hex, summary.session));
  await rec.loadIndex();
  describe();
  await verifySession(rec);
  await player.load(rec);
  $('key-state').textContent = 'locked';
  showDecrypt();
  if (!rec.encrypted) {
    // A server-held KEK needs no passphrase: open it right away.
    await decrypt('').catch((err) => { $('decrypt-error').textContent = err.message; });
  }
  if (rec.summary.state === 'recording') startLive();
}

/** Check the recording as stored (signatures, chain, numbering, final chunk) and say so. */
/** No verdict yet (a session is being opened or verified). */
function clearVerdict() {
  $('proof-badge').className = 'badge';
  $('proof-badge').textContent = 'verifying';
  delete $('proof-badge').dataset.status;
  delete $('proof-badge').dataset.verdict;
  $('proof-message').textContent = '';
}

async function verifySession(r) {
  if (agentCa === undefined) agentCa = await api.agentCa();
  if (r !== rec) return;
  $('agent-ca').textContent = agentCa.fingerprint
    ? `agent CA ${agentCa.fingerprint}` : 'no agent CA configured on this console: signatures are not checked';
  try {
    await r.prove(agentCa.pem);
  } catch (err) {
    $('proof-badge').className = 'badge tampered';
    $('proof-badge').textContent = 'not verified';
    $('proof-message').textContent = err.message;
    return;
  }
  if (r === rec) showVerdict();
}

/** The session's badge and message from its verdict (the index's view only says "recording"). */
function showVerdict() {
  const v = rec?.verdict();
  if (!v) return;
  const live = v.status === 'incomplete' && rec.summary.state === 'recording' && v.finalSeq === null;
  const badge = live ? 'recording' : v.status;
  $('proof-badge').className = `badge ${badge}`;
  $('proof-badge').textContent = live ? 'recording now' : v.status;
  $('proof-badge').dataset.status = v.status;
  $('proof-badge').dataset.verdict = v.verdict;
  $('proof-message').textContent = live && v.provenThrough !== null ? `verified through chunk ${v.provenThrough}` : v.message;
  player.renderMarks([]);
}

async function decrypt(passphrase) {
  const file = $('decrypt-file').files[0];
  const pem = file ? await file.text() : null;
  await rec.unlock(passphrase, pem);
  $('decrypt-form').hidden = true;
  $('key-state').textContent = 'decrypted in this browser';
  try {
    await player.show(player.index);
    keystrokes = await rec.keystrokes();
    keylog.show(keystrokes);
    keylog.at(player.timeUs);
    $('keys').hidden = false;
  } catch (err) {
    // The keys opened; what failed is a chunk (tampered, missing): say which, keep the rest.
    $('player-error').textContent = err.message;
    showVerdict();
  }
}

$('decrypt-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('decrypt-error').textContent = '';
  const pass = $('decrypt-passphrase').value;
  $('decrypt-passphrase').value = '';
  try {
    await decrypt(pass);
  } catch (err) {
    rec.lock();
    if (err instanceof WrongPassphraseError) $('decrypt-error').textContent = 'Wrong passphrase for this key file.';
    else if (err instanceof KeyFormError) $('decrypt-error').textContent = err.message;
    else $('decrypt-error').textContent = `Cannot decrypt: ${err.message}`;
  }
});

function startLive() {
  stopLive();
  player.follow = true;
  livePoll = setInterval(async () => {
    if (!rec) return;
    try {
      const before = rec.keyRows.length;
      const added = await rec.poll();
      await rec.prove(agentCa?.pem ?? null);
      describe();
      showVerdict();
      if (added > 0 && rec.unlocked && (player.follow || player.index >= rec.frames.length - added - 1)) {
        await player.show(rec.frames.length - 1);
      }
      if (rec.unlocked && rec.keyRows.length > before) {
        keystrokes = keystrokes.concat(await rec.keystrokes(before));
        keylog.show(keystrokes);
      }
      if (rec.summary.state !== 'recording') stopLive();
    } catch (err) {
      status(`live view: ${err.message}`);
    }
  }, LIVE_POLL_MS);
}

function stopLive() {
  clearInterval(livePoll);
  livePoll = null;
  player.follow = false;
}

$('play').addEventListener('click', () => {
  if (player.playing) { player.pause(); $('play').textContent = 'Play'; } else { player.follow = false; player.play(); $('play').textContent = 'Pause'; }
});
$('step-back').addEventListener('click', () => { player.follow = false; player.step(-1); });
$('step-fwd').addEventListener('click', () => player.step(1));
$('speed').addEventListener('change', () => player.setSpeed(Number($('speed').value)));
$('timeline').addEventListener('click', () => { player.follow = false; });

document.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || !rec || $('player').hidden) return;
  if (e.key === ' ') { e.preventDefault(); $('play').click(); }
  else if (e.key === 'ArrowLeft') player.step(-1);
  else if (e.key === 'ArrowRight') player.step(1);
  else if (e.key === 'Home') player.show(0);
  else if (e.key === 'End') player.show(rec.frames.length - 1);
  else if (e.key === 'l' && e.ctrlKey) { e.preventDefault(); lock(); }
  else if (e.key === 'i') mark('in');
  else if (e.key === 'o') mark('out');
  else if (/^[1-5]$/.test(e.key)) { $('speed').value = String(2 ** (Number(e.key) - 1)); player.setSpeed(Number($('speed').value)); }
});

$('key-search').addEventListener('input', () => {
  const hits = keylog.search($('key-search').value);
  $('key-hits').textContent = $('key-search').value ? `${hits.length} hit${hits.length === 1 ? '' : 's'}` : '';
  player.renderMarks(hits);
  if (hits.length) player.seekTime(hits[0]);
});

function setRange(r) {
  range = r;
  $('range').textContent = r ? `frames ${r.from + 1}–${r.to + 1}` : 'whole session';
}

function mark(which) {
  if (!rec?.frames.length) return;
  const last = rec.frames.length - 1;
  const cur = range ?? { from: 0, to: last };
  const r = which === 'in' ? { from: player.index, to: Math.max(player.index, cur.to) }
    : { from: Math.min(cur.from, player.index), to: player.index };
  setRange(r.from === 0 && r.to === last ? null : r);
}
$('mark-in').addEventListener('click', () => mark('in'));
$('mark-out').addEventListener('click', () => mark('out'));

async function runExport(kind) {
  if (!rec?.unlocked) { $('export-state').textContent = 'decrypt first'; return; }
  const progress = (i, n) => { $('export-state').textContent = `${kind}: ${i} / ${n}`; };
  const from = range?.from ?? 0;
  const to = range?.to ?? rec.frames.length - 1;
  const inRange = (k) => k.timeUs >= rec.frames[from].captureUs && (to === rec.frames.length - 1 || k.timeUs < rec.frames[to + 1].captureUs);
  try {
    await api.announceExport(rec.agentHex, rec.id, kind, rec.frames[from]?.captureUs, rec.frames[to]?.captureUs);
    if (kind === 'video') await exportVideo(rec, { from, to, speed: Number($('speed').value), progress });
    else await exportFrames(rec, range ? keystrokes.filter(inRange) : keystrokes, { from, to, progress });
    $('export-state').textContent = `${kind} saved`;
  } catch (err) {
    $('export-state').textContent = `${kind} failed: ${err.message}`;
  }
}
$('export-video').addEventListener('click', () => runExport('video'));
$('export-frames').addEventListener('click', () => runExport('frames'));

$('audit-open').addEventListener('click', async () => {
  $('session-view').hidden = true;
  $('audit-view').hidden = false;
  const rows = await api.audit();
  $('audit').tBodies[0].replaceChildren(...rows.map((r) => {
    const tr = document.createElement('tr');
    for (const c of [r.id, r.at, r.actor, r.address ?? '', r.action, r.detail]) {
      const td = document.createElement('td'); td.textContent = String(c); tr.append(td);
    }
    return tr;
  }));
});
$('audit-close').addEventListener('click', () => { $('audit-view').hidden = true; $('session-view').hidden = !rec; });

// Already logged in (a reload)? The cookie is HttpOnly: ask the server.
api.me().then(afterLogin, () => showView(false));
