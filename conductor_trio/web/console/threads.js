// Codex's own threads (GET /v1/codex/threads): whoever started them (the TUI, VS Code,
// `codex exec`, codexd), with search; open one read-only; adopt it into a session.

import {$, el, folderName, when, excerpt} from "./dom.js";
import {act, api, failed} from "./api.js";
import {Conversation} from "./conversation.js";

const state = {onAdopted: null, onOpenSession: null, timer: null, reader: null, generation: 0};

export function initThreads(hooks) {
  state.onAdopted = hooks.onAdopted;
  state.onOpenSession = hooks.onOpenSession;
  state.reader = new Conversation($("thread-turns"), {decide: () => {}});
  $("threads-open").addEventListener("click", () => openThreads());
  $("threads-close").addEventListener("click", () => closeThreads());
  $("thread-back").addEventListener("click", closeThreadView);
  $("threads-search").addEventListener("input", () => {
    clearTimeout(state.timer);
    state.timer = setTimeout(loadThreads, 250);
  });
}

export function threadsOpen() {
  return !$("threads").hidden;
}

export function openThreads() {
  $("threads").hidden = false;
  $("thread-view").hidden = true;
  loadThreads();
  $("threads-search").focus();
}

// Esc: the read-only thread first, then the browser.
export function closeThreads() {
  if (!$("thread-view").hidden) {
    closeThreadView();
    return;
  }
  $("threads").hidden = true;
  $("threads-open").focus();
}

// The read-only thread goes away whole (its turns are not left in the page).
function closeThreadView() {
  $("thread-view").hidden = true;
  state.reader.clear();
}

function hideThreads() {
  closeThreadView();
  $("threads").hidden = true;
}

async function loadThreads() {
  const generation = ++state.generation;
  const q = new URLSearchParams({limit: "50"});
  const search = $("threads-search").value.trim();
  if (search) q.set("search", search);
  let data;
  try {
    data = await api("GET", "/v1/codex/threads?" + q);
  } catch (e) {
    $("threads-status").textContent = e.message;
    return;
  }
  if (generation !== state.generation) return;
  $("threads-status").textContent = data.threads.length ? ""
    : search ? "no thread's title has “" + search + "”" : "Codex has no threads yet";
  $("thread-rows").replaceChildren(...data.threads.map(threadRow));
}

function threadRow(t) {
  const open = el("button", {type: "button", class: "small", "data-testid": "thread-open"},
                  "Open");
  open.addEventListener("click", () => readThread(t));
  let action;
  if (t.sessionId) {
    action = el("button", {type: "button", class: "small", "data-testid": "thread-session"},
                "Go to session");
    action.addEventListener("click", () => { hideThreads(); state.onOpenSession(t.sessionId); });
  } else {
    action = el("button", {type: "button", class: "small accept", "data-testid": "thread-adopt"},
                "Adopt");
    action.addEventListener("click", () => adopt(action, t));
  }
  return el("li", {"data-testid": "thread-row", "data-thread-id": t.threadId},
    el("div", {class: "thread-title"}, excerpt(t.name || t.preview || t.threadId, 140)),
    el("div", {class: "muted"}, [folderName(t.cwd), t.source, t.model, when(t.updatedAt),
                                 t.sessionId ? "in a session" : null]
      .filter(Boolean).join(" · ")),
    el("div", {class: "buttons"}, open, action));
}

async function readThread(t) {
  let data;
  try {
    data = await api("GET", "/v1/codex/threads/" + encodeURIComponent(t.threadId)
                     + "?limit=50");
  } catch (e) {
    failed("thread " + t.threadId, e, $("thread-rows"));
    return;
  }
  $("thread-view").hidden = false;
  $("thread-view-title").textContent = (data.thread && (data.thread.name || data.thread.preview))
    || t.threadId;
  state.reader.clear();
  state.reader.addTurns(data.turns || []);
  $("thread-view").scrollIntoView({block: "nearest"});
}

async function adopt(button, t) {
  const data = await act(button, "adopt", () =>
    api("POST", "/v1/codex/sessions", {threadId: t.threadId}));
  if (!data) return;
  hideThreads();
  state.onAdopted(data.session.sessionId);
}
