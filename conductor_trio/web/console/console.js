// The conductor's console: plain JS modules, no build step, nothing loaded from elsewhere.
//
// It speaks only to the conductor that served it (same origin): JSON over fetch (api.js), and
// the relay websocket /v1/codex/events for the selected session. The selected session is a
// conversation (conversation.js): its transcript first, then the relay's events from the
// transcript's lastSeq, folded in. The shared token goes on the relay websocket as ?token=
// (browsers cannot set headers on an upgrade; the conductor neither forwards nor logs it).

import {$, el, folderName, typing} from "./dom.js";
import {act, api, failed, hideNotice, noticeBox, notify, tokenEntered, tokenWait,
        TOKEN_KEY} from "./api.js";
import {Conversation} from "./conversation.js";
import {refreshQueue, resetQueue, resumeQueue} from "./queue.js";
import {closeThreads, initThreads, threadsOpen} from "./threads.js";
import {initNotifications} from "./alerts.js";
import {RETRY_MIN_MS, ROWS_STEP, node, table, view} from "./state.js";
import {changeMode, refreshMetrics, refreshNode} from "./node.js";
import {createSession, moveSelection, opened, refreshSessions, renderSessions} from
  "./sessions.js";
import {decide, refreshApprovals} from "./approvals.js";
import {closeStream, eventRow, initStream, openStream, setStreamState} from "./stream.js";

const NODE_REFRESH_MS = 4000;
const SESSIONS_REFRESH_MS = 5000;
const APPROVALS_REFRESH_MS = 5000;
// The conversation shows the last TURNS_PAGE turns, and "Earlier turns" pages back to the
// first; ?turns=N in the page URL sets N.
const TURNS_PAGE = Math.max(1, Math.min(1000,
  Number(new URLSearchParams(location.search).get("turns")) || 20));
const TURN_END_TYPES = new Set([
  "app-server.turn.completed", "turn.failed", "app-server.turn.completed.missing",
]);

// -- the selected session ----------------------------------------------------------------------

let conversation = null;

export async function select(sessionId) {
  if (view.id === sessionId) return;
  closeStream();
  Object.assign(view, {
    id: sessionId, session: null, cursor: null, reconnects: 0, retryMs: RETRY_MIN_MS,
    turnId: null, outputItems: new Map(), older: null,
  });
  view.generation += 1;
  $("selected").hidden = false;
  $("selected-id").textContent = sessionId;
  $("selected-title").textContent = "…";
  $("events").replaceChildren();
  $("approvals").replaceChildren();
  $("turn-output").textContent = "";
  $("turns-older").hidden = true;
  conversation.clear();
  resetQueue(sessionId);
  setStreamState("connecting");
  renderSessions();
  const generation = view.generation;
  const baseline = node.lastSeq == null ? 0 : node.lastSeq;
  const sid = encodeURIComponent(sessionId);
  // Transcript first: its lastSeq is where the stream takes over. Without one (a codexd
  // older than issue 22), the session still opens and the stream starts at the node's last
  // seq as seen before this read (a lower bound: replaying a little more is harmless).
  let transcript = null;
  try {
    transcript = await api("GET", `/v1/codex/sessions/${sid}/transcript?order=desc&limit=`
                           + TURNS_PAGE);
  } catch (e) {
    if (e.status === 401) return;
    $("conversation").append(el("p", {class: "muted"}, "No transcript: " + e.message));
  }
  let data;
  try {
    data = await api("GET", "/v1/codex/sessions/" + sid);
  } catch (e) {
    failed("session " + sessionId, e);
    return;
  }
  if (generation !== view.generation) return;
  renderSession(data.session);
  let from = baseline;
  if (transcript) {
    conversation.addTurns([...transcript.turns].reverse());
    conversation.toBottom();
    view.older = transcript.nextCursor;
    $("turns-older").hidden = !view.older;
    if (transcript.lastSeq != null) from = transcript.lastSeq;
  } else {
    for (const event of data.recentEvents || []) from = Math.max(from, event.seq);
  }
  // The raw events tab: what the session's recent ring holds up to that point; the stream
  // brings the rest.
  for (const event of data.recentEvents || []) if (event.seq <= from) eventRow(event);
  view.cursor = from;
  openStream();
  refreshApprovals();
  refreshQueue();
  if (typeof globalThis.onSessionSelected === "function") {
    globalThis.onSessionSelected(sessionId);  // pair.js: the session's approval rules
  }
  if (window.matchMedia("(max-width: 700px)").matches) $("selected").scrollIntoView();
}

async function loadOlder() {
  if (!view.older) return;
  const generation = view.generation;
  const q = new URLSearchParams({order: "desc", limit: String(TURNS_PAGE), cursor: view.older});
  const data = await act($("turns-older"), "earlier turns", () => api("GET",
    "/v1/codex/sessions/" + encodeURIComponent(view.id) + "/transcript?" + q));
  if (!data || generation !== view.generation) return;
  const box = $("conversation");
  const before = box.scrollHeight - box.scrollTop;
  conversation.addTurns([...data.turns].reverse(), true);
  box.scrollTop = box.scrollHeight - before;  // the turn that was on top stays in place
  view.older = data.nextCursor;
  $("turns-older").hidden = !view.older;
}

function renderSession(s) {
  // Answers can arrive out of order (a refresh started before a turn was sent): never let an
  // older snapshot of the session replace a newer one.
  const shown = view.session;
  if (shown && shown.sessionId === s.sessionId && shown.updatedAt && s.updatedAt
      && s.updatedAt < shown.updatedAt) return;
  view.session = s;
  if (!$("title-form").hidden) return renderSessionState(s);
  $("selected-title").textContent = s.title || "untitled";
  $("selected-folder").textContent = folderName(s.cwd);
  $("selected-meta").textContent = [s.status, s.purpose, s.cwd, s.model,
    s.approvalPolicy && "policy " + s.approvalPolicy, s.sandbox,
    s.approvals && "approvals: " + s.approvals, "turns " + (s.turnCount || 0)]
    .filter(Boolean).join(" · ");
  renderSessionState(s);
}

function renderSessionState(s) {
  const running = Boolean(s.currentTurnId);
  const status = running ? "inProgress" : (s.lastTurnStatus || "none");
  const badge = $("turn-status");
  badge.textContent = running ? "working" : status;
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
  // While Codex works, a message waits in the session's queue (issue 23).
  $("turn-submit").textContent = busy() ? "Queue turn" : "Send turn";
}

function busy() {
  const s = view.session;
  return Boolean(s && (s.currentTurnId || s.queueLength));
}

// "Latest answer": the final agent message of the latest turn as plain text (to copy).
function startTurnOutput(turnId) {
  view.turnId = turnId;
  view.outputItems = new Map();
  $("turn-output").textContent = "";
  $("turn-output").dataset.turnId = turnId || "";
  $("turn-output").dataset.status = "inProgress";
  $("turn-status").textContent = "working";
  $("turn-status").dataset.status = "inProgress";
  $("turn-submit").textContent = "Queue turn";
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
  const body = {sessionId: view.id, input};
  // Busy: the message waits its turn in the session's queue. Idle: it starts now (a plain
  // turn, so a paused node refuses it rather than holding it unseen).
  if (busy()) body.whenBusy = "queue";
  const data = await act($("turn-submit"), "turn", () => api("POST", "/v1/codex/turn", body));
  if (!data) return;
  $("turn-input").value = "";
  if (data.queued) {
    notify("queued: it runs after " + (data.position ? data.position + " more and " : "")
           + "the current turn", "info", $("turn-submit"));
  } else if (view.turnId !== data.turnId) {
    startTurnOutput(data.turnId);
  }
  renderSession(data.session);
  refreshQueue();
  refreshSessions();
}

async function steer() {
  const input = $("turn-input").value;
  if (!input.trim() || !view.id) {
    notify("steer: type the extra instruction in the message box first", "info",
           $("turn-steer"));
    return;
  }
  const data = await act($("turn-steer"), "steer", () => api("POST", "/v1/codex/turn/steer",
    {sessionId: view.id, input, expectedTurnId: view.session && view.session.currentTurnId}));
  if (!data) return;
  $("turn-input").value = "";
  notify("steer sent to turn " + data.turnId, "info", $("turn-steer"));
}

async function interrupt() {
  const data = await act($("turn-interrupt"), "interrupt",
    () => api("POST", "/v1/codex/turn/interrupt", {sessionId: view.id}));
  if (data) notify("interrupt sent", "info", $("turn-interrupt"));
}

// The title: the first prompt by default (codexd), renamed here (thread/name/set).
function editTitle() {
  $("title-form").hidden = false;
  $("title-show").hidden = true;
  $("title-input").value = (view.session && view.session.title) || "";
  $("title-input").focus();
}

function closeTitle() {
  if ($("title-form").hidden) return false;
  $("title-form").hidden = true;
  $("title-show").hidden = false;
  return true;
}

async function saveTitle(ev) {
  ev.preventDefault();
  const title = $("title-input").value.trim();
  if (!title || !view.id) { closeTitle(); return; }
  const data = await act($("title-save"), "title", () => api("POST",
    "/v1/codex/sessions/" + encodeURIComponent(view.id) + "/title", {title}));
  closeTitle();
  if (!data) return;
  renderSession(data.session);
  refreshSessions();
}

async function fork() {
  const data = await act($("session-fork"), "fork", () => api("POST",
    "/v1/codex/sessions/" + encodeURIComponent(view.id) + "/fork", {}));
  if (data) await opened(data.session.sessionId);
}

function showTab(name) {
  for (const [tab, pane] of [["tab-conversation", "conversation-pane"],
                             ["tab-events", "events-pane"]]) {
    const on = tab === "tab-" + name;
    $(tab).setAttribute("aria-selected", String(on));
    $(pane).hidden = !on;
  }
}

// -- live events -------------------------------------------------------------------------------

function addEvent(e) {
  if (e.sessionId !== view.id) return;
  if (view.cursor != null && e.seq <= view.cursor) return;  // already folded: not doubled
  view.cursor = e.seq;
  eventRow(e);
  conversation.apply(e);
  onEvent(e);
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
  if (e.type.startsWith("turn.queue") || e.type === "turn.queued" || e.type === "turn.dequeued") {
    refreshQueue();
    if (e.type === "turn.queued" || e.type === "turn.dequeued") reloadSession();
  }
}

// -- wiring ------------------------------------------------------------------------------------

function onKey(ev) {
  if (ev.key === "Escape") {
    // The innermost open thing closes first.
    if (closeTitle() || (threadsOpen() && (closeThreads(), true)) || hideNotice()) {
      ev.preventDefault();
    }
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
  const onRow = ev.target && ev.target.dataset && ev.target.dataset.testid === "session-row";
  if (ev.key === "j" || (onRow && ev.key === "ArrowDown")) {
    ev.preventDefault();
    moveSelection(1);
  } else if (ev.key === "k" || (onRow && ev.key === "ArrowUp")) {
    ev.preventDefault();
    moveSelection(-1);
  }
}

function init() {
  conversation = new Conversation($("conversation"), {decide});
  $("notice").append(noticeBox());
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
  tokenWait.onEntered = () => {
    refreshSessions();
    refreshApprovals();
    refreshMetrics();
    if (view.id && !view.ws) {
      clearTimeout(view.retryTimer);
      view.retryMs = RETRY_MIN_MS;
      reloadSession();
      openStream();
    }
  };
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
  $("turns-older").addEventListener("click", loadOlder);
  $("title-edit").addEventListener("click", editTitle);
  $("title-form").addEventListener("submit", saveTitle);
  $("title-cancel").addEventListener("click", closeTitle);
  $("session-fork").addEventListener("click", fork);
  $("queue-resume").addEventListener("click", (ev) => resumeQueue(ev.currentTarget));
  $("tab-conversation").addEventListener("click", () => showTab("conversation"));
  $("tab-events").addEventListener("click", () => showTab("events"));
  $("sessions-more").addEventListener("click", () => {
    table.shown += ROWS_STEP;
    if (table.sessions.length < table.shown && table.more) refreshSessions();
    else renderSessions();
  });
  document.addEventListener("keydown", onKey);
  initStream({onEvent: addEvent, onReconnect: () => { reloadSession(); refreshApprovals(); }});
  initThreads({onAdopted: opened, onOpenSession: select});
  initNotifications();
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

// pair.js (a classic script) opens deep links with select() and reads the rules with api();
// the tests call refreshMetrics().
Object.assign(globalThis, {api, select, refreshMetrics});

document.addEventListener("DOMContentLoaded", init);
