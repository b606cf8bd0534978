// The console page: login, the list of agents and sessions, a session's player, keystroke and
// activity logs, decryption on demand, live view, exports, Lock / logout / idle lock, the audit log.
// Keys and plaintext live only in this page's memory (non-extractable CryptoKeys, decoded
// frames); Lock, logout and idle forget them.

import * as api from './api.js';
import { Recording } from './session.js';
import { Player } from './player.js';
import { KeyLog } from './keylog.js';
import { ActivityLog } from './activity.js';
import { exportVideo, exportFrames } from './export.js';
import { WrongPassphraseError, KeyFormError } from './keyfile.js';
import { Keyring } from './keyring.js';
import { Montage } from './montage.js';
import { Snapshots } from './snapshots.js';
import { Report } from './report.js';
import { showCommandHelp } from './ui.js';

const $ = (id) => document.getElementById(id);
const LIVE_POLL_MS = 1000;

let me = null;
let rec = null;
let keystrokes = [];
let activity = [];
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
  axis: $('timeline-axis'),
  progress: $('timeline-progress'),
  hover: $('timeline-hover'),
  onTime: (us) => { keylog.at(us); activityLog.at(us); },
  onError: (err) => { $('player-error').textContent = err.message; showVerdict(); },
  onPlaying: (playing) => { $('play').textContent = playing ? 'Pause' : 'Play'; $('play').dataset.playing = String(playing); },
});
const keylog = new KeyLog({ list: $('keylog'), onSeek: (us) => player.seekTime(us) });
const activityLog = new ActivityLog({ list: $('activitylog'), onSeek: (us) => player.seekTime(us) });

function status(text) { $('status').textContent = text; }

function fmtTime(us) {
  return us ? new Date(us / 1000).toISOString().replace('T', ' ').slice(0, 19) : '';
}

/** A capture span for the list: the end's time only when it is the same UTC day, else its date too. */
function fmtSpan(firstUs, lastUs) {
  const a = fmtTime(firstUs);
  const b = fmtTime(lastUs);
  return `${a} – ${a.slice(0, 10) === b.slice(0, 10) ? b.slice(11) : b}`;
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
  $('overviews').hidden = !loggedIn;
  if (!loggedIn) { hideOverviews(); lockOverviews(); forgetScreen(); }
  $('whoami').textContent = loggedIn ? `${me.user} (${me.role})` : '';
}

/** Forget every key and everything decrypted; the session stays selected, locked. */
function lock(reason) {
  if (rec) rec.lock();
  player.clear();
  keylog.clear();
  activityLog.clear();
  keystrokes = [];
  activity = [];
  $('activity').hidden = true;
  $('keys').hidden = true;
  $('key-state').textContent = reason ? `locked: ${reason}` : 'locked';
  if (rec) showDecrypt();
}

function resetIdle() {
  clearTimeout(idleTimer);
  if (!me) return;
  const minutes = me.idle_minutes;
  idleTimer = setTimeout(() => endLogin(`Logged out after ${minutes} minutes idle; keys forgotten.`), minutes * 60_000);
}

/**
 * The login ends (Log out, or idle): every key and everything decrypted is forgotten, nothing
 * of the user's lists or sessions stays on screen, and the page asks the server nothing more
 * (the live view and the list's refresh stop; api.js cancels what is under way).
 */
async function endLogin(message) {
  clearTimeout(idleTimer);
  stopListRefresh();
  stopLive();
  lock();
  rec = null;
  try { await api.logout(); } catch { /* expired already */ }
  me = null;
  showView(false);
  status(message);
}

/** Nothing of the last user's on screen: their list, session, keystrokes, audit rows. */
function forgetScreen() {
  $('sessions').tBodies[0].replaceChildren();
  $('sessions-more').hidden = true;
  nextCursor = null;
  $('filter-agent').replaceChildren(new Option('all agents', ''));
  for (const id of ['session-view', 'audit-view', 'decrypt-form', 'player', 'keys', 'activity']) $(id).hidden = true;
  for (const id of ['session-title', 'session-facts', 'proof-message', 'agent-ca', 'player-error', 'export-state',
    'key-hits', 'decrypt-error', 'key-state', 'audit-page']) $(id).textContent = '';
  $('key-search').value = '';
  $('decrypt-passphrase').value = '';
  $('decrypt-file').value = '';
  $('audit').tBodies[0].replaceChildren();
  for (const id of ['audit-user', 'audit-action', 'audit-since', 'audit-until']) $(id).value = '';
}
for (const ev of ['pointerdown', 'keydown']) document.addEventListener(ev, resetIdle, { passive: true });

async function afterLogin(m) {
  me = m;
  showView(true);
  resetIdle();
  await loadAgents();
  await loadSessions(true);
  startListRefresh();
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

$('logout').addEventListener('click', () => endLogin('Logged out; keys forgotten.'));

$('lock').addEventListener('click', () => lock());

async function loadAgents() {
  const list = await api.agents();
  const sel = $('filter-agent');
  const keep = sel.value;
  sel.replaceChildren(new Option('all agents', ''), ...list.map((a) => new Option(`${a.agent} (${a.sessions})`, a.agent)));
  if (list.some((a) => a.agent === keep)) sel.value = keep;
}

// The list refreshes itself (new sessions, a recording that ended) while only its first page
// is shown, and on Refresh, on closing the audit log, and when a watched recording ends.
const LIST_REFRESH_MS = 30_000;
let listTimer = null;
let pagesShown = 0;
function startListRefresh() {
  stopListRefresh();
  listTimer = setInterval(() => { if (pagesShown <= 1) refreshList(); }, LIST_REFRESH_MS);
}
function stopListRefresh() {
  clearInterval(listTimer);
  listTimer = null;
}
async function refreshList() {
  if (!me) return;
  try {
    await loadAgents();
    await loadSessions(true);
  } catch (err) {
    if (me) status(`session list: ${err.message}`);
  }
}

function filter() {
  const t = (id) => ($(id).value ? Date.parse($(id).value + 'Z') * 1000 : null);
  return { agent: $('filter-agent').value || null, sinceUs: t('filter-since'), untilUs: t('filter-until') };
}

async function loadSessions(fresh) {
  const body = $('sessions').tBodies[0];
  const page = await api.sessions({ ...filter(), cursor: fresh ? null : nextCursor });
  if (fresh) { body.replaceChildren(); pagesShown = 0; }
  pagesShown += 1;
  for (const s of page.sessions) {
    const tr = document.createElement('tr');
    tr.dataset.agent = s.agent_hex;
    tr.dataset.session = s.session;
    // What the table sorts by (ui.js).
    Object.assign(tr.dataset, { startUs: String(s.first_capture_us ?? 0), chunks: String(s.chunks), state: s.state });
    if (rec && rec.agentHex === s.agent_hex && rec.id === s.session) tr.classList.add('selected');
    const cells = [s.agent, s.session.slice(0, 8), fmtSpan(s.first_capture_us, s.last_capture_us),
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
$('sessions-refresh').addEventListener('click', () => refreshList());

function showDecrypt() {
  $('decrypt-form').hidden = false;
  $('player').hidden = false;
  $('decrypt-error').textContent = '';
}

function describe() {
  const s = rec.summary;
  $('session-title').textContent = `${s.agent} · session ${s.session}`;
  $('session-facts').textContent = `${fmtTime(s.first_capture_us)} to ${fmtTime(s.last_capture_us)} UTC · ${rec.frames.length} frames, `
    + `${rec.keyRows.length} keystroke batches, ${rec.activityStream !== null ? `${rec.activityRows.length} activity batches, ` : ''}`
    + `${fmtBytes(s.bytes)} · the index says ${s.state === 'recording' ? 'recording now' : s.state}`
    + `${s.gaps ? ` · ${s.gaps} gap(s) dropped by the agent` : ''}`;
  $('live-badge').hidden = s.state !== 'recording';
}

async function openSession(summary, tr) {
  for (const r of $('sessions').tBodies[0].rows) r.classList.toggle('selected', r === tr);
  clearVerdict();
  lock();
  stopLive();
  $('decrypt-form').hidden = true; // until this session's index and verdict are in
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
    activity = await rec.activity();
    activityLog.show(activity);
    activityLog.at(player.timeUs);
    $('activity').hidden = rec.activityStream === null;
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
    else if (err instanceof KeyFormError) showCommandHelp($('decrypt-error'), err.message, $('decrypt-file').files[0]?.name);
    else $('decrypt-error').textContent = `Cannot decrypt: ${err.message}`;
  }
});

function startLive() {
  stopLive();
  player.follow = true;
  livePoll = setInterval(async () => {
    if (!rec) return;
    const watched = rec;
    try {
      const before = rec.keyRows.length;
      const activityBefore = rec.activityRows.length;
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
      if (rec.unlocked && rec.activityRows.length > activityBefore) {
        activity = activity.concat(await rec.activity(activityBefore));
        activityLog.show(activity);
        $('activity').hidden = false;
      }
      if (rec.summary.state !== 'recording') { stopLive(); refreshList(); }
    } catch (err) {
      // Closed, logged out or locked meanwhile: nothing to say.
      if (watched === rec && me) status(`live view: ${err.message}`);
    }
  }, LIVE_POLL_MS);
}

function stopLive() {
  clearInterval(livePoll);
  livePoll = null;
  player.follow = false;
}

// The button's words follow the player (onPlaying), also when the recording ends.
$('play').addEventListener('click', () => {
  if (player.playing) player.pause(); else { player.follow = false; player.play(); }
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

// The search finds keystrokes (what was typed, window titles, applications) and the activity
// log's events (focus changes by window title and class).
$('key-search').addEventListener('input', () => {
  const hits = keylog.search($('key-search').value).concat(activityLog.search($('key-search').value)).sort((a, b) => a - b);
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
    else await exportFrames(rec, range ? keystrokes.filter(inRange) : keystrokes, { from, to, progress, activity: range ? activity.filter(inRange) : activity });
    $('export-state').textContent = `${kind} saved`;
  } catch (err) {
    $('export-state').textContent = `${kind} failed: ${err.message}`;
  }
}
$('export-video').addEventListener('click', () => runExport('video'));
$('export-frames').addEventListener('click', () => runExport('frames'));

// The audit log (admins): pages of AUDIT_PAGE rows, newest first, filtered by user, action
// and time on the server; Older / Newer page through what the filters match.
const AUDIT_PAGE = 50;
let auditAt = { n: 1, older: null, newer: null };
async function showAudit(where, n) {
  const t = (id) => ($(id).value ? Date.parse($(id).value + 'Z') * 1000 : null);
  const page = await api.audit({
    ...where,
    user: $('audit-user').value.trim(),
    action: $('audit-action').value.trim(),
    sinceUs: t('audit-since'),
    untilUs: t('audit-until'),
    limit: AUDIT_PAGE,
  });
  $('audit').tBodies[0].replaceChildren(...page.rows.map((r) => {
    const tr = document.createElement('tr');
    for (const c of [r.id, r.at, r.actor, r.address ?? '', r.action, r.detail]) {
      const td = document.createElement('td'); td.textContent = String(c); tr.append(td);
    }
    return tr;
  }));
  auditAt = { n, older: page.older, newer: page.newer };
  $('audit-older').disabled = page.older == null;
  $('audit-newer').disabled = page.newer == null;
  $('audit').dataset.page = String(n);
  $('audit-page').textContent = page.rows.length
    ? `page ${n} · entries ${page.rows[page.rows.length - 1].id}–${page.rows[0].id}` : 'no entries';
}
const auditError = (err) => { $('audit-page').textContent = err.message; };
$('audit-open').addEventListener('click', () => {
  $('session-view').hidden = true;
  $('audit-view').hidden = false;
  showAudit({}, 1).catch(auditError);
});
$('audit-filter').addEventListener('submit', (e) => { e.preventDefault(); showAudit({}, 1).catch(auditError); });
$('audit-older').addEventListener('click', () => showAudit({ before: auditAt.older }, auditAt.n + 1).catch(auditError));
$('audit-newer').addEventListener('click', () => showAudit({ after: auditAt.newer }, Math.max(1, auditAt.n - 1)).catch(auditError));
$('audit-close').addEventListener('click', () => { $('audit-view').hidden = true; $('session-view').hidden = !rec; refreshList(); });

// The overviews (Live Montage, Screen Snapshots, the keystrokes report): one keyring for the
// three, forgotten on Lock, logout and idle; a tile or a report row opens the player there.
const keyring = new Keyring();
async function openFromOverview(summary, atUs) {
  hideOverviews();
  const tr = [...$('sessions').tBodies[0].rows]
    .find((r) => r.dataset.agent === summary.agent_hex && r.dataset.session === summary.session) ?? null;
  await openSession(summary, tr);
  if (atUs) {
    player.follow = false;
    await player.seekTime(atUs);
  }
}
const overviewEls = (p, more) => ({
  view: $(`${p}-view`), form: $(`${p}-decrypt`), passphrase: $(`${p}-passphrase`), error: $(`${p}-error`), state: $(`${p}-state`), ...more,
});
const filterEls = (p) => ({ filter: $(`${p}-filter`), agents: $(`${p}-agents`), since: $(`${p}-since`), until: $(`${p}-until`) });
const overviews = {
  montage: new Montage(overviewEls('montage', { grid: $('montage-grid') }), keyring, openFromOverview),
  snapshots: new Snapshots(overviewEls('snapshots', {
    ...filterEls('snapshots'), mode: $('snapshots-mode'), hour: $('snapshots-hour'), grid: $('snapshots-grid'),
    next: $('snapshots-next'), first: $('snapshots-first'),
  }), keyring, openFromOverview),
  report: new Report(overviewEls('report', { ...filterEls('report'), search: $('report-search'), table: $('report').tBodies[0] }), keyring, openFromOverview),
};
function hideOverviews() {
  for (const v of Object.values(overviews)) if (!v.els.view.hidden) v.hide();
}
function lockOverviews() {
  keyring.lock();
  for (const v of Object.values(overviews)) v.lock();
}
for (const [name, view] of Object.entries(overviews)) {
  $(`${name}-open`).addEventListener('click', () => {
    hideOverviews();
    stopLive();
    $('session-view').hidden = true;
    $('audit-view').hidden = true;
    view.show().catch((err) => status(err.message));
  });
}
$('sessions').tBodies[0].addEventListener('click', hideOverviews);
$('audit-open').addEventListener('click', hideOverviews);
$('lock').addEventListener('click', lockOverviews);
document.addEventListener('keydown', (e) => { if (e.key === 'l' && e.ctrlKey) { e.preventDefault(); lockOverviews(); } });

// Already logged in (a reload)? The cookie is HttpOnly: ask the server.
api.me().then(afterLogin, () => showView(false));
