// The page's looks and conveniences, none of which touch a key or a recording: the light and
// dark themes (the system's by default; a choice made with the header's toggle is kept in
// localStorage, a theme name and nothing else), the keyboard shortcuts overlay (`?`), the
// session table's sorting and folding, and copy buttons for the commands the page suggests.

const $ = (id) => document.getElementById(id);

// ---- Themes ----

const THEME_KEY = 'sealstream.theme';
const THEMES = ['light', 'dark'];
const systemDark = matchMedia('(prefers-color-scheme: dark)');

function storedTheme() {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return THEMES.includes(t) ? t : null;
  } catch {
    return null; // storage disabled: the system's theme
  }
}

/** The theme shown: the one chosen in this browser, else the system's. */
export function currentTheme() {
  return storedTheme() ?? (systemDark.matches ? 'dark' : 'light');
}

function showTheme() {
  const t = currentTheme();
  document.documentElement.dataset.theme = t;
  const other = t === 'dark' ? 'light' : 'dark';
  const b = $('theme-toggle');
  if (b) {
    b.title = `Switch to the ${other} theme`;
    b.setAttribute('aria-label', b.title);
    b.dataset.theme = t;
  }
}

/** Show `name` and remember it in this browser (only the name is stored). */
export function setTheme(name) {
  try { localStorage.setItem(THEME_KEY, name); } catch { /* shown, not remembered */ }
  showTheme();
}

showTheme();
systemDark.addEventListener('change', showTheme);
$('theme-toggle')?.addEventListener('click', () => setTheme(currentTheme() === 'dark' ? 'light' : 'dark'));

// ---- Keyboard shortcuts ----

const typing = (t) => t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement;

function toggleShortcuts() {
  const d = $('shortcuts');
  if (d.open) d.close(); else d.showModal();
}
$('shortcuts-open')?.addEventListener('click', toggleShortcuts);
$('shortcuts-close')?.addEventListener('click', () => $('shortcuts').close());
$('shortcuts')?.addEventListener('click', (e) => { if (e.target === e.currentTarget) e.currentTarget.close(); });
document.addEventListener('keydown', (e) => {
  if (e.key === '?' && !typing(e.target) && !e.ctrlKey && !e.metaKey && !e.altKey) {
    e.preventDefault();
    toggleShortcuts();
  }
});

// ---- The session table: sort by a column header, fold the list away from the player ----

const STATE_ORDER = { recording: 0, incomplete: 1, complete: 2 };
const SORT_KEYS = {
  agent: (tr) => tr.cells[0]?.textContent ?? '',
  start: (tr) => Number(tr.dataset.startUs ?? 0),
  chunks: (tr) => Number(tr.dataset.chunks ?? 0),
  state: (tr) => STATE_ORDER[tr.dataset.state] ?? 3,
};
let sortBy = null; // {key, dir: 1 | -1}, or null: the server's order (latest activity first)
const arrival = new WeakMap(); // row → the order it arrived in (ties keep the server's order)
let arrived = 0;

function compareRows(a, b) {
  const key = SORT_KEYS[sortBy.key];
  const ka = key(a);
  const kb = key(b);
  const c = typeof ka === 'string' ? ka.localeCompare(kb) : ka - kb;
  return c * sortBy.dir || arrival.get(a) - arrival.get(b);
}

function sortSessions() {
  const body = $('sessions').tBodies[0];
  const rows = [...body.rows];
  for (const r of rows) if (!arrival.has(r)) arrival.set(r, arrived++);
  const want = sortBy ? [...rows].sort(compareRows) : [...rows].sort((a, b) => arrival.get(a) - arrival.get(b));
  if (want.some((r, i) => r !== rows[i])) body.append(...want);
}

function showSort() {
  for (const th of $('sessions').tHead.querySelectorAll('th[data-sort]')) {
    const on = sortBy?.key === th.dataset.sort;
    th.setAttribute('aria-sort', on ? (sortBy.dir > 0 ? 'ascending' : 'descending') : 'none');
  }
}

$('sessions').tHead.addEventListener('click', (e) => {
  const th = e.target.closest('th[data-sort]');
  if (!th) return;
  const key = th.dataset.sort;
  // A first click sorts ascending (newest first for the start), a second reverses, a third
  // goes back to the server's order.
  const first = key === 'start' ? -1 : 1;
  if (sortBy?.key !== key) sortBy = { key, dir: first };
  else if (sortBy.dir === first) sortBy = { key, dir: -first };
  else sortBy = null;
  showSort();
  sortSessions();
});

/** What the folded list says: how many sessions, and which one is open. */
function showListSummary() {
  const rows = $('sessions').tBodies[0].rows;
  const more = $('sessions-more').hidden ? '' : '+';
  $('sessions-count').textContent = `${rows.length}${more}`;
  const sel = [...rows].find((r) => r.classList.contains('selected'));
  $('sessions-current').textContent = sel ? `${sel.cells[0].textContent} · ${sel.cells[1].textContent}` : '';
}

new MutationObserver(() => { sortSessions(); showListSummary(); })
  .observe($('sessions').tBodies[0], { childList: true, subtree: true, attributes: true, attributeFilter: ['class'] });
new MutationObserver(showListSummary).observe($('sessions-more'), { attributes: true, attributeFilter: ['hidden'] });

function fold(folded) {
  $('browser').classList.toggle('folded', folded);
  $('sessions-toggle').setAttribute('aria-expanded', String(!folded));
  $('sessions-toggle').title = folded ? 'Show the session list' : 'Hide the session list';
}
let autoFolded = false; // folded for want of room, not by the toggle
$('sessions-toggle').addEventListener('click', () => { autoFolded = false; fold(!$('browser').classList.contains('folded')); });
// Where the list cannot sit beside what is open (narrower than 1800 px: app.css), it folds into
// one line above it when a session, an overview or the audit log opens.
const besideRoom = matchMedia('(min-width: 1800px)');
const foldIfNarrow = () => { if (!besideRoom.matches) { autoFolded = true; fold(true); } };
// Room again (a wider window): the list folded for want of it comes back beside.
besideRoom.addEventListener('change', () => { if (besideRoom.matches && autoFolded) { autoFolded = false; fold(false); } });
$('sessions').tBodies[0].addEventListener('click', foldIfNarrow);
for (const id of ['montage-open', 'snapshots-open', 'report-open', 'audit-open']) $(id)?.addEventListener('click', foldIfNarrow);
// (With nothing open beside it, the list is the whole page, folded or not.)
$('logout')?.addEventListener('click', () => { autoFolded = false; fold(false); });

// How many keystroke (and activity) events the log holds, beside its title.
for (const [list, count] of [['keylog', 'keys-count'], ['activitylog', 'activity-count']]) {
  if (!$(list)) continue;
  new MutationObserver(() => {
    const n = $(list).children.length;
    $(count).textContent = n ? String(n) : '';
  }).observe($(list), { childList: true });
}

// The header's view buttons say which view is open.
for (const name of ['montage', 'snapshots', 'report']) {
  const view = $(`${name}-view`);
  const button = $(`${name}-open`);
  if (!view || !button) continue;
  const mark = () => { if (view.hidden) button.removeAttribute('aria-current'); else button.setAttribute('aria-current', 'page'); };
  new MutationObserver(mark).observe(view, { attributes: true, attributeFilter: ['hidden'] });
}

// The header's key state as a dot: green while something is decrypted in this page.
new MutationObserver(() => {
  const k = $('key-state');
  k.dataset.state = k.textContent.startsWith('decrypted') ? 'decrypted' : 'locked';
}).observe($('key-state'), { childList: true, characterData: true, subtree: true });

// ---- Commands to copy ----

/** A command as a line of code with a Copy button. */
function commandBlock(command) {
  const box = document.createElement('div');
  box.className = 'cmd';
  const code = document.createElement('code');
  code.textContent = command;
  const copy = document.createElement('button');
  copy.type = 'button';
  copy.className = 'copy';
  copy.dataset.copy = command;
  copy.textContent = 'Copy';
  box.append(code, copy);
  return box;
}

/** Shell-quote a file name when it needs it. */
function shellWord(s) {
  return /^[\w./+-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

/**
 * Show a message that suggests commands (lines indented by two spaces, as keyfile.js writes
 * them) in `el`: its first sentence as the headline, the rest as smaller text, and each
 * command as code with a Copy button. The commands name `fileName` (the key file the reviewer
 * picked) instead of keypair.pem when given.
 */
export function showCommandHelp(el, message, fileName) {
  const base = fileName ? fileName.replace(/\.[^.]*$/, '') : null;
  const named = (cmd) => (base
    ? cmd.replaceAll('keypair-pkcs8.pem', shellWord(`${base}-pkcs8.pem`)).replaceAll('keypair.pem', shellWord(fileName))
    : cmd);
  const parts = [];
  const [first, ...rest] = message.split('\n');
  const cut = first.indexOf('. ');
  const head = document.createElement('p');
  head.className = 'help-head';
  head.textContent = cut < 0 ? first : first.slice(0, cut + 1);
  parts.push(head);
  const prose = (text) => {
    if (!text.trim()) return;
    const p = document.createElement('p');
    p.className = 'help-text';
    p.textContent = text.trim();
    parts.push(p);
  };
  if (cut >= 0) prose(first.slice(cut + 2));
  for (const line of rest) {
    if (line.startsWith('  ')) parts.push(commandBlock(named(line.trim())));
    else prose(line);
  }
  el.replaceChildren(...parts);
}

document.addEventListener('click', async (e) => {
  const b = e.target.closest('button[data-copy]');
  if (!b) return;
  e.preventDefault();
  let copied = true;
  try {
    await navigator.clipboard.writeText(b.dataset.copy);
  } catch {
    // No clipboard permission: select the command so Ctrl+C copies it.
    const code = b.parentElement.querySelector('code');
    if (code) getSelection().selectAllChildren(code);
    copied = false;
  }
  b.textContent = copied ? 'Copied' : 'Selected: Ctrl+C';
  b.classList.add('done');
  setTimeout(() => { b.textContent = 'Copy'; b.classList.remove('done'); }, 2000);
});
