// The conductor's console: plain JS, no build step, nothing loaded from elsewhere.
//
// It speaks only to the conductor that served it (same origin): JSON over fetch, and the relay
// websocket /v1/codex/events for the selected session. The shared token lives in
// sessionStorage (this tab only): never in the page's URL, never in a cookie. It goes with every
// call as Authorization, and on the relay websocket as ?token= (browsers cannot set headers on
// an upgrade; the conductor neither forwards nor logs it). When codexd has a token, everything
// under /v1/codex/* needs it: a 401 there asks for it in the Node panel, then tries again.
"use strict";

const TOKEN_KEY = "baa.conductor.token";
const NODE_REFRESH_MS = 4000;
const SESSIONS_REFRESH_MS = 5000;
const APPROVALS_REFRESH_MS = 5000;
// Sessions come newest activity first from the API (order=activity); the console walks its
// cursor until it has the rows it shows, and "more" walks further. ?limit=N in the page URL
// sets the page size.
const PAGE_LIMIT = Math.max(1, Math.min(1000,
  Number(new URLSearchParams(location.search).get("limit")) || 100));
const ROWS_STEP = 50;
const MAX_EVENT_ROWS = 1000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;
const TURN_END_TYPES = new Set([
  "app-server.turn.completed", "turn.failed", "app-server.turn.completed.missing",
]);

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c == null ? "" : c);
  return node;
}

// -- talking to the conductor ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

function token() {
  // The shared token typed in this tab, else this device's token (kept by pair.js).
  return sessionStorage.getItem(TOKEN_KEY) || deviceToken() || "";
}

function authHeaders() {
  const t = token();
  return t ? {Authorization: "Bearer " + t} : {};
}

// The token prompt: a 401 from /v1/codex/* shows it and waits for the person to enter a token.
// One wait is shared by every call that met the 401; it ends when a token is entered.
const tokenWait = {promise: null, resolve: null, timer: null};

function askForToken(message) {
  const input = $("token-input");
  input.setAttribute("aria-invalid", "true");
  input.placeholder = "the node needs its shared token (BAA_SHARED_TOKEN)";
  notify(message + " — enter the shared token in the Node panel.", "error");
  // Only when the person is not busy elsewhere on the page (typing a turn, say).
  if (document.activeElement === document.body || document.activeElement == null) {
    input.focus();
  }
  if (!tokenWait.promise) {
    tokenWait.promise = new Promise((resolve) => { tokenWait.resolve = resolve; });
  }
  return tokenWait.promise;
}

// A token was entered (Enter, leaving the field, or a pause in typing): the calls that waited
// try again, and what was refused in the background is fetched again.
function tokenEntered() {
  clearTimeout(tokenWait.timer);
  if (!token()) return;
  $("token-input").removeAttribute("aria-invalid");
  const resolve = tokenWait.resolve;
  tokenWait.promise = null;
  tokenWait.resolve = null;
  if (resolve) resolve();
  refreshSessions();
  refreshApprovals();
  refreshMetrics();
  if (view.id && !view.ws) {
    clearTimeout(view.retryTimer);
    view.retryMs = RETRY_MIN_MS;
    reloadSession();
    openStream();
  }
}

// opts.wait (default true): on a 401 from /v1/codex/*, ask for the token and try again once one
// is entered. Background refreshes pass false: they only ask, and tokenEntered() re-runs them.
async function api(method, path, body, opts) {
  const wait = !opts || opts.wait !== false;
  for (;;) {
    try {
      return await apiOnce(method, path, body);
    } catch (e) {
      if (e.status !== 401 || !path.startsWith("/v1/codex/")) throw e;
      const asked = askForToken(e.message);
      if (!wait) throw e;
      await asked;
    }
  }
}

async function apiOnce(method, path, body) {
  const headers = {Accept: "application/json", ...authHeaders()};
  const init = {method, headers, cache: "no-store", credentials: "same-origin"};
  if (method === "POST") {
    // JSON only: the daemons refuse any other POST body type (415).
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body || {});
  }
  let answer;
  try {
    answer = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network_error", "The conductor cannot be reached: " + e.message);
  }
  let envelope;
  try {
    envelope = await answer.json();
  } catch (e) {
    throw new ApiError(answer.status, "bad_answer", "HTTP " + answer.status + " without JSON");
  }
  if (!envelope.ok) {
    const err = envelope.error || {};
    throw new ApiError(answer.status, err.code || "error", err.message || "HTTP " + answer.status,
                       err.details);
  }
  return envelope.data;
}

let noticeTimer = null;
function notify(text, kind) {
  const box = $("notice");
  box.textContent = text;
  box.className = kind || "error";
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, kind === "info" ? 4000 : 12000);
}

function failed(what, e) {
  let text = what + ": " + e.message;
  if (e.code && e.code !== "network_error") text += " (" + e.code + ")";
  if (e.code === "unauthorized") text += " — enter the shared token in the Node panel.";
  if (e.code === "not_leader" && e.details.leader) {
    text += " — the leader is " + (e.details.leader.localApiBase || e.details.leader.nodeId);
  }
  notify(text, "error");
}

// Runs an action from a button, disabling it meanwhile so a double tap does not send twice.
async function act(button, what, fn) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (e) {
    failed(what, e);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function short(id) {
  return id ? String(id).replace(/^session-/, "").slice(0, 8) : "—";
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const age = (Date.now() - d.getTime()) / 1000;
  if (age < 60) return Math.max(0, Math.round(age)) + "s ago";
  if (age < 3600) return Math.round(age / 60) + "m ago";
  if (age < 86400) return Math.round(age / 3600) + "h ago";
  return d.toISOString().slice(0, 16).replace("T", " ");
}

// The end of a path is the part that tells sessions apart: "…/project/sub".
function tailPath(path) {
  if (!path) return "";
  const parts = String(path).split("/").filter(Boolean);
  return parts.length > 2 ? "…/" + parts.slice(-2).join("/") : path;
}

function excerpt(text, n) {
  if (!text) return "";
  const flat = String(text).replace(/\s+/g, " ").trim();
  return flat.length > n ? flat.slice(0, n - 1) + "…" : flat;
}

// -- node panel --------------------------------------------------------------------------------

const node = {mode: null, lastSeq: null};

function setValue(id, text, cls) {
  const e = $(id);
  e.textContent = text;
  e.className = cls || "";
}

async function refreshNode() {
  let s;
  try {
    s = await api("GET", "/v1/status");
  } catch (e) {
    setValue("codexd", "conductor unreachable: " + e.message, "bad");
    return;
  }
  $("node-id").textContent = (s.node || {}).node_id || "?";
  const roleCls = s.role === "leader" ? "ok" : s.role === "degraded" ? "bad" : "warn";
  setValue("role", s.role || "?", roleCls);
  setValue("top-role", s.role || "?", roleCls);
  const l = s.lease || {};
  setValue("lease", l.holder_id ? l.holder_id + " · term " + l.term : "no lease held",
           l.holder_id ? "" : "warn");
  renderMode(s.mode || {});
  const cx = s.codexd || {};
  setValue("codexd", cx.reachable ? "reachable" + (cx.pid ? " (pid " + cx.pid + ")" : "")
    : "unreachable" + (cx.error ? ": " + cx.error : ""), cx.reachable ? "ok" : "bad");
  const child = cx.child || {};
  setValue("child", child.status ? child.status + (child.pid ? " (pid " + child.pid + ")" : "")
    : "—", child.status === "running" ? "ok" : "warn");
  setValue("restarts", child.restarts == null ? "—" : String(child.restarts),
           child.restarts ? "warn" : "");
  const ss = s.sessions || {};
  setValue("session-counts", ss.count == null ? "—"
    : ss.count + " (" + ss.active_count + " active)");
  const turns = s.active_turns || [];
  setValue("active-turns", String(turns.length));
  setValue("last-seq", s.last_event_seq == null ? "—" : "#" + s.last_event_seq);
  if (s.last_event_seq != null) node.lastSeq = s.last_event_seq;
  $("warnings").replaceChildren(...(s.warnings || []).map((w) => el("li", {}, w)));
}

function renderMode(m) {
  node.mode = m.mode || null;
  setValue("mode-value", m.mode || "?", m.mode === "running" ? "ok" : "warn");
  setValue("top-mode", m.mode || "?", m.mode === "running" ? "ok" : "warn");
  $("mode-reason").textContent = m.reason ? "— " + m.reason : "";
  $("mode-pause").disabled = m.mode === "paused";
  $("mode-resume").disabled = m.mode === "running";
  $("mode-drain").disabled = m.mode === "draining";
}

async function changeMode(button, verb) {
  await act(button, verb, async () => {
    const state = await api("POST", "/v1/system/" + verb, {requested_by: "console"});
    renderMode(state);
    notify("mode: " + state.mode, "info");
  });
}

// Metrics highlights: /metrics (Prometheus text) when the daemon serves it; otherwise the panel
// stays hidden. Kept in one function because the metric names are still settling.
let lastTurns = null;
async function refreshMetrics() {
  // The conductor's own series (requests) and codexd's through the conductor (turns).
  const texts = [];
  for (const path of ["/metrics", "/v1/codex/metrics"]) {
    try {
      const r = await fetch(path, {cache: "no-store", headers: authHeaders()});
      if (r.ok) texts.push(await r.text());
    } catch (e) {
      // a daemon without metrics: its part is left out
    }
  }
  const text = texts.join("\n");
  if (!text) { $("metrics").hidden = true; return; }
  let turns = 0; let failures = 0; let requests = 0; let errors = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+\w.]+)/.exec(line);
    if (!m || line.startsWith("#")) continue;
    const [, name, labels = "", raw] = m;
    const v = Number(raw);
    if (!Number.isFinite(v)) continue;
    if (/turns?_total$/.test(name)) {
      turns += v;
      if (/status="failed"/.test(labels)) failures += v;
    } else if (/^conductor_.*requests?_total$/.test(name)) {  // this node's API, not codexd's
      requests += v;
      if (/status="5\d\d"/.test(labels)) errors += v;
    }
  }
  const now = Date.now();
  let perMin = "—";
  if (lastTurns && now > lastTurns.at) {
    perMin = ((turns - lastTurns.n) * 60000 / (now - lastTurns.at)).toFixed(1);
  }
  lastTurns = {n: turns, at: now};
  const facts = [["Turns/min", perMin], ["Turns", turns], ["Failed turns", failures],
                 ["Requests", requests], ["5xx answers", errors]];
  $("metrics-facts").replaceChildren(...facts.flatMap(([k, v]) =>
    [el("dt", {}, k), el("dd", {}, String(v))]));
  $("metrics").hidden = false;
}

// -- sessions table ----------------------------------------------------------------------------

const table = {sessions: [], shown: ROWS_STEP, more: false, loading: false};

async function refreshSessions() {
  if (table.loading) return;
  table.loading = true;
  try {
    // Walk the API's cursor only as far as the rows on show: the cost does not grow with the
    // node's history.
    const all = [];
    let cursor = null;
    do {
      const q = new URLSearchParams({order: "activity", limit: String(PAGE_LIMIT)});
      if (cursor) q.set("cursor", cursor);
      const data = await api("GET", "/v1/codex/sessions?" + q, null, {wait: false});
      all.push(...data.sessions);
      cursor = data.nextCursor;
    } while (cursor && all.length < table.shown);
    table.sessions = all;
    table.more = Boolean(cursor);
    $("sessions-count").textContent = "(" + all.length + (table.more ? "+" : "") + ")";
    renderSessions();
  } catch (e) {
    $("sessions-count").textContent = "(" + e.message + ")";
  } finally {
    table.loading = false;
  }
}

function renderSessions() {
  const rows = table.sessions.slice(0, table.shown).map((s) => {
    const tr = el("tr", {
      "data-testid": "session-row", "data-session-id": s.sessionId, tabindex: "0",
      class: s.sessionId === view.id ? "selected" : "",
    },
    el("td", {title: s.sessionId}, el("code", {}, short(s.sessionId))),
    el("td", {}, s.purpose || ""),
    el("td", {class: "cwd", title: s.cwd || ""}, tailPath(s.cwd)),
    el("td", {class: s.status === "active" ? "ok" : "muted"}, s.status || "",
       pending.bySession.get(s.sessionId)
         ? el("span", {class: "badge waiting", "data-testid": "session-pending"},
              pending.bySession.get(s.sessionId) + " to approve")
         : null),
    el("td", {class: "st-" + (s.lastTurnStatus || "none")},
       s.currentTurnId ? "inProgress" : (s.lastTurnStatus || "—")),
    el("td", {class: "excerpt"}, excerpt(s.lastTurnOutput, 80)),
    el("td", {title: s.updatedAt || ""}, when(s.updatedAt)));
    tr.addEventListener("click", () => select(s.sessionId));
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") select(s.sessionId); });
    return tr;
  });
  $("session-rows").replaceChildren(...rows);
  $("sessions-more").hidden = !table.more && table.sessions.length <= table.shown;
}

async function createSession(ev) {
  ev.preventDefault();
  const body = {purpose: $("new-purpose").value};
  const cwd = $("new-cwd").value.trim();
  if (cwd) body.cwd = cwd;
  for (const [id, key] of [["new-policy", "approvalPolicy"], ["new-sandbox", "sandbox"],
                           ["new-approvals", "approvals"]]) {
    if ($(id).value) body[key] = $(id).value;
  }
  const button = ev.submitter || document.querySelector("[data-testid=new-session]");
  const data = await act(button, "new session", () => api("POST", "/v1/codex/sessions", body));
  if (!data) return;
  notify("created " + data.session.sessionId, "info");
  refreshNode();
  await refreshSessions();
  await select(data.session.sessionId);
}

// -- the selected session ----------------------------------------------------------------------

// view.cursor is the highest event seq shown (or the stream's starting point): every event at or
// below it is a duplicate, and a reconnect asks for after=cursor, so nothing is lost or doubled.
const view = {
  id: null, session: null, cursor: null, ws: null, retryMs: RETRY_MIN_MS, retryTimer: null,
  reconnects: 0, generation: 0, turnId: null, outputItems: new Map(),
};

async function select(sessionId) {
  if (view.id === sessionId) return;
  closeStream();
  Object.assign(view, {
    id: sessionId, session: null, cursor: null, reconnects: 0, retryMs: RETRY_MIN_MS,
    turnId: null, outputItems: new Map(),
  });
  view.generation += 1;
  $("selected").hidden = false;
  $("selected-id").textContent = sessionId;
  $("events").replaceChildren();
  $("approvals").replaceChildren();
  $("turn-output").textContent = "";
  setStreamState("connecting");
  renderSessions();
  const generation = view.generation;
  const baseline = node.lastSeq == null ? 0 : node.lastSeq;
  let data;
  try {
    data = await api("GET", "/v1/codex/sessions/" + encodeURIComponent(sessionId));
  } catch (e) {
    failed("session " + sessionId, e);
    return;
  }
  if (generation !== view.generation) return;
  renderSession(data.session);
  // Resume point: the newest event shown. Without any, the node's last seq as seen *before*
  // this read (a lower bound: replaying a little more is harmless, missing some is not).
  for (const event of data.recentEvents || []) addEvent(event);
  if (view.cursor == null) view.cursor = baseline;
  openStream();
  refreshApprovals();
  onSessionSelected(sessionId);  // pair.js: the session's approval rules
  if (window.matchMedia("(max-width: 700px)").matches) $("selected").scrollIntoView();
}

function renderSession(s) {
  // Answers can arrive out of order (a refresh started before a turn was sent): never let an
  // older snapshot of the session replace a newer one.
  const shown = view.session;
  if (shown && shown.sessionId === s.sessionId && shown.updatedAt && s.updatedAt
      && s.updatedAt < shown.updatedAt) return;
  view.session = s;
  $("selected-meta").textContent = [s.status, s.purpose, s.cwd, s.model,
    s.approvalPolicy && "policy " + s.approvalPolicy, s.sandbox,
    s.approvals && "approvals: " + s.approvals, "turns " + (s.turnCount || 0)]
    .filter(Boolean).join(" · ");
  const running = Boolean(s.currentTurnId);
  const status = running ? "inProgress" : (s.lastTurnStatus || "none");
  const badge = $("turn-status");
  badge.textContent = status;
  badge.dataset.status = status;
  $("turn-output").dataset.status = status;
  $("turn-output").dataset.turnId = s.currentTurnId || s.lastTurnId || "";
  if (!running) {
    view.turnId = s.lastTurnId;
    let text = s.lastTurnOutput || "";
    if (s.lastTurnStatus === "failed" && s.lastTurnError) {
      text = text || "error: " + s.lastTurnError.message;
    }
    $("turn-output").textContent = text;
  } else if (view.turnId !== s.currentTurnId) {
    startTurnOutput(s.currentTurnId);
  }
  $("turn-steer").disabled = !running;
  $("turn-interrupt").disabled = !running;
  $("turn-submit").disabled = s.status === "closed";
}

function startTurnOutput(turnId) {
  view.turnId = turnId;
  view.outputItems = new Map();
  $("turn-output").textContent = "";
  $("turn-output").dataset.turnId = turnId || "";
  $("turn-output").dataset.status = "inProgress";
  $("turn-status").textContent = "inProgress";
  $("turn-status").dataset.status = "inProgress";
}

function renderOutputItems() {
  $("turn-output").textContent = [...view.outputItems.values()].join("\n\n");
}

async function reloadSession() {
  if (!view.id) return;
  const generation = view.generation;
  try {
    const data = await api("GET", "/v1/codex/sessions/" + encodeURIComponent(view.id), null,
                           {wait: false});
    if (generation === view.generation) renderSession(data.session);
  } catch (e) {
    failed("session " + view.id, e);
  }
}

async function sendTurn(ev) {
  if (ev) ev.preventDefault();
  const input = $("turn-input").value;
  if (!input.trim() || !view.id) return;
  const data = await act($("turn-submit"), "turn",
    () => api("POST", "/v1/codex/turn", {sessionId: view.id, input}));
  if (!data) return;
  $("turn-input").value = "";
  if (view.turnId !== data.turnId) startTurnOutput(data.turnId);
  renderSession(data.session);
  refreshSessions();
}

async function steer() {
  const input = $("turn-input").value;
  if (!input.trim() || !view.id) {
    notify("steer: type the extra instruction in the message box first", "info");
    return;
  }
  const data = await act($("turn-steer"), "steer", () => api("POST", "/v1/codex/turn/steer",
    {sessionId: view.id, input, expectedTurnId: view.session && view.session.currentTurnId}));
  if (!data) return;
  $("turn-input").value = "";
  notify("steer sent to turn " + data.turnId, "info");
}

async function interrupt() {
  const data = await act($("turn-interrupt"), "interrupt",
    () => api("POST", "/v1/codex/turn/interrupt", {sessionId: view.id}));
  if (data) notify("interrupt sent", "info");
}

// -- live events -------------------------------------------------------------------------------

function setStreamState(state) {
  const badge = $("stream-status");
  badge.dataset.state = state;
  badge.dataset.reconnects = String(view.reconnects);
  badge.textContent = state + (view.reconnects ? " · reconnects " + view.reconnects : "");
}

function streamUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // batch=1: a burst arrives as a few frames holding arrays of events (far less work for
  // codexd, the relay and this page than one frame per event).
  const q = new URLSearchParams({sessionId: view.id, after: String(view.cursor || 0),
                                 batch: "1"});
  $("stream-status").dataset.after = String(view.cursor || 0);
  const t = token();
  if (t) q.set("token", t);
  return scheme + "//" + location.host + "/v1/codex/events?" + q;
}

function openStream() {
  const generation = view.generation;
  const ws = new WebSocket(streamUrl());
  view.ws = ws;
  ws.onopen = () => {
    if (generation !== view.generation) return;
    setStreamState("live");
  };
  ws.onmessage = (msg) => {
    if (generation !== view.generation) return;
    let frame;
    try { frame = JSON.parse(msg.data); } catch (e) { return; }
    // The retry delay starts over only once events flow again: a stream that opens and
    // closes at once keeps backing off instead of reconnecting twice a second.
    if (frame && frame.type !== "hello") view.retryMs = RETRY_MIN_MS;
    if (Array.isArray(frame)) {
      for (const e of frame) if (e && typeof e.seq === "number") addEvent(e);
    } else if (typeof frame.seq === "number") {
      addEvent(frame);
    } else if (frame.type === "overflow") {
      // The server closes next (1013); the reconnect asks for everything after what we have.
      setStreamState("overflow");
    }
  };
  ws.onclose = (ev) => {
    if (view.ws === ws) view.ws = null;
    if (generation !== view.generation) return;
    view.reconnects += 1;
    setStreamState("reconnecting");
    $("stream-status").title = "closed with code " + ev.code;
    const delay = view.retryMs;
    view.retryMs = Math.min(RETRY_MAX_MS, view.retryMs * 2);
    view.retryTimer = setTimeout(() => {
      if (generation !== view.generation) return;
      // Events missed while disconnected may include the end of a turn or an approval.
      reloadSession();
      refreshApprovals();
      openStream();
    }, delay);
  };
}

function closeStream() {
  clearTimeout(view.retryTimer);
  view.generation += 1;
  if (view.ws) {
    const ws = view.ws;
    view.ws = null;
    ws.onclose = null;
    ws.close(1000, "console selected another session");
  }
}

function addEvent(e) {
  if (e.sessionId !== view.id) return;
  if (view.cursor != null && e.seq <= view.cursor) return;  // already shown: not doubled
  view.cursor = e.seq;
  const list = $("events");
  const row = el("li", {"data-testid": "event-row", "data-seq": String(e.seq),
                        "data-type": e.type, class: "lvl-" + (e.level || "info")},
    el("span", {class: "seq"}, "#" + e.seq),
    el("span", {class: "time"}, (e.at || "").slice(11, 19)),
    el("span", {class: "type", title: e.type}, e.type),
    el("span", {class: "msg"}, eventText(e)));
  list.prepend(row);
  while (list.childElementCount > MAX_EVENT_ROWS) list.lastElementChild.remove();
  onEvent(e);
}

function eventText(e) {
  const d = e.detail || {};
  if (e.type === "app-server.item.agentMessage.delta") return JSON.stringify(d.delta || "");
  return e.message || "";
}

function onEvent(e) {
  const d = e.detail || {};
  if (e.type === "turn.accepted" && e.turnId && e.turnId !== view.turnId) {
    startTurnOutput(e.turnId);
  } else if (e.type === "app-server.item.agentMessage.delta" && e.turnId === view.turnId) {
    const key = d.itemId || "";
    view.outputItems.set(key, (view.outputItems.get(key) || "") + (d.delta || ""));
    renderOutputItems();
  } else if (e.type === "app-server.item.completed" && e.turnId === view.turnId
             && d.item && d.item.type === "agentMessage" && typeof d.item.text === "string") {
    view.outputItems.set(d.item.id || "", d.item.text);
    renderOutputItems();
  } else if (TURN_END_TYPES.has(e.type)) {
    reloadSession();
    refreshSessions();
    refreshNode();
  } else if (e.type === "approval.requested" || e.type === "approval.resolved") {
    refreshApprovals();
  }
}

// -- approvals ---------------------------------------------------------------------------------

// Pending approvals of the whole node: the selected session's are listed with their buttons, the
// others are counted on their session's row (a phone user sees where a decision waits).
const pending = {bySession: new Map(), total: 0};

async function refreshApprovals() {
  const generation = view.generation;
  let data;
  try {
    data = await api("GET", "/v1/codex/approvals?state=pending", null, {wait: false});
  } catch (e) {
    $("approvals-count").textContent = "(" + e.message + ")";
    return;
  }
  const bySession = new Map();
  for (const a of data.approvals) {
    bySession.set(a.sessionId, (bySession.get(a.sessionId) || 0) + 1);
  }
  const changed = pending.total !== data.approvals.length
    || [...bySession].some(([k, v]) => pending.bySession.get(k) !== v);
  pending.bySession = bySession;
  pending.total = data.approvals.length;
  setValue("approvals-total", String(pending.total), pending.total ? "warn" : "");
  if (changed) renderSessions();
  if (!view.id || generation !== view.generation) return;
  const mine = data.approvals.filter((a) => a.sessionId === view.id);
  $("approvals-count").textContent = mine.length ? "(" + mine.length + " pending)" : "(none)";
  // Keyed by approval id: a row the person is about to tap is kept as it is, decided ones go.
  const list = $("approvals");
  const keep = new Set(mine.map((a) => a.approvalId));
  for (const row of [...list.children]) {
    if (!keep.has(row.dataset.approvalId)) row.remove();
  }
  const shown = new Set([...list.children].map((row) => row.dataset.approvalId));
  for (const a of mine) {
    if (!shown.has(a.approvalId)) list.append(approvalRow(a));
  }
}

function approvalWhat(a) {
  const p = a.params || {};
  if (p.command) return Array.isArray(p.command) ? p.command.join(" ") : String(p.command);
  if (a.kind === "fileChange") return "file change" + (p.reason ? ": " + p.reason : "");
  return JSON.stringify(p).slice(0, 300);
}

function approvalRow(a) {
  const p = a.params || {};
  const accept = el("button", {type: "button", "data-testid": "approval-accept",
                               class: "accept"}, "Accept");
  const decline = el("button", {type: "button", "data-testid": "approval-decline",
                                class: "decline"}, "Decline");
  const decide = async (button, decision) => {
    const done = await act(button, "approval " + a.approvalId, () =>
      api("POST", "/v1/codex/approvals/" + encodeURIComponent(a.approvalId),
          {decision, decidedBy: "console"}));
    if (done === undefined) {
      refreshApprovals();  // decided elsewhere (409) or gone: show what is true now
      return;
    }
    row.remove();
    refreshApprovals();
  };
  // Accept for session: Codex stops asking for the same command in this session.
  const acceptSession = el("button", {type: "button", "data-testid": "approval-accept-session",
                                      class: "accept"}, "Accept for session");
  accept.addEventListener("click", () => decide(accept, "accept"));
  acceptSession.addEventListener("click", () => decide(acceptSession, "acceptForSession"));
  decline.addEventListener("click", () => decide(decline, "decline"));
  const row = el("li", {"data-testid": "approval-row", "data-approval-id": a.approvalId},
    el("div", {class: "what"}, el("span", {class: "badge"}, a.kind), " ",
       el("code", {}, approvalWhat(a))),
    el("div", {class: "muted"}, [p.cwd && "in " + p.cwd, p.reason,
                                 "asked " + when(a.createdAt)].filter(Boolean).join(" · ")),
    el("div", {class: "buttons"}, accept, acceptSession, decline));
  return row;
}

// -- wiring ------------------------------------------------------------------------------------

function init() {
  const tokenInput = $("token-input");
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";  // not the device's token
  tokenInput.addEventListener("input", () => {
    const v = tokenInput.value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
    // A pasted token is used without an Enter; typing one is retried once it pauses.
    clearTimeout(tokenWait.timer);
    tokenWait.timer = setTimeout(tokenEntered, 600);
  });
  tokenInput.addEventListener("change", tokenEntered);
  $("mode-pause").addEventListener("click", (ev) => changeMode(ev.currentTarget, "pause"));
  $("mode-resume").addEventListener("click", (ev) => changeMode(ev.currentTarget, "resume"));
  $("mode-drain").addEventListener("click", (ev) => changeMode(ev.currentTarget, "drain"));
  $("new-session-form").addEventListener("submit", createSession);
  $("turn-form").addEventListener("submit", sendTurn);
  $("turn-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) sendTurn(ev);
  });
  $("turn-steer").addEventListener("click", steer);
  $("turn-interrupt").addEventListener("click", interrupt);
  $("sessions-more").addEventListener("click", () => {
    table.shown += ROWS_STEP;
    if (table.sessions.length < table.shown && table.more) refreshSessions();
    else renderSessions();
  });
  refreshNode();
  refreshMetrics();
  refreshSessions();
  refreshApprovals();
  setInterval(refreshNode, NODE_REFRESH_MS);
  setInterval(refreshMetrics, 30000);
  setInterval(refreshSessions, SESSIONS_REFRESH_MS);
  // A fallback for approvals decided or expired while the stream was away.
  setInterval(refreshApprovals, APPROVALS_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", init);
