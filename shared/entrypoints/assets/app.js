// AOS dashboard: plain JavaScript, no build step, served from the binary.
//
// Rules kept here:
// - The token is kept in sessionStorage (this tab only) and sent only as an
//   `Authorization: Bearer` header, never in a URL. The event stream needs that header,
//   so it is read with fetch() and parsed here (EventSource cannot send headers).
// - Every string from the API reaches the page as text (textContent, text nodes);
//   nothing is ever parsed as HTML.
'use strict';

const DEMO = "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?";
const PAYMENT = 'Pay 120 EUR to ACME Ltd for invoice 42';
const STATUSES = ['queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled'];
const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
// Marks on an agent's lane, as `aos run` draws them.
const MARKS = {
  submitted: '▶', woke: '●', delegated: '→', replied: '↩', answer: '✔', failed: '✖',
  dead_lettered: '✖', cancelled: '⊘', approval_requested: '⚑', approval_decided: '✓',
  scheduled: '◷', waiting: '☾', model: '◆', tool_call: '⚙', ignored: '·',
};
const LABELS = {
  submitted: 'submitted', woke: 'woke', model: 'model call', tool_call: 'tool call',
  delegated: 'delegated', replied: 'replied', scheduled: 'scheduled', waiting: 'waiting',
  answer: 'answer', failed: 'failed', ignored: 'ignored', dead_lettered: 'dead-lettered',
  cancelled: 'cancelled', approval_requested: 'approval asked', approval_decided: 'approval decided',
};

const S = {
  token: sessionStorage.getItem('aos.token') || '',
  base: sessionStorage.getItem('aos.base') || '',
  agents: [],
  timers: [],
  abort: null,
  filter: '',
};

// ------------------------------------------------------------------ DOM helpers

/** An element with attributes and children; strings become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);

function toast(text, kind = 'info') {
  const t = $('#toast');
  t.textContent = text;
  t.className = `toast ${kind}`;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

// ------------------------------------------------------------------ formatting

function dollars(micros) {
  const d = (micros || 0) / 1e6;
  return micros < 10000 ? `$${d.toFixed(6)}` : `$${d.toFixed(4)}`;
}

function ms(n) {
  if (n < 1000) return `${n} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
  return `${Math.floor(n / 60000)} min ${Math.round((n % 60000) / 1000)} s`;
}

function ago(at) {
  const d = Date.now() - at;
  if (d < 5000) return 'just now';
  if (d < 60000) return `${Math.round(d / 1000)} s ago`;
  if (d < 3600000) return `${Math.round(d / 60000)} min ago`;
  if (d < 86400000) return `${Math.round(d / 3600000)} h ago`;
  return new Date(at).toLocaleString();
}

function tokens(u) {
  return (u.input_tokens || 0) + (u.output_tokens || 0) + (u.cache_read_tokens || 0) + (u.cache_write_tokens || 0);
}

function short(text, n) {
  const t = String(text ?? '').replace(/\s+/g, ' ').trim();
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

function pretty(v) {
  try { return JSON.stringify(v, null, 2); } catch { return String(v); }
}

const badge = (status) => h('span', { class: `status s-${status}`, text: status });

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

function defaultBase() {
  return location.origin + location.pathname.replace(/[^/]*$/, '');
}

function apiUrl(path) {
  const base = S.base || defaultBase();
  return base.replace(/\/*$/, '/') + path;
}

async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${S.token}`, Accept: 'application/json', ...(opts.headers || {}) };
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let res;
  try {
    res = await fetch(apiUrl(path), {
      method: opts.method || 'GET', headers, body, cache: 'no-store', credentials: 'omit',
      referrerPolicy: 'no-referrer', signal: opts.signal,
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `could not reach the API at ${apiUrl('')} (${e.message})`);
  }
  const type = res.headers.get('content-type') || '';
  const data = type.includes('json') ? await res.json().catch(() => null) : null;
  if (res.status === 401 && !opts.login) {
    signOut('The API refused the token (missing, invalid or expired). Sign in again.');
  }
  if (!res.ok) {
    throw new ApiError(res.status, (data && (data.detail || data.title)) || `${res.status} ${res.statusText}`);
  }
  return data;
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/**
 * Follows a task's event stream (server-sent events over fetch, so the token goes in
 * a header), reconnecting with Last-Event-ID until the `end` event arrives.
 */
async function follow(taskId, signal, onEvent, onEnd) {
  let last = null;
  let failures = 0;
  while (!signal.aborted) {
    const headers = { Authorization: `Bearer ${S.token}`, Accept: 'text/event-stream' };
    if (last) headers['Last-Event-ID'] = last;
    let ended = false;
    try {
      const res = await fetch(apiUrl(`v1/tasks/${encodeURIComponent(taskId)}/events/stream`), {
        headers, signal, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
      });
      if (res.status === 401) { signOut('The API refused the token. Sign in again.'); return; }
      if (!res.ok) throw new ApiError(res.status, `event stream: ${res.status}`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, '\n');
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const msg = parseSse(block);
          if (!msg) continue;
          if (msg.id) last = msg.id;
          if (msg.event === 'end') { ended = true; onEnd(JSON.parse(msg.data)); }
          else if (msg.event === 'event') onEvent(JSON.parse(msg.data));
        }
      }
      failures = 0;
    } catch (e) {
      if (signal.aborted) return;
      failures += 1;
    }
    if (ended) return;
    // The stream closed before the end (a proxy's time limit): resume after the last id.
    await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** failures, 5000)));
  }
}

/** One server-sent event block: `{event, data, id}`, or null for a comment. */
function parseSse(block) {
  const msg = { event: 'message', data: [], id: null };
  let any = false;
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') { msg.data.push(value); any = true; }
    else if (field === 'event') msg.event = value;
    else if (field === 'id') msg.id = value;
  }
  if (!any) return null;
  msg.data = msg.data.join('\n');
  return msg;
}

// ------------------------------------------------------------------ session

function claims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
  } catch { return {}; }
}

function signOut(message) {
  S.token = '';
  sessionStorage.removeItem('aos.token');
  stopView();
  showLogin(message);
}

function showLogin(message) {
  $('#nav').hidden = true;
  $('#sign-out').hidden = true;
  $('#who').textContent = '';
  $('#view').replaceChildren();
  $('#login').hidden = false;
  $('#api-base').placeholder = `this page's API (${defaultBase()})`;
  $('#api-base').value = S.base;
  $('#login-error').textContent = message || '';
  document.body.dataset.view = 'login';
  $('#token').focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $('#token').value.trim();
  let base = $('#api-base').value.trim();
  if (base && !/^https?:\/\//.test(base)) base = `https://${base}`;
  if (base) {
    try { base = new URL(base).href; } catch {
      $('#login-error').textContent = `"${base}" is not a URL; leave it empty for this page's own API.`;
      return;
    }
  }
  const button = $('#login-submit');
  button.disabled = true;
  $('#login-error').textContent = '';
  S.token = token;
  S.base = base;
  try {
    const list = await api('v1/agents', { login: true });
    S.agents = list.agents;
    sessionStorage.setItem('aos.token', token);
    sessionStorage.setItem('aos.base', base);
    $('#token').value = '';
    started();
    if (!location.hash || location.hash === '#/' || location.hash === '#') location.hash = '#/tasks';
    else route();
  } catch (e) {
    S.token = '';
    $('#login-error').textContent = e.status === 401
      ? 'The API refused this token: it is not signed with this server\'s secret, or it expired.'
      : e.status === 0 && base
        ? `${e.message}. An API on another origin must allow this page (CORS); or open the dashboard that API serves at its own /.`
        : e.message;
  } finally {
    button.disabled = false;
  }
}

function started() {
  $('#login').hidden = true;
  $('#nav').hidden = false;
  $('#sign-out').hidden = false;
  const c = claims(S.token);
  const where = S.base ? ` @ ${new URL(S.base).host}` : '';
  $('#who').textContent = `${c.sub || '?'} · ${c.tenant || '?'} · ${c.scope || '?'}${where}`;
  $('#who').title = c.exp ? `token expires ${new Date(c.exp * 1000).toLocaleString()}` : '';
  refreshBadge();
  clearInterval(S.badgeTimer);
  S.badgeTimer = setInterval(refreshBadge, 3000);
}

async function refreshBadge() {
  if (!S.token) return;
  try {
    const { approvals } = await api('v1/approvals?limit=100');
    const b = $('#approvals-badge');
    b.textContent = String(approvals.length);
    b.hidden = approvals.length === 0;
  } catch { /* shown by the view that needs it */ }
}

async function loadAgents() {
  const list = await api('v1/agents');
  S.agents = list.agents;
  return S.agents;
}

// ------------------------------------------------------------------ routing

function stopView() {
  S.timers.forEach(clearInterval);
  S.timers = [];
  if (S.abort) S.abort.abort();
  S.abort = null;
}

function every(ms, fn) {
  S.timers.push(setInterval(fn, ms));
}

function route() {
  if (!S.token) { showLogin(); return; }
  stopView();
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const [name, arg] = [parts[0] || 'tasks', parts[1] ? decodeURIComponent(parts[1]) : null];
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === name);
  }
  document.body.dataset.view = name;
  const view = $('#view');
  view.replaceChildren();
  window.scrollTo(0, 0);
  if (name === 'tasks' && arg) taskView(view, arg);
  else if (name === 'tasks') tasksView(view);
  else if (name === 'agents') agentsView(view);
  else if (name === 'approvals') approvalsView(view);
  else if (name === 'dead-letters') deadLettersView(view);
  else view.append(h('p', { class: 'card error', text: `No view "${name}".` }));
}

function failure(e) {
  return h('p', { class: 'error', text: e.status === 403 ? `Your token's scope does not allow this: ${e.message}` : e.message });
}

// ------------------------------------------------------------------ tasks

function tasksView(view) {
  const agentSelect = h('select', { id: 'task-agent', name: 'agent' });
  const fillAgents = () => {
    const current = agentSelect.value || 'primary';
    agentSelect.replaceChildren(...S.agents.map((a) => h('option', { value: a.name, text: a.name })));
    agentSelect.value = S.agents.some((a) => a.name === current) ? current : (S.agents[0] || {}).name;
  };
  fillAgents();
  const input = h('textarea', { id: 'task-input', name: 'input', rows: 2, required: true, spellcheck: 'false' });
  input.value = DEMO;
  const submit = h('button', { id: 'task-submit', type: 'submit', text: 'Run' });
  const error = h('p', { class: 'error', role: 'alert' });
  const example = (label, agent, text) => h('button', {
    type: 'button', class: 'chip',
    onclick: () => { agentSelect.value = agent; input.value = text; input.focus(); },
  }, label);
  const form = h('form', { id: 'task-form', class: 'card submit', autocomplete: 'off' },
    h('h2', {}, 'New task'),
    h('div', { class: 'row' },
      h('label', { class: 'agent' }, 'Agent', agentSelect),
      h('label', { class: 'grow' }, 'Request', input)),
    h('div', { class: 'row actions' },
      example('Demo: three agents', 'primary', DEMO),
      example('Payment: needs approval', 'finance', PAYMENT),
      h('span', { class: 'grow' }),
      submit),
    error);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    error.textContent = '';
    try {
      const task = await api('v1/tasks', {
        method: 'POST', body: { input: input.value, agent: agentSelect.value },
        headers: { 'Idempotency-Key': newKey() },
      });
      location.hash = `#/tasks/${task.id}`;
    } catch (e) {
      error.textContent = e.message;
    } finally {
      submit.disabled = false;
    }
  });

  const summary = h('div', { class: 'summary', id: 'status-summary' });
  const list = h('div', { class: 'tasks', id: 'task-list' });
  const more = h('button', { type: 'button', class: 'ghost', hidden: true, text: 'Older tasks' });
  const listError = h('p', { class: 'error' });
  view.append(form, h('section', { class: 'card' },
    h('h2', {}, 'Tasks'), summary, listError, list, more));

  // `recent`: the newest tasks of every status, for the counts; `tasks`: the list shown
  // (of one status when a filter is on), with any older pages the person asked for.
  const PAGE = 200;
  let recent = { tasks: [], next_cursor: null };
  let tasks = [];
  let next = null;
  const draw = () => {
    const by = {};
    for (const t of recent.tasks) {
      by[t.status] = by[t.status] || { n: 0, cost: 0 };
      by[t.status].n += 1;
      by[t.status].cost += t.usage.cost_micros || 0;
    }
    const chip = (status, label, n, cost) => h('button', {
      type: 'button', class: `stat${S.filter === status ? ' active' : ''}`, dataset: { status: status || 'all' },
      onclick: () => { S.filter = status; tasks = []; next = null; refresh(); },
    }, h('span', { class: 'stat-n', text: String(n) }), h('span', { class: 'stat-l' }, label), h('span', { class: 'stat-c', text: dollars(cost) }));
    const total = recent.tasks.reduce((a, t) => a + (t.usage.cost_micros || 0), 0);
    summary.replaceChildren(
      chip('', 'all', recent.tasks.length, total),
      ...STATUSES.map((s) => chip(s, s, by[s] ? by[s].n : 0, by[s] ? by[s].cost : 0)),
      recent.next_cursor ? h('span', { class: 'muted', text: `counts of the ${PAGE} newest tasks` }) : null);
    list.replaceChildren(...(tasks.length ? tasks.map(taskRow)
      : [h('p', { class: 'muted', text: S.filter ? `No ${S.filter} tasks.` : 'No tasks yet: run one above.' })]));
    more.hidden = !next;
  };
  const refresh = async () => {
    try {
      const filter = S.filter;
      recent = await api(`v1/tasks?limit=${PAGE}`);
      const page = filter ? await api(`v1/tasks?limit=${PAGE}&status=${filter}`) : recent;
      if (filter !== S.filter) return;
      // Keep the older pages loaded before, below this first page.
      const last = page.tasks.length ? page.tasks[page.tasks.length - 1].id : '';
      const older = tasks.filter((t) => t.id < last);
      tasks = page.tasks.concat(older);
      if (!older.length) next = page.next_cursor || null;
      listError.textContent = '';
      draw();
    } catch (e) { listError.textContent = e.message; }
  };
  more.addEventListener('click', async () => {
    try {
      const q = S.filter ? `&status=${S.filter}` : '';
      const page = await api(`v1/tasks?limit=${PAGE}${q}&cursor=${encodeURIComponent(next)}`);
      tasks = tasks.concat(page.tasks);
      next = page.next_cursor || null;
      draw();
    } catch (e) { listError.textContent = e.message; }
  });
  refresh();
  loadAgents().then(fillAgents).catch(() => {});
  every(4000, refresh);
}

function taskRow(t) {
  return h('a', { class: 'task-row', href: `#/tasks/${t.id}`, dataset: { id: t.id, status: t.status } },
    badge(t.status),
    h('span', { class: 'agent-name', text: t.agent }),
    h('span', { class: 'input', text: short(t.input, 120) }),
    h('span', { class: 'num tok', text: `${tokens(t.usage)} tok` }),
    h('span', { class: 'num cost', text: dollars(t.usage.cost_micros) }),
    h('span', { class: 'when', text: ago(t.created_at) }));
}

// ------------------------------------------------------------------ one task

function taskView(view, id) {
  const T = { task: null, events: [], seen: new Set(), streamed: 0, ended: false };
  const root = h('div', { id: 'task-view', dataset: { task: id, events: '0', lanes: '', status: '' } });
  const head = h('section', { class: 'card task-head' });
  const approvals = h('div', { id: 'task-approvals' });
  const timeline = h('section', { class: 'card', id: 'timeline' });
  const answer = h('section', { class: 'card', id: 'answer', hidden: true });
  const steps = h('section', { class: 'card', id: 'steps' });
  const flow = h('section', { class: 'card', id: 'flow' });
  root.append(head, approvals, timeline, answer, h('div', { class: 'two' }, steps, flow));
  view.append(root);

  const drawHead = () => {
    const t = T.task;
    if (!t) return;
    const u = t.usage;
    const cancel = !FINAL.has(t.status) && h('button', {
      type: 'button', class: 'ghost danger',
      onclick: async (ev) => {
        ev.target.disabled = true;
        try { T.task = await api(`v1/tasks/${t.id}/cancel`, { method: 'POST', body: {} }); drawHead(); }
        catch (e) { toast(e.message, 'bad'); ev.target.disabled = false; }
      },
    }, 'Cancel');
    const status = h('span', { id: 'task-status', class: `status s-${t.status}`, text: t.status });
    root.dataset.status = t.status;
    head.replaceChildren(
      h('div', { class: 'row' },
        h('a', { href: '#/tasks', class: 'back', text: '← Tasks' }),
        h('h2', { class: 'grow' }, 'Task ', h('code', { text: t.id })),
        !T.ended && !FINAL.has(t.status) ? h('span', { class: 'live', text: 'live' }) : null,
        status, cancel),
      h('p', { class: 'request' }, h('span', { class: 'agent-name', text: t.agent }), ' ', h('span', { text: t.input })),
      h('dl', { class: 'usage' },
        ...[['wakes', u.wakes], ['model calls', u.llm_calls], ['tool calls', u.tool_calls],
          ['tokens', tokens(u)], ['cost', dollars(u.cost_micros)],
          ['time', ms(Math.max(0, (FINAL.has(t.status) ? t.updated_at : Date.now()) - t.created_at))]]
          .map(([k, v]) => h('div', {}, h('dt', { text: k }), h('dd', { text: String(v) })))));
    if (t.result || t.error) {
      answer.hidden = false;
      answer.replaceChildren(
        h('h3', {}, t.result ? 'Answer' : 'Why it stopped'),
        h('pre', { class: t.result ? 'result' : 'result error', id: 'task-result', text: t.result || t.error }));
    }
  };

  const drawEvents = () => {
    drawTimeline(timeline, T.task, T.events);
    drawSteps(steps, T.task, T.events);
    drawFlow(flow, T.task, T.events);
    root.dataset.events = String(T.events.length);
    root.dataset.streamed = String(T.streamed);
    root.dataset.lanes = lanesOf(T.events).join(',');
  };

  let frame = 0;
  const redraw = () => {
    if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; drawHead(); drawEvents(); });
  };
  let fetching = null;
  const refreshTask = () => {
    if (fetching) return fetching;
    fetching = api(`v1/tasks/${encodeURIComponent(id)}`)
      .then((t) => { T.task = t; redraw(); })
      .catch((e) => { head.replaceChildren(failure(e)); })
      .finally(() => { fetching = null; });
    return fetching;
  };
  const cards = new Map();
  const refreshApprovals = async () => {
    if (T.task && FINAL.has(T.task.status)) { approvals.replaceChildren(); return; }
    try {
      const { approvals: all } = await api('v1/approvals?limit=100');
      const mine = all.filter((a) => a.task === id);
      syncCards(approvals, cards, mine, (a) => approvalCard(a, () => { refreshApprovals(); refreshTask(); }));
    } catch { /* the approvals view says why */ }
  };

  const abort = new AbortController();
  S.abort = abort;
  refreshTask().then(() => {
    if (!T.task) return;
    follow(id, abort.signal, (e) => {
      if (T.seen.has(e.id)) return;
      T.seen.add(e.id);
      T.events.push(e);
      T.streamed += 1;
      redraw();
      // Status and usage move with the events; read the task at most twice a second.
      if (!refreshTask.pending) {
        refreshTask.pending = setTimeout(() => { refreshTask.pending = null; refreshTask(); }, 400);
      }
      if (e.kind === 'approval_requested' || e.kind === 'approval_decided') refreshApprovals();
    }, async (end) => {
      T.ended = true;
      // The final word: the task as stored and its whole timeline. A read already in
      // flight may predate the end, so wait it out and read again.
      if (fetching) { try { await fetching; } catch { /* read again below */ } }
      await refreshTask();
      if (T.task && end && end.status && T.task.status !== end.status) {
        T.task = { ...T.task, status: end.status };
      }
      try {
        const { events } = await api(`v1/tasks/${encodeURIComponent(id)}/events`);
        for (const e of events) if (!T.seen.has(e.id)) { T.seen.add(e.id); T.events.push(e); }
      } catch { /* the streamed events stand */ }
      approvals.replaceChildren();
      // Drawn now, not at the next animation frame: `ended` marks a page that shows
      // the final state.
      drawHead();
      drawEvents();
      root.dataset.ended = '1';
    });
  });
  refreshApprovals();
  every(2000, () => { if (!T.ended) { refreshApprovals(); redraw(); } });
}

/** Agents in order of first appearance, as lanes. */
function lanesOf(events) {
  const lanes = [];
  for (const e of events) if (!lanes.includes(e.agent)) lanes.push(e.agent);
  return lanes;
}

function sorted(events) {
  return events.map((e, i) => [e, i]).sort((a, b) => a[0].at - b[0].at || a[1] - b[1]).map((x) => x[0]);
}

function drawTimeline(card, task, events) {
  if (!task) return;
  const t0 = task.created_at;
  const end = Math.max(t0 + 1, ...events.map((e) => e.at));
  const span = end - t0;
  const u = task.usage;
  const cost = u.cost_micros > 0 ? `, ${dollars(u.cost_micros)}` : '';
  const pos = (at) => `${((at - t0) / span) * 100}%`;
  const lanes = lanesOf(events);
  const rows = lanes.map((lane) => {
    const mine = events.filter((e) => e.agent === lane);
    const track = h('div', { class: 'track' });
    // A wake: from the first to the last event its envelope wrote on this lane.
    const wakes = new Map();
    for (const e of mine) {
      if (!e.envelope || e.kind === 'submitted') continue;
      const w = wakes.get(e.envelope) || { from: e.at, to: e.at };
      w.from = Math.min(w.from, e.at);
      w.to = Math.max(w.to, e.at);
      wakes.set(e.envelope, w);
    }
    for (const w of wakes.values()) {
      // A wake too short to see is shown by its marks alone.
      if ((w.to - w.from) / span < 0.01) continue;
      const bar = h('span', { class: 'wake' });
      bar.style.left = pos(w.from);
      bar.style.width = `${((w.to - w.from) / span) * 100}%`;
      track.append(bar);
    }
    // Events close in time (a wake's steps share a moment) read left to right in one
    // pill, anchored so that it never leaves the track.
    let cluster = null;
    for (const e of mine) {
      const sym = MARKS[e.kind];
      if (!sym || e.kind === 'waiting' || e.kind === 'ignored') continue;
      if (!cluster || (e.at - cluster.at) / span > 0.03) {
        const p = ((e.at - t0) / span) * 100;
        cluster = { at: e.at, el: h('span', { class: 'cluster' }) };
        cluster.el.style.left = `${p}%`;
        cluster.el.style.transform = `translate(-${p}%, -50%)`;
        track.append(cluster.el);
      }
      const small = e.kind === 'model' || e.kind === 'tool_call';
      cluster.el.append(h('span', {
        class: `mark k-${e.kind}${small ? ' small' : ''}`,
        title: `+${e.at - t0} ms · ${lane} · ${LABELS[e.kind] || e.kind}: ${short(readable(e), 200)}`,
        text: sym,
      }));
    }
    return h('div', { class: 'lane', dataset: { agent: lane } }, h('span', { class: 'lane-name', text: lane }), track);
  });
  card.replaceChildren(
    h('h3', {}, 'Timeline'),
    h('p', { class: 'tl-summary', id: 'timeline-summary',
      text: `${ms(span)} · ${u.wakes} wakes · ${u.llm_calls} model calls · ${u.tool_calls} tool calls · ${tokens(u)} tokens${cost}` }),
    h('div', { class: 'lanes' },
      h('div', { class: 'lane scale' }, h('span', { class: 'lane-name' }), h('div', { class: 'ticks' }, h('span', { text: '0 ms' }), h('span', { text: ms(span) }))),
      rows.length ? rows : h('p', { class: 'muted', text: 'Waiting for the first event…' })),
    h('p', { class: 'legend' },
      ...['submitted', 'woke', 'model', 'tool_call', 'delegated', 'replied', 'approval_requested', 'answer', 'failed']
        .map((k) => h('span', {}, h('span', { class: `mark-inline k-${k}`, text: MARKS[k] }), ` ${LABELS[k]}`))));
}

/** `name({args}) → result`, as the kernel writes a tool call. */
function parseToolCall(detail) {
  const open = detail.indexOf('(');
  const arrow = detail.indexOf(') → ');
  if (open <= 0 || arrow < open) return null;
  const args = detail.slice(open + 1, arrow);
  let parsed;
  try { parsed = JSON.parse(args); } catch { parsed = undefined; }
  return { name: detail.slice(0, open), args: parsed === undefined ? args : pretty(parsed), result: detail.slice(arrow + 4) };
}

function parseJson(text) {
  try { return JSON.parse(text); } catch { return null; }
}

/** An event's detail as a person reads it (approvals are stored as JSON). */
function readable(e) {
  if (e.kind === 'approval_requested') {
    const r = parseJson(e.detail);
    return r ? `approval needed: ${r.tool}(${JSON.stringify(r.arguments)})` : e.detail;
  }
  if (e.kind === 'approval_decided') {
    const d = parseJson(e.detail);
    return d ? `${d.approved ? 'approved' : 'denied'} by ${d.by}${d.note ? `: ${d.note}` : ''}` : e.detail;
  }
  return e.detail;
}

function drawSteps(card, task, events) {
  if (!task) return;
  const t0 = task.created_at;
  const steps = sorted(events).filter((e) => e.kind === 'model' || e.kind === 'tool_call');
  const rows = steps.map((e) => {
    const when = h('span', { class: 'when', text: `+${ms(e.at - t0)}` });
    const who = h('span', { class: 'agent-name', text: e.agent });
    if (e.kind === 'model') {
      return h('div', { class: 'step model' }, when, who, h('span', { class: 'mark-inline k-model', text: MARKS.model }),
        h('div', { class: 'what' }, h('span', { class: 'label', text: 'model ' }), h('span', { text: e.detail })));
    }
    const call = parseToolCall(e.detail);
    return h('div', { class: 'step tool' }, when, who, h('span', { class: 'mark-inline k-tool_call', text: MARKS.tool_call }),
      call
        ? h('div', { class: 'what' }, h('code', { class: 'tool-name', text: call.name }),
          h('pre', { class: 'args', text: call.args }),
          h('div', { class: 'result-line' }, '→ ', h('span', { text: call.result })))
        : h('div', { class: 'what', text: e.detail }));
  });
  card.replaceChildren(h('h3', {}, `Model and tool calls (${steps.length})`),
    rows.length ? h('div', { class: 'steps' }, rows) : h('p', { class: 'muted', text: 'None yet.' }));
}

function drawFlow(card, task, events) {
  if (!task) return;
  const t0 = task.created_at;
  const rows = [];
  for (const e of sorted(events)) {
    let line;
    if (e.kind === 'submitted') line = ['user', '⇒', e.detail];
    else if (e.kind === 'delegated') line = [e.agent, '→', e.detail.replace(/^→\s*/, '')];
    else if (e.kind === 'replied') line = [e.agent, '↩', e.detail.replace(/^→\s*/, '')];
    else if (e.kind === 'answer') line = [e.agent, '⇒', `user: answer (${e.detail.length} chars)`];
    else if (e.kind === 'failed' || e.kind === 'dead_lettered' || e.kind === 'cancelled') line = [e.agent, '✖', e.detail];
    else if (e.kind === 'approval_requested' || e.kind === 'approval_decided') line = [e.agent, MARKS[e.kind], readable(e)];
    else if (e.kind === 'scheduled') line = [e.agent, MARKS.scheduled, e.detail];
    else continue;
    rows.push(h('div', { class: `msg k-${e.kind}` },
      h('span', { class: 'when', text: `+${ms(e.at - t0)}` }),
      h('span', { class: 'agent-name', text: line[0] }),
      h('span', { class: 'arrow', text: line[1] }),
      h('span', { class: 'what', text: short(line[2], 400) })));
  }
  card.replaceChildren(h('h3', {}, 'Messages between agents'),
    rows.length ? h('div', { class: 'msgs' }, rows) : h('p', { class: 'muted', text: 'None yet.' }));
}

// ------------------------------------------------------------------ approvals

function approvalCard(a, after) {
  const note = h('input', { type: 'text', class: 'note', placeholder: 'Note (optional)', maxlength: 500 });
  const error = h('p', { class: 'error', role: 'alert' });
  const decide = (verb) => async () => {
    for (const b of card.querySelectorAll('button')) b.disabled = true;
    error.textContent = '';
    try {
      const body = note.value.trim() ? { note: note.value.trim() } : {};
      await api(`v1/approvals/${encodeURIComponent(a.id)}/${verb}`, { method: 'POST', body });
      toast(verb === 'approve' ? `Approved: ${a.tool} runs once.` : `Denied: ${a.tool} will not run.`, verb === 'approve' ? 'good' : 'info');
      card.remove();
      refreshBadge();
      if (after) after();
    } catch (e) {
      error.textContent = e.message;
      for (const b of card.querySelectorAll('button')) b.disabled = false;
    }
  };
  const card = h('article', { class: 'card approval', dataset: { approval: a.id, tool: a.tool } },
    h('div', { class: 'row' },
      h('span', { class: 'mark-inline k-approval_requested', text: MARKS.approval_requested }),
      h('h3', { class: 'grow' }, h('span', { class: 'agent-name', text: a.agent }), ' wants to run ', h('code', { text: a.tool })),
      h('span', { class: 'when', text: `asked ${ago(a.asked_at)}` })),
    h('pre', { class: 'args', text: pretty(a.arguments) }),
    a.reason ? h('p', {}, h('span', { class: 'label', text: 'Why: ' }), h('span', { text: a.reason })) : null,
    h('p', { class: 'muted' }, 'Task ', h('a', { href: `#/tasks/${a.task}`, text: short(a.task_input, 100) }),
      ` · expires ${new Date(a.expires_at).toLocaleString()}`),
    h('div', { class: 'row actions' }, note,
      h('button', { type: 'button', class: 'approve', onclick: decide('approve') }, 'Approve'),
      h('button', { type: 'button', class: 'deny', onclick: decide('deny') }, 'Deny')),
    error);
  return card;
}

/** One card per item, keeping the cards already shown (and what is typed in them). */
function syncCards(list, cards, items, make, empty) {
  const ids = new Set(items.map((a) => a.id));
  let changed = false;
  for (const id of [...cards.keys()]) if (!ids.has(id)) { cards.delete(id); changed = true; }
  for (const a of items) if (!cards.has(a.id)) { cards.set(a.id, make(a)); changed = true; }
  if (changed || !list.firstChild) {
    list.replaceChildren(...(items.length ? items.map((a) => cards.get(a.id)) : empty ? [empty] : []));
  }
}

function approvalsView(view) {
  const list = h('div', { id: 'approval-list' });
  const error = h('p', { class: 'error' });
  view.append(h('section', { class: 'card' }, h('h2', {}, 'Pending approvals'),
    h('p', { class: 'muted', text: 'Tool calls that wait for a person. Approving runs the tool once; denying tells the model, which carries on without it.' }),
    error), list);
  const cards = new Map();
  const empty = h('p', { class: 'card muted', text: 'Nothing waits for a decision.' });
  const refresh = async () => {
    try {
      const { approvals } = await api('v1/approvals?limit=100');
      error.textContent = '';
      syncCards(list, cards, approvals, (a) => approvalCard(a, refresh), empty);
    } catch (e) { error.replaceChildren(failure(e)); }
  };
  refresh();
  every(2000, refresh);
}

// ------------------------------------------------------------------ agents

function agentsView(view) {
  const grid = h('div', { class: 'agents', id: 'agent-list' });
  const error = h('p', { class: 'error' });
  view.append(h('section', { class: 'card' }, h('h2', {}, 'Agents'),
    h('p', { class: 'muted', text: 'Each agent sleeps until a message arrives on its queue. Queue depth counts messages waiting or in flight; dead letters are those its queue gave up on.' }),
    error), grid);
  const draw = (agents) => grid.replaceChildren(...agents.map((a) => h('article', { class: 'card agent', dataset: { agent: a.name } },
    h('div', { class: 'row' }, h('h3', { class: 'grow', text: a.name }), h('code', { class: 'model', text: a.model })),
    h('p', { text: a.purpose }),
    h('dl', { class: 'usage' },
      h('div', {}, h('dt', { text: 'queue depth' }), h('dd', { class: 'queue-depth', text: a.queue_depth ?? '—' })),
      h('div', { class: a.dead_letters ? 'warn' : '' }, h('dt', { text: 'dead letters' }),
        h('dd', { class: 'dead-letters' }, a.dead_letters ? h('a', { href: '#/dead-letters', text: String(a.dead_letters) }) : String(a.dead_letters ?? '—')))),
    a.tools.length ? h('p', { class: 'chips' }, h('span', { class: 'label', text: 'tools ' }), a.tools.map((t) => h('code', { text: t }))) : null,
    a.may_message.length ? h('p', { class: 'chips' }, h('span', { class: 'label', text: 'messages ' }), a.may_message.map((t) => h('code', { text: t }))) : null)));
  const refresh = async () => {
    try { draw(await loadAgents()); error.textContent = ''; } catch (e) { error.replaceChildren(failure(e)); }
  };
  refresh();
  every(5000, refresh);
}

// ------------------------------------------------------------------ dead letters

function deadLettersView(view) {
  const list = h('div', { id: 'dead-letter-list' });
  const reload = h('button', { type: 'button', class: 'ghost', text: 'Refresh' });
  view.append(h('section', { class: 'card' },
    h('div', { class: 'row' }, h('h2', { class: 'grow' }, 'Dead letters'), reload),
    h('p', { class: 'muted', text: 'Messages an agent\'s queue gave up on, with the reason. Redrive moves them back onto its queue once the cause is fixed (admin tokens only).' })),
  list);
  const redrive = async (agent, ids) => {
    try {
      const r = await api(`v1/agents/${encodeURIComponent(agent)}/dead-letters/redrive`, { method: 'POST', body: ids ? { ids } : {} });
      toast(`${r.redriven} message(s) of ${agent} back on its queue.`, 'good');
      refresh();
    } catch (e) { toast(e.message, 'bad'); }
  };
  const refresh = async () => {
    reload.disabled = true;
    try {
      const agents = await loadAgents();
      const cards = [];
      for (const a of agents) {
        let box;
        try {
          const { dead_letters: items } = await api(`v1/agents/${encodeURIComponent(a.name)}/dead-letters?limit=100`);
          box = h('article', { class: 'card dead', dataset: { agent: a.name, count: items.length } },
            h('div', { class: 'row' }, h('h3', { class: 'grow', text: `${a.name} (${items.length})` }),
              items.length ? h('button', { type: 'button', onclick: () => redrive(a.name, null) }, 'Redrive all') : null),
            items.length ? items.map((d) => h('div', { class: 'letter' },
              h('p', {}, h('span', { class: 'error', text: d.reason })),
              h('p', { class: 'muted' }, `${new Date(d.at).toLocaleString()} · received ${d.receive_count}×`,
                d.task ? [' · task ', h('a', { href: `#/tasks/${d.task}`, text: d.task })] : null),
              h('details', {}, h('summary', { text: 'Message body' }), h('pre', { class: 'args', text: d.body })),
              h('button', { type: 'button', class: 'ghost', onclick: () => redrive(a.name, [d.id]) }, 'Redrive'))) : h('p', { class: 'muted', text: 'None.' }));
        } catch (e) {
          if (e.status === 403 || e.status === 501) { cards.length = 0; cards.push(h('p', { class: 'card' }, failure(e))); break; }
          box = h('article', { class: 'card dead' }, h('h3', { text: a.name }), failure(e));
        }
        cards.push(box);
      }
      list.replaceChildren(...cards);
    } catch (e) { list.replaceChildren(h('p', { class: 'card' }, failure(e))); }
    reload.disabled = false;
  };
  reload.addEventListener('click', refresh);
  refresh();
}

// ------------------------------------------------------------------ start

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', signIn);
  $('#sign-out').addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', route);
  if (S.token) {
    started();
    route();
  } else {
    showLogin();
  }
});
