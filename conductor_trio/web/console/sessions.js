// The sessions: a title, the project folder, a human state ("waiting for you" first), the last
// answer and the last activity; the "new session" form; j/k between them.

import {$, el, excerpt, folderName, short, tailPath, when} from "./dom.js";
import {act, api, notify} from "./api.js";
import {PAGE_LIMIT, pending, table, view} from "./state.js";
import {refreshNode} from "./node.js";
import {select} from "./console.js";

// What a person needs to know about a session, in their words. "waiting for you" sorts first.
const STATES = {waiting: "waiting for you", working: "working", failed: "failed", done: "done",
                new: "new"};

export function humanState(s) {
  if (pending.bySession.get(s.sessionId)) return "waiting";
  if (s.currentTurnId) return "working";
  if (s.lastTurnStatus === "failed") return "failed";
  return s.turnCount || s.lastTurnStatus ? "done" : "new";
}

export async function refreshSessions() {
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

export function renderSessions() {
  const shown = table.sessions.slice(0, table.shown);
  // Stable: within each group the API's order (newest activity first) stays.
  const ordered = [...shown.filter((s) => humanState(s) === "waiting"),
                   ...shown.filter((s) => humanState(s) !== "waiting")];
  const rows = ordered.map((s) => {
    const st = humanState(s);
    const waiting = pending.bySession.get(s.sessionId);
    const tr = el("tr", {
      "data-testid": "session-row", "data-session-id": s.sessionId, "data-state": st,
      tabindex: "0", class: s.sessionId === view.id ? "selected" : "",
    },
    el("td", {class: "title"},
       el("span", {"data-testid": "session-title", class: "session-title"},
          s.title || "untitled"),
       " ", el("span", {class: "muted tag", title: s.sessionId}, short(s.sessionId)),
       " ", el("span", {class: "muted tag"}, s.purpose || "")),
    el("td", {class: "cwd", title: s.cwd || ""},
       el("b", {class: "folder"}, folderName(s.cwd)), " ",
       el("span", {class: "muted"}, tailPath(s.cwd))),
    el("td", {class: "state"},
       el("span", {class: "badge state-" + st, "data-testid": "session-state"}, STATES[st]),
       waiting ? el("span", {class: "badge waiting", "data-testid": "session-pending"},
                    waiting + " to approve") : null),
    el("td", {class: "excerpt"}, excerpt(s.lastTurnOutput, 80)),
    el("td", {class: "age", title: s.updatedAt || ""}, when(s.updatedAt)));
    tr.addEventListener("click", () => select(s.sessionId));
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") select(s.sessionId); });
    return tr;
  });
  $("session-rows").replaceChildren(...rows);
  $("sessions-more").hidden = !table.more && table.sessions.length <= table.shown;
}

export async function createSession(ev) {
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
  notify("created " + data.session.sessionId, "info", button);
  await opened(data.session.sessionId);
}

// A session made elsewhere on the page (adopted, forked): list it and open it.
export async function opened(sessionId) {
  refreshNode();
  await refreshSessions();
  await select(sessionId);
}

// j/k (and the arrows on a focused row) move between sessions.
export function moveSelection(step) {
  const rows = [...document.querySelectorAll("[data-testid=session-row]")];
  if (!rows.length) return;
  const at = rows.findIndex((r) => r.dataset.sessionId === view.id);
  const next = rows[Math.max(0, Math.min(rows.length - 1, at < 0 ? 0 : at + step))];
  next.focus({preventScroll: false});
  select(next.dataset.sessionId);
}

