// The console server's API: JSON and ciphertext over fetch, same origin, with the login's
// CSRF token on every state-changing request. The server only authorizes and serves stored
// bytes; nothing secret is ever sent to it.

let csrf = '';
// Logged out (Log out, or idle)? Then, until the next login, the page sends nothing but a
// login: a poll or a fetch still under way when the user logs out stops there.
let loggedOut = false;
let inFlight = new AbortController();

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

async function call(method, path, { json, binary } = {}) {
  if (loggedOut && path !== '/api/login' && path !== '/api/me') throw new ApiError(401, 'logged out');
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: json === undefined ? undefined : JSON.stringify(json),
    signal: inFlight.signal,
  });
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try { message = (await res.json()).error || message; } catch { /* not JSON */ }
    throw new ApiError(res.status, message);
  }
  if (res.status === 204) return null;
  if (binary) return { bytes: new Uint8Array(await res.arrayBuffer()), headers: res.headers };
  const type = res.headers.get('Content-Type') || '';
  return type.includes('json') ? res.json() : res.text();
}

export async function login(user, password) {
  const me = await call('POST', '/api/login', { json: { user, password } });
  csrf = me.csrf;
  loggedOut = false;
  return me;
}

export async function me() {
  const m = await call('GET', '/api/me');
  csrf = m.csrf;
  loggedOut = false;
  return m;
}

/** Log out: requests still under way are cancelled, and none is sent until the next login. */
export async function logout() {
  inFlight.abort();
  inFlight = new AbortController();
  try {
    if (!loggedOut) await call('POST', '/api/logout');
  } finally {
    loggedOut = true;
    csrf = '';
  }
}

export const agents = () => call('GET', '/api/agents');

export function sessions({ agent, sinceUs, untilUs, cursor, limit = 50 } = {}) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (agent) q.set('agent', agent);
  if (sinceUs != null) q.set('since_us', String(sinceUs));
  if (untilUs != null) q.set('until_us', String(untilUs));
  if (cursor) q.set('cursor', cursor);
  return call('GET', `/api/sessions?${q}`);
}

const base = (agentHex, session) => `/api/agents/${agentHex}/sessions/${session}`;

export const session = (agentHex, id) => call('GET', base(agentHex, id));

/** Index rows of a session (all streams, or `stream` from `fromSeq`). */
export function index(agentHex, id, { stream, fromSeq = 0 } = {}) {
  const q = new URLSearchParams({ from_seq: String(fromSeq) });
  if (stream != null) q.set('stream', String(stream));
  return call('GET', `${base(agentHex, id)}/index?${q}`);
}

/** Sealed chunks `fromSeq ..` of a stream, back to back: {bytes, lastSeq}. */
export async function chunks(agentHex, id, stream, fromSeq, count) {
  const q = new URLSearchParams({ from_seq: String(fromSeq), count: String(count) });
  const r = await call('GET', `${base(agentHex, id)}/streams/${stream}/chunks?${q}`, { binary: true });
  return { bytes: r.bytes, lastSeq: Number(r.headers.get('X-Sealstream-Last-Seq')) };
}

export async function dekRecord(dekHex) {
  return (await call('GET', `/api/deks/${dekHex}`, { binary: true })).bytes;
}

export const keks = () => call('GET', '/api/keks');
/** The agent CA this console checks signatures against: {pem, fingerprint} (both null: none). */
export const agentCa = () => call('GET', '/api/agent-ca');
export const kekFile = (kekId, which) => call('GET', `/api/keks/${encodeURIComponent(kekId)}/${which}`);

export const announceExport = (agentHex, id, what, fromUs, toUs) =>
  call('POST', '/api/exports', { json: { agent_hex: agentHex, session: id, what, from_us: fromUs, to_us: toUs } });

/**
 * A page of the audit log, newest first, filtered on the server: {rows, older, newer} (pass
 * `older` as `before` for the next older page, `newer` as `after` for the next newer one).
 */
export function audit({ before, after, user, action, sinceUs, untilUs, limit = 50 } = {}) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (before != null) q.set('before', String(before));
  if (after != null) q.set('after', String(after));
  if (user) q.set('user', user);
  if (action) q.set('action', action);
  if (sinceUs != null) q.set('since_us', String(sinceUs));
  if (untilUs != null) q.set('until_us', String(untilUs));
  return call('GET', `/api/audit?${q}`);
}

/**
 * Sessions for the overviews (Live Montage, Screen Snapshots, the keystrokes report):
 * {sessions: [session (as `session`) + {frame_stream, key_stream, key_chunks, frames:
 * [{seq, capture_us, dek_id, len}]}], next}. `agents`: hex of agent ids (none: all the caller
 * may see); `live`: only sessions recording now; `slots`: frames per session (0 none, 1 the
 * newest in the range, more: the newest of each of that many parts of the range).
 */
export function overview({ agents = [], sinceUs, untilUs, live = false, slots = 1, limit = 200, cursor } = {}) {
  const q = new URLSearchParams({ slots: String(slots), limit: String(limit) });
  if (agents.length) q.set('agents', agents.join(','));
  if (sinceUs != null) q.set('since_us', String(sinceUs));
  if (untilUs != null) q.set('until_us', String(untilUs));
  if (live) q.set('live', 'true');
  if (cursor) q.set('cursor', cursor);
  return call('GET', `/api/overview?${q}`);
}
