// Herald chat page. Plain ES module, no dependencies, no build step.
//
// Data model: every server event belongs to a run (run_id) and a thread
// (thread_id). Each run keeps a log of its events keyed by seq (merged
// agent_message events keep their seq_from..seq range); what the page shows
// is always a fold over that log, so an event that arrives twice (live, then
// in a resume replay, then in a history reply) is stored and shown once.
// The log, the threads and the stream cursor (epoch, lastSeq) live in
// localStorage per user, so a reload shows everything and resumes at connect
// with since_seq: nothing lost, nothing twice.

const SESSION_KEY = 'herald.session';
const STORE_PREFIX = 'herald.v1.';
const MAX_RUNS = 200;            // runs kept in localStorage per user
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const ACK_TIMEOUT_MS = 15000;
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') n.className = v;
    else if (k === 'text') n.textContent = v;
    else n.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c != null) n.append(c);
  return n;
};
const randomId = (prefix) => {
  const u = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now());
  return prefix + u.replace(/-/g, '').slice(0, 12);
};

// ---------------------------------------------------------------- session

let session = null;    // {token, user_id, expires_at}
let store = null;      // the per-user persisted state, see loadStore()
let expiryTimer = null;

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    if (s && s.token && s.user_id && (!s.expires_at || s.expires_at * 1000 > Date.now() + 5000)) return s;
  } catch { /* ignore */ }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

function emptyStore() {
  return { v: 1, epoch: null, lastSeq: 0, threads: [], current: null, runs: {}, pending: [] };
}

function loadStore(user) {
  try {
    const s = JSON.parse(localStorage.getItem(STORE_PREFIX + user) || 'null');
    if (s && s.v === 1) {
      s.pending = (s.pending || []).map((p) => (p.state === 'sent' ? { ...p, state: 'unknown' } : p));
      return s;
    }
  } catch { /* corrupted: start over */ }
  return emptyStore();
}

let saveTimer = null;
function saveSoon() {
  if (saveTimer) return;
  saveTimer = setTimeout(saveNow, 150);
}
function saveNow() {
  clearTimeout(saveTimer);
  saveTimer = null;
  if (!session || !store) return;
  pruneRuns();
  try {
    localStorage.setItem(STORE_PREFIX + session.user_id, JSON.stringify(store));
  } catch (e) {
    console.warn('herald: could not save state', e);
  }
}
addEventListener('pagehide', saveNow);

function pruneRuns() {
  const keys = Object.keys(store.runs);
  if (keys.length <= MAX_RUNS) return;
  const done = keys.filter((k) => TERMINAL.has(foldRun(store.runs[k]).status))
    .sort((a, b) => store.runs[a].order - store.runs[b].order);
  for (const k of done.slice(0, keys.length - MAX_RUNS)) delete store.runs[k];
}

// ---------------------------------------------------------------- sign-in

let retryTimer = null;

async function onLogin(ev) {
  ev.preventDefault();
  const username = $('#login-username').value.trim();
  const password = $('#login-password').value;
  const errBox = $('#login-error');
  if (!username || !password) {
    showLoginError('Enter your username and password.');
    return;
  }
  const btn = $('#login-submit');
  btn.disabled = true;
  btn.textContent = 'Signing in…';
  errBox.hidden = true;
  try {
    const res = await fetch('auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
    if (res.ok) {
      const body = await res.json();
      if (!body.token) throw new Error('no token in the reply');
      const s = { token: body.token, user_id: body.user_id || username, expires_at: body.expires_at || 0 };
      sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
      $('#login-password').value = '';
      btn.disabled = false;
      btn.textContent = 'Sign in';
      startChat(s);
      return;
    }
    if (res.status === 429) {
      const after = parseInt(res.headers.get('Retry-After') || '0', 10) || 30;
      lockLogin(after);
      return;
    }
    if (res.status === 401) showLoginError('Wrong username or password.');
    else showLoginError(`Sign-in failed (HTTP ${res.status}). Try again.`);
  } catch (e) {
    showLoginError('Cannot reach the server. Check your connection and try again.');
  }
  btn.disabled = false;
  btn.textContent = 'Sign in';
}

function showLoginError(text) {
  const box = $('#login-error');
  box.textContent = text;
  box.hidden = false;
}

function lockLogin(seconds) {
  const btn = $('#login-submit');
  clearInterval(retryTimer);
  let left = seconds;
  const tick = () => {
    if (left <= 0) {
      clearInterval(retryTimer);
      btn.disabled = false;
      btn.textContent = 'Sign in';
      $('#login-error').hidden = true;
      return;
    }
    btn.disabled = true;
    btn.textContent = `Try again in ${left} s`;
    showLoginError(`Too many sign-in attempts. Try again in ${left} s.`);
    left--;
  };
  tick();
  retryTimer = setInterval(tick, 1000);
}

function showLogin(message) {
  $('#chat-view').hidden = true;
  $('#login-view').hidden = false;
  if (message) showLoginError(message);
  $('#login-username').focus();
}

function signOut(message) {
  saveNow();
  clearTimeout(expiryTimer);
  conn.stop();
  sessionStorage.removeItem(SESSION_KEY);
  session = null;
  store = null;
  $('#timeline').replaceChildren();
  showLogin(message);
}

// ---------------------------------------------------------------- connection

const conn = {
  ws: null,
  attempt: 0,
  timer: null,
  stopped: true,
  live: false,
  resuming: false,     // between welcome and resumed
  resumeComplete: true,
  historyWanted: false,
  resumeTimer: null,

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.open();
  },

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = null;
      try { ws.close(1000, 'bye'); } catch { /* ignore */ }
    }
    this.live = false;
  },

  open() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped || this.ws) return;
    if (!navigator.onLine) {
      setConnStatus('offline', 'Offline — waiting for network');
      return;
    }
    setConnStatus(this.attempt === 0 ? 'connecting' : 'reconnecting',
      this.attempt === 0 ? 'Connecting…' : 'Reconnecting…');
    const url = new URL('ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(url.href, ['herald.v1']);
    } catch (e) {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      // First-message auth: the token never appears in a URL.
      const auth = { type: 'auth', token: session.token, since_seq: store.lastSeq || 0 };
      if (store.epoch) auth.epoch = store.epoch;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (m) => {
      if (this.ws !== ws) return;
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      handleMessage(msg);
    };
    ws.onerror = () => { /* onclose follows */ };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.live = false;
      onDisconnected();
      if (ev.code === 4001 || ev.code === 4002) {
        signOut(ev.code === 4002 ? 'Your session expired. Please sign in again.'
          : 'Your session is no longer valid. Please sign in again.');
        return;
      }
      this.retry(ev.code);
    };
  },

  retry(code) {
    if (this.stopped) return;
    this.attempt++;
    const exp = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (this.attempt - 1));
    const delay = Math.round(exp / 2 + Math.random() * exp / 2);   // jittered, capped
    if (!navigator.onLine) {
      setConnStatus('offline', 'Offline — waiting for network');
      return;   // the 'online' event reconnects
    }
    const why = code === 4008 ? ' (fell behind)' : code === 1001 ? ' (server restarting)' : '';
    setConnStatus('reconnecting', `Reconnecting in ${Math.ceil(delay / 1000)} s${why}…`);
    this.timer = setTimeout(() => this.open(), delay);
  },

  // Drops the socket as a network failure would; reconnection follows.
  drop() {
    const ws = this.ws;
    if (!ws) return false;
    this.ws = null;
    this.live = false;
    ws.onclose = ws.onmessage = ws.onerror = null;
    try { ws.close(4000, 'dropped'); } catch { /* ignore */ }
    onDisconnected();
    this.retry();
    return true;
  },

  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.live) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  },
};

addEventListener('online', () => {
  if (!conn.stopped && !conn.ws) {
    conn.attempt = Math.max(conn.attempt, 1);
    conn.open();
  }
});
addEventListener('offline', () => {
  // The socket may linger on a dead network; drop it and wait for 'online'.
  if (!conn.stopped && conn.ws) conn.drop();
  else if (!conn.stopped) setConnStatus('offline', 'Offline — waiting for network');
});

function setConnStatus(state, text) {
  const s = $('#conn-status');
  s.dataset.state = state;
  s.querySelector('.conn-text').textContent = text;
  s.title = text;
  document.body.dataset.conn = state;
  updateComposer();
}

function onDisconnected() {
  for (const p of store?.pending || []) if (p.state === 'sent') p.state = 'unknown';
  renderPending();
  saveSoon();
}

// ---------------------------------------------------------------- server messages

function handleMessage(msg) {
  switch (msg.type) {
    case 'welcome': return onWelcome(msg);
    case 'resumed': return onResumed(msg);
    case 'ack': return onAck(msg);
    case 'error': return onError(msg);
    case 'runs': return onRuns(msg);
    case 'history': return onHistory(msg);
    default:
      if (typeof msg.seq === 'number') onLiveEvent(msg);
  }
}

function onWelcome(msg) {
  if (store.epoch && msg.epoch !== store.epoch) {
    // History was lost on the server: its seq numbers start over. Keep the
    // runs we have (keyed by epoch), rebuild from what the server retains.
    store.lastSeq = 0;
    conn.historyWanted = true;
  } else if (store.epoch && msg.seq < store.lastSeq) {
    store.lastSeq = 0;     // should not happen within one epoch; start over
    conn.historyWanted = true;
  }
  store.epoch = msg.epoch;
  conn.resuming = true;
  conn.live = true;
  // since_seq is always sent, so `resumed` follows the replay; should it not
  // come, do not hold the outbox forever.
  clearTimeout(conn.resumeTimer);
  conn.resumeTimer = setTimeout(() => { if (conn.resuming && conn.live) onResumed({ complete: true }); }, 10000);
  conn.attempt = 0;
  setConnStatus('live', 'Live');
  saveSoon();
}

function onResumed(msg) {
  clearTimeout(conn.resumeTimer);
  conn.resuming = false;
  conn.resumeComplete = msg.complete !== false;
  if (!conn.resumeComplete || conn.historyWanted) {
    conn.historyWanted = false;
    requestHistory(0);
  }
  conn.send({ type: 'runs' });
  // Messages sent before a drop and never acknowledged: a complete replay
  // would have shown their run, so they were not processed; send again.
  for (const p of store.pending) {
    if (p.state === 'unknown') p.state = conn.resumeComplete ? 'queued' : 'failed';
  }
  flushPending();
  renderPending();
  saveSoon();
}

function requestHistory(since) {
  conn.send({ type: 'history', since_seq: since, limit: 1000 });
}

function onLiveEvent(ev) {
  if (ev.epoch && store.epoch && ev.epoch !== store.epoch) return;
  const last = store.lastSeq || 0;
  // Seen already (a resume overlaps what we have): skip, unless it is a merged
  // event that straddles the cursor, whose new part the run log keeps.
  if (ev.seq <= last) return;
  store.lastSeq = ev.seq;
  applyEvent(ev);
  saveSoon();
}

function onHistory(msg) {
  const events = Array.isArray(msg.events) ? msg.events : [];
  for (const ev of events) {
    if (typeof ev.seq !== 'number') continue;
    if (ev.epoch && store.epoch && ev.epoch !== store.epoch) continue;
    applyEvent(ev);       // history never moves the live cursor
  }
  if (events.length >= 1000) requestHistory(events[events.length - 1].seq);
  else markLostRuns();
  saveSoon();
}

let inFlight = null;    // run_ids the server says are running (last `runs` reply)
let inFlightSeq = 0;    // the stream position that reply describes

function onRuns(msg) {
  const runs = Array.isArray(msg.runs) ? msg.runs : [];
  inFlight = new Set(runs.map((r) => r.run_id));
  inFlightSeq = store.lastSeq;
  // A run in flight we never saw start (it began before what we retain):
  // fetch its events from its first seq.
  let since = Infinity;
  for (const r of runs) {
    const run = store.runs[runKey(r.run_id)];
    if (!run || !run.events.some((e) => e.type === 'agent_started')) {
      since = Math.min(since, Math.max(0, (r.first_seq || 1) - 1));
    }
  }
  if (since !== Infinity) requestHistory(since);
  else markLostRuns();
}

// Runs we show as running that the server no longer runs, whose completion we
// cannot get back (not retained): say so instead of spinning forever.
function markLostRuns() {
  if (!inFlight) return;
  for (const run of Object.values(store.runs)) {
    const f = foldRun(run);
    if (TERMINAL.has(f.status) || run.lost) continue;
    // Runs that started after the reply was written are not in it.
    if (run.epoch === store.epoch && !(firstSeq(run) <= inFlightSeq)) continue;
    const stale = run.epoch !== store.epoch || !inFlight.has(run.runId);
    if (stale && !conn.resuming && conn.live) {
      if (run.epoch === store.epoch && !run.lostChecked) {
        run.lostChecked = true;    // ask for the full history once first
        requestHistory(0);
        continue;
      }
      run.lost = true;
      renderRun(run);
    }
  }
  saveSoon();
}

function onAck(msg) {
  const i = store.pending.findIndex((p) => p.id === msg.id);
  if (i < 0) return;
  const p = store.pending[i];
  store.pending.splice(i, 1);
  if (msg.run_id) {
    const run = ensureRun(msg.run_id, p.threadId);
    if (run.localInput == null) run.localInput = p.text;
    renderRun(run);
  }
  renderPending();
  saveSoon();
}

function onError(msg) {
  const text = msg.message || msg.code || 'Error';
  // Replies come in order, so an error that refuses a run answers the oldest
  // message still waiting for its ack (the error carries no id today).
  const refusal = ['too_many_runs', 'no_agent', 'shutting_down'].includes(msg.code);
  const waiting = store.pending.find((x) => x.state === 'sent');
  if (msg.id || (refusal && waiting)) {
    const p = msg.id ? store.pending.find((x) => x.id === msg.id) : waiting;
    if (p) {
      p.state = 'failed';
      p.error = text;
      renderPending();
      saveSoon();
      return;
    }
  }
  if (msg.run_id && store.runs[runKey(msg.run_id)]) {
    const run = store.runs[runKey(msg.run_id)];
    run.cancelling = false;
    renderRun(run);
  }
  toast(text, msg.code);
}

// ---------------------------------------------------------------- run log

function runKey(runId, epoch = store.epoch) {
  return `${epoch || ''}|${runId}`;
}

function ensureRun(runId, threadId, order) {
  const key = runKey(runId);
  let run = store.runs[key];
  if (!run) {
    run = { key, runId, threadId, epoch: store.epoch, order: order || Date.now(), events: [] };
    store.runs[key] = run;
  }
  if (!run.threadId && threadId) run.threadId = threadId;
  ensureThread(run.threadId);
  return run;
}

const rangeOf = (e) => [e.seq_from ?? e.seq, e.seq];

// Adds ev to its run's log. Returns false when it was a duplicate.
function insertEvent(run, ev) {
  const entry = { seq: ev.seq, type: ev.type, data: ev.data ?? {}, ts: ev.ts };
  if (typeof ev.seq_from === 'number' && ev.seq_from < ev.seq) entry.seq_from = ev.seq_from;
  const [from, to] = rangeOf(entry);
  const overlap = run.events.filter((x) => { const [a, b] = rangeOf(x); return a <= to && b >= from; });
  if (overlap.length) {
    let covered = 0;
    for (const x of overlap) { const [a, b] = rangeOf(x); covered += Math.min(b, to) - Math.max(a, from) + 1; }
    if (covered >= to - from + 1) return false;          // everything in it is known
    const inside = overlap.every((x) => { const [a, b] = rangeOf(x); return a >= from && b <= to; });
    if (!inside || entry.type !== 'agent_message') {
      // A merged event that straddles one we have: cannot split deltas.
      // Rebuild this run from the server's history.
      run.events = run.events.filter((x) => x.type !== 'agent_message');
      requestHistory(0);
      return false;
    }
    // The merged event holds every delta of the ones it overlaps: replace them.
    run.events = run.events.filter((x) => !overlap.includes(x));
  }
  let i = run.events.length;
  while (i > 0 && run.events[i - 1].seq > entry.seq) i--;
  run.events.splice(i, 0, entry);
  return true;
}

function applyEvent(ev) {
  if (!ev.run_id) return;
  const known = store.runs[runKey(ev.run_id)];
  const run = ensureRun(ev.run_id, ev.thread_id, ev.ts);
  if (!known && ev.type === 'agent_started') adoptPending(run, ev);
  if (!insertEvent(run, ev)) return;
  if (ev.type === 'agent_started' && ev.ts) run.order = ev.ts;
  if (ev.type === 'agent_completed') run.cancelling = false;
  const t = threadById(run.threadId);
  if (t) {
    t.updatedAt = Math.max(t.updatedAt || 0, ev.ts || Date.now());
    if (ev.type === 'agent_started' && (!t.title || t.title === 'New thread')) t.title = titleOf(ev.data?.input);
  }
  renderRun(run);
  renderThreads();
  announce(run, ev);
}

// A run we did not get the ack for (the connection dropped in between, or
// another tab sent it): match it with the pending message it came from.
function adoptPending(run, ev) {
  const input = ev.data?.input;
  const i = store.pending.findIndex((p) => p.threadId === run.threadId && p.text === input &&
    (p.state === 'sent' || p.state === 'unknown'));
  if (i >= 0) {
    run.localInput = store.pending[i].text;
    store.pending.splice(i, 1);
    renderPending();
  }
}

// The run as shown: a fold over its log in seq order.
function foldRun(run) {
  const f = { input: run.localInput ?? null, agent: null, thoughts: [], tools: [], answer: '',
    status: 'running', finalText: null, error: null, started: false };
  const tools = new Map();
  for (const e of run.events) {
    const d = e.data || {};
    switch (e.type) {
      case 'agent_started':
        f.started = true;
        if (typeof d.input === 'string') f.input = d.input;
        f.agent = d.agent || null;
        break;
      case 'agent_thinking':
        if (d.text) f.thoughts.push(String(d.text));
        break;
      case 'tool_executing': {
        const id = d.call_id ?? `#${tools.size}`;
        const t = { id, tool: d.tool || 'tool', args: d.args, done: false, ok: null, result: undefined };
        tools.set(id, t);
        f.tools.push(t);
        break;
      }
      case 'tool_completed': {
        const id = d.call_id ?? [...tools.keys()].pop();
        let t = tools.get(id);
        if (!t) { t = { id, tool: d.tool || 'tool', args: undefined }; tools.set(id, t); f.tools.push(t); }
        t.done = true;
        t.ok = d.ok !== false;
        t.result = d.result;
        break;
      }
      case 'agent_message':
        if (typeof d.delta === 'string') f.answer += d.delta;
        break;
      case 'agent_completed':
        f.status = TERMINAL.has(d.status) ? d.status : 'failed';
        f.finalText = typeof d.text === 'string' ? d.text : null;
        f.error = d.error || null;
        break;
    }
  }
  if (f.status === 'running' && run.lost) f.status = 'lost';
  return f;
}

// ---------------------------------------------------------------- threads

function threadById(id) {
  return store.threads.find((t) => t.id === id);
}

function ensureThread(id) {
  if (!id) return null;
  let t = threadById(id);
  if (!t) {
    t = { id, title: 'New thread', createdAt: Date.now(), updatedAt: Date.now() };
    store.threads.push(t);
    if (!store.current) {
      store.current = id;
      renderTimeline();
    }
    renderThreads();
  }
  return t;
}

function titleOf(text) {
  const s = String(text || '').replace(/\s+/g, ' ').trim();
  if (!s) return 'New thread';
  return s.length > 48 ? s.slice(0, 47) + '…' : s;
}

function newThread() {
  const cur = threadById(store.current);
  if (cur && threadIsEmpty(cur.id)) { $('#composer-input').focus(); return; }
  const t = { id: randomId('t_'), title: 'New thread', createdAt: Date.now(), updatedAt: Date.now() };
  // Only one empty thread at a time.
  store.threads = store.threads.filter((x) => x.id === store.current ? !threadIsEmpty(x.id) : true);
  store.threads.push(t);
  selectThread(t.id);
  saveSoon();
  $('#composer-input').focus();
}

function threadIsEmpty(id) {
  return !Object.values(store.runs).some((r) => r.threadId === id) &&
    !store.pending.some((p) => p.threadId === id);
}

function selectThread(id) {
  store.current = id;
  renderThreads();
  renderTimeline();
  saveSoon();
}

function renderThreads() {
  if (!store) return;
  const list = $('#thread-list');
  const running = new Set(Object.values(store.runs)
    .filter((r) => foldRun(r).status === 'running').map((r) => r.threadId));
  const threads = [...store.threads].sort((a, b) => (b.updatedAt || 0) - (a.updatedAt || 0));
  list.replaceChildren(...threads.map((t) => {
    const btn = el('button', {
      type: 'button', class: 'thread-item', 'data-testid': 'thread-item', 'data-thread-id': t.id,
      'aria-current': t.id === store.current ? 'true' : null,
    }, el('span', { class: 'thread-name', text: t.title || 'New thread' }));
    if (running.has(t.id)) {
      btn.append(el('span', { class: 'thread-live', title: 'A run is in progress' },
        el('span', { class: 'sr-only', text: '(running)' })));
    }
    btn.addEventListener('click', () => selectThread(t.id));
    return el('li', {}, btn);
  }));
  const cur = threadById(store.current);
  $('#thread-title').textContent = cur ? cur.title || 'New thread' : 'New thread';
}

// ---------------------------------------------------------------- timeline

const runEls = new Map();      // run key -> element (current thread only)

function renderTimeline() {
  const tl = $('#timeline');
  runEls.clear();
  tl.replaceChildren($('#empty-state') || el('div'));
  const runs = Object.values(store.runs).filter((r) => r.threadId === store.current)
    .sort(compareRuns);
  for (const r of runs) renderRun(r, false);
  renderPending();
  updateEmpty();
  scrollToEnd(true);
}

const compareRuns = (a, b) => (a.order - b.order) || (firstSeq(a) - firstSeq(b));
const firstSeq = (r) => (r.events.length ? rangeOf(r.events[0])[0] : Infinity);

function updateEmpty() {
  const empty = $('#empty-state');
  if (empty) empty.hidden = runEls.size > 0 || store.pending.some((p) => p.threadId === store.current);
}

function renderRun(run, scroll = true) {
  if (run.threadId !== store.current) { renderThreads(); return; }
  const stick = isNearEnd();
  let node = runEls.get(run.key);
  if (!node) {
    node = buildRunEl(run);
    runEls.set(run.key, node);
    // Keep runs in order; new runs go before pending messages.
    const tl = $('#timeline');
    let before = tl.querySelector('.pending');
    for (const n of tl.querySelectorAll('.run[data-key]')) {
      const r = store.runs[n.dataset.key];
      if (r && r !== run && compareRuns(r, run) > 0) { before = n; break; }
    }
    tl.insertBefore(node, before || null);
    updateEmpty();
  }
  updateRunEl(run, node);
  if (scroll && stick) scrollToEnd();
}

function buildRunEl(run) {
  const cancel = el('button', { type: 'button', class: 'btn btn-ghost btn-small cancel', 'data-testid': 'cancel' }, 'Cancel');
  cancel.addEventListener('click', () => {
    if (conn.send({ type: 'cancel', run_id: run.runId })) {
      run.cancelling = true;
      updateRunEl(run, runEls.get(run.key));
    } else {
      toast('Not connected — cannot cancel right now.');
    }
  });
  return el('article', { class: 'run', 'data-testid': 'run', 'data-key': run.key, 'data-run-id': run.runId,
    'data-thread-id': run.threadId },
    el('div', { class: 'bubble user', 'data-testid': 'user-message' }),
    el('div', { class: 'agent' },
      el('div', { class: 'agent-head' },
        el('span', { class: 'avatar', 'aria-hidden': 'true' }),
        el('span', { class: 'agent-name' }),
        el('time', { class: 'run-time muted' })),
      el('div', { class: 'thinking', 'data-testid': 'thinking', hidden: true },
        el('span', { class: 'dots', 'aria-hidden': 'true' }, el('i'), el('i'), el('i')),
        el('span', { class: 'thinking-text' })),
      el('div', { class: 'tools' }),
      el('div', { class: 'answer', 'data-testid': 'answer', 'aria-live': 'polite', 'aria-busy': 'true' }),
      el('footer', { class: 'run-foot' },
        el('span', { class: 'run-status', 'data-testid': 'run-status', 'data-status': 'running' }),
        el('span', { class: 'run-error', 'data-testid': 'run-error', hidden: true }),
        cancel)));
}

function updateRunEl(run, node) {
  if (!node) return;
  const f = foldRun(run);
  node.dataset.status = f.status;
  setText(node.querySelector('[data-testid="user-message"]'), f.input ?? '');
  setText(node.querySelector('.agent-name'), f.agent ? `Agent · ${f.agent}` : 'Agent');
  const started = run.events.find((e) => e.type === 'agent_started');
  const time = node.querySelector('.run-time');
  if (started?.ts && !time.dateTime) {
    const d = new Date(started.ts);
    time.dateTime = d.toISOString();
    time.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  // Thinking: the latest thought, animated while the agent is still at it.
  const th = node.querySelector('[data-testid="thinking"]');
  const running = f.status === 'running';
  const thinkingNow = running && !f.answer && (f.tools.length === 0 || f.tools.every((t) => t.done));
  th.hidden = !(f.thoughts.length || (running && !f.answer && !f.tools.length));
  th.dataset.active = String(thinkingNow);
  setText(th.querySelector('.thinking-text'),
    f.thoughts.length ? (running ? f.thoughts[f.thoughts.length - 1] : f.thoughts.join(' · ')) : 'Thinking…');
  th.title = f.thoughts.join('\n');

  // Tool cards.
  const tools = node.querySelector('.tools');
  f.tools.forEach((t, i) => {
    let card = tools.children[i];
    if (!card) {
      card = el('section', { class: 'tool-card', 'data-testid': 'tool-card' },
        el('header', { class: 'tool-head' },
          el('span', { class: 'tool-icon', 'aria-hidden': 'true' }),
          el('span', { class: 'tool-name', 'data-testid': 'tool-name' }),
          el('span', { class: 'tool-state', 'data-testid': 'tool-state' })),
        el('dl', { class: 'tool-body' },
          el('dt', {}, 'Arguments'), el('dd', {}, el('pre', { 'data-testid': 'tool-args' })),
          el('dt', { class: 'result-label' }, 'Result'), el('dd', { class: 'result-value' }, el('pre', { 'data-testid': 'tool-result' }))));
      card.setAttribute('aria-label', `Tool ${t.tool}`);
      tools.append(card);
    }
    card.dataset.tool = t.tool;
    card.dataset.state = t.done ? (t.ok ? 'ok' : 'error') : 'running';
    setText(card.querySelector('.tool-name'), t.tool);
    setText(card.querySelector('.tool-state'), t.done ? (t.ok ? 'done' : 'failed') : 'running…');
    setText(card.querySelector('[data-testid="tool-args"]'), t.args === undefined ? '' : formatJson(t.args));
    setText(card.querySelector('[data-testid="tool-result"]'), t.done ? formatJson(t.result) : '…');
  });

  // The answer: deltas in seq order. The final text is authoritative; if the
  // stream and it disagree (history we could not get), show the final text.
  const ans = node.querySelector('[data-testid="answer"]');
  let text = f.answer;
  if (f.status === 'succeeded' && f.finalText && f.finalText !== text) {
    if (text) {
      console.warn('herald: streamed answer differs from the final text; showing the final text', run.runId);
      ans.dataset.reconciled = 'true';
    }
    text = f.finalText;
  }
  setText(ans, text);
  ans.hidden = !text;
  ans.dataset.streaming = String(running && !!text);
  ans.setAttribute('aria-busy', String(running));

  // Footer: state, error, cancel.
  const st = node.querySelector('[data-testid="run-status"]');
  st.dataset.status = f.status;
  const labels = { running: run.cancelling ? 'Cancelling…' : (f.started ? 'Running…' : 'Starting…'),
    succeeded: 'Completed', failed: 'Failed', cancelled: 'Cancelled', lost: 'Ended — details unavailable' };
  setText(st, labels[f.status] || f.status);
  const err = node.querySelector('[data-testid="run-error"]');
  setText(err, f.status === 'failed' ? (f.error || 'The run failed.') : '');
  err.hidden = f.status !== 'failed';
  const cancel = node.querySelector('[data-testid="cancel"]');
  cancel.hidden = f.status !== 'running';
  cancel.disabled = !!run.cancelling;
}

function setText(n, text) {
  if (n && n.textContent !== text) n.textContent = text;
}

function formatJson(v) {
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  try {
    const one = JSON.stringify(v);
    return one.length <= 72 ? one : JSON.stringify(v, null, 2);
  } catch { return String(v); }
}

// Pending messages: typed, not yet acknowledged by the server.
function renderPending() {
  if (!store) return;
  const tl = $('#timeline');
  for (const n of tl.querySelectorAll('.pending')) n.remove();
  for (const p of store.pending.filter((x) => x.threadId === store.current)) {
    const status = { queued: 'Waiting for connection…', sent: 'Sending…', unknown: 'Sending…',
      failed: p.error ? `Not sent: ${p.error}` : 'Not sent' }[p.state];
    const node = el('article', { class: 'run pending', 'data-testid': 'pending', 'data-state': p.state },
      el('div', { class: 'bubble user', 'data-testid': 'user-message', text: p.text }),
      el('div', { class: 'pending-status muted', text: status }));
    if (p.state === 'failed') {
      const retry = el('button', { type: 'button', class: 'btn btn-ghost btn-small' }, 'Retry');
      retry.addEventListener('click', () => { p.state = 'queued'; p.error = null; flushPending(); renderPending(); });
      const dismiss = el('button', { type: 'button', class: 'btn btn-ghost btn-small' }, 'Dismiss');
      dismiss.addEventListener('click', () => {
        store.pending = store.pending.filter((x) => x !== p); renderPending(); saveSoon();
      });
      node.querySelector('.pending-status').append(' ', retry, dismiss);
    }
    tl.append(node);
  }
  updateEmpty();
}

function isNearEnd() {
  const tl = $('#timeline');
  return tl.scrollHeight - tl.scrollTop - tl.clientHeight < 80;
}
function scrollToEnd(force) {
  const tl = $('#timeline');
  if (force || isNearEnd()) tl.scrollTop = tl.scrollHeight;
  requestAnimationFrame(() => { tl.scrollTop = tl.scrollHeight; });
}

// Screen readers: short notes on what the agent does (the answer region has
// its own aria-live and is announced once complete).
function announce(run, ev) {
  if (run.threadId !== store.current) return;
  const a = $('#announcer');
  if (ev.type === 'tool_executing') a.textContent = `Agent is using ${ev.data?.tool || 'a tool'}.`;
  else if (ev.type === 'agent_completed') {
    a.textContent = { succeeded: 'Run completed.', failed: 'Run failed.', cancelled: 'Run cancelled.' }[ev.data?.status] || '';
  }
}

// ---------------------------------------------------------------- composer

function onComposerKey(ev) {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    sendMessage();
  }
}

function autosize() {
  const ta = $('#composer-input');
  ta.style.height = 'auto';
  ta.style.height = Math.min(ta.scrollHeight, 200) + 'px';
}

function sendMessage() {
  const ta = $('#composer-input');
  const text = ta.value.trim();
  if (!text) return;
  if (!store.current || !threadById(store.current)) {
    const t = ensureThread(randomId('t_'));
    store.current = t.id;
  }
  const t = threadById(store.current);
  if (!t.title || t.title === 'New thread') t.title = titleOf(text);
  t.updatedAt = Date.now();
  store.pending.push({ id: randomId('m_'), threadId: store.current, text, ts: Date.now(), state: 'queued' });
  ta.value = '';
  autosize();
  flushPending();
  renderThreads();
  renderPending();
  scrollToEnd(true);
  saveSoon();
}

function flushPending() {
  if (!conn.live || conn.resuming) return;
  for (const p of store.pending) {
    if (p.state !== 'queued') continue;
    if (!conn.send({ type: 'user_message', id: p.id, thread_id: p.threadId, text: p.text })) break;
    p.state = 'sent';
    p.sentAt = Date.now();
    setTimeout(() => {
      if (p.state === 'sent' && store?.pending.includes(p)) {
        p.state = 'failed';
        p.error = 'no reply from the server';
        renderPending();
      }
    }, ACK_TIMEOUT_MS);
  }
  renderPending();
}

function updateComposer() {
  const live = document.body.dataset.conn === 'live';
  $('#send').title = live ? 'Send (Enter)' : 'Will send when connected';
}

// ---------------------------------------------------------------- toasts

function toast(text, code) {
  const box = $('#toasts');
  const t = el('div', { class: 'toast', 'data-testid': 'error-toast', 'data-code': code || null },
    el('span', { text }),
    el('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss' }, '×'));
  t.querySelector('button').addEventListener('click', () => t.remove());
  box.append(t);
  setTimeout(() => t.remove(), 6000);
  while (box.children.length > 3) box.firstChild.remove();
}

// ---------------------------------------------------------------- start

function startChat(s) {
  session = s;
  store = loadStore(s.user_id);
  // No thread yet: the first message creates one (or the first thread the
  // server's history brings in is opened).
  if (!threadById(store.current)) store.current = store.threads.length ? store.threads[store.threads.length - 1].id : null;
  $('#login-view').hidden = true;
  $('#chat-view').hidden = false;
  $('#current-user').textContent = s.user_id;
  renderThreads();
  renderTimeline();
  inFlight = null;
  conn.start();
  clearTimeout(expiryTimer);
  if (s.expires_at) {
    const ms = s.expires_at * 1000 - Date.now();
    if (ms < 2 ** 31) expiryTimer = setTimeout(() => signOut('Your session expired. Please sign in again.'), Math.max(0, ms));
  }
  $('#composer-input').focus();
}

// Another tab of the same user created a thread: show it here too.
addEventListener('storage', (ev) => {
  if (!session || !store || ev.key !== STORE_PREFIX + session.user_id || !ev.newValue) return;
  try {
    const other = JSON.parse(ev.newValue);
    let changed = false;
    for (const t of other.threads || []) if (!threadById(t.id)) { store.threads.push(t); changed = true; }
    if (changed) renderThreads();
  } catch { /* ignore */ }
});

function init() {
  $('#login-form').addEventListener('submit', onLogin);
  $('#logout').addEventListener('click', () => signOut());
  $('#new-thread').addEventListener('click', newThread);
  $('#composer').addEventListener('submit', (e) => { e.preventDefault(); sendMessage(); });
  $('#composer-input').addEventListener('keydown', onComposerKey);
  $('#composer-input').addEventListener('input', autosize);
  const s = loadSession();
  if (s) startChat(s);
  else showLogin();
}

// A small hook for tests and debugging.
window.__herald = {
  dropConnection: () => conn.drop(),
  get connected() { return conn.live; },
  get lastSeq() { return store?.lastSeq ?? 0; },
  get epoch() { return store?.epoch ?? null; },
  get token() { return session?.token ?? null; },
};

init();
