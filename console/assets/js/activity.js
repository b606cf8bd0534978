// The activity log beside the keystroke log: a session's activity events (kind 3, docs/format.md
// "Activity batch") in time order: the session's start (user, display, host, screen size),
// which window had the focus (its title and class), size changes, idle and active, pauses and
// the end. The one at the player's time is highlighted, a click seeks there, and the page's
// search marks the focus changes whose window it finds (keylog.js matchesEvent).

import { KeyLog } from './keylog.js';

const LABELS = {
  session_start: 'session start',
  focus: 'focus',
  resize: 'resized',
  idle: 'idle',
  active: 'active',
  paused: 'paused',
  resumed: 'resumed',
  session_end: 'session end',
};

/**
 * What an activity event says, as the log shows it: {what, detail, where}. `what` names the
 * event; `detail` is the window title of a focus change, who and where of a session start
 * ("alice on :0 at ts-07 · 1920×1080"), the new size of a resize, the reason of a pause,
 * resume or end; `where` the window class (or application) of a focus change.
 */
export function describeActivity(e) {
  if (!e || typeof e !== 'object') return { what: 'event', detail: '', where: '' };
  const str = (v) => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '');
  const size = (w, h) => (str(w) && str(h) ? `${str(w)}×${str(h)}` : '');
  const name = str(e.event);
  const what = LABELS[name] ?? (name || 'event');
  let detail = '';
  let where = '';
  if (name === 'session_start') {
    const who = [str(e.user), str(e.display) && `on ${str(e.display)}`, str(e.host) && `at ${str(e.host)}`].filter(Boolean).join(' ');
    detail = [who, size(e.width, e.height)].filter(Boolean).join(' · ');
  } else if (name === 'focus') {
    // An excluded window (docs/capture.md): the agent says only that it has the focus.
    detail = e.excluded === true ? '(an excluded window)' : str(e.title);
    where = str(e.class) || str(e.app);
  } else if (name === 'resize') {
    detail = size(e.width, e.height);
  } else {
    detail = str(e.reason);
  }
  return { what, detail, where };
}

export class ActivityLog extends KeyLog {
  item(ev, span) {
    if (!ev.event) return [span('act-what', ev.line)];
    const { what, detail, where } = describeActivity(ev.event);
    const out = [span(`act-what act-${String(ev.event.event ?? 'event').replace(/[^a-z_]/gi, '')}`, what)];
    if (detail) out.push(' ', span('act-detail', detail));
    if (where) out.push(' ', span('key-where', where));
    return out;
  }
}
