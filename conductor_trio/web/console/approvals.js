// Pending approvals of the whole node: the selected session's are listed with their buttons
// (and shown inline in its conversation), the others are counted on their session's row; the
// page's title counts them all (alerts.js).

import {$, el, when} from "./dom.js";
import {act, api} from "./api.js";
import {pending, table, view} from "./state.js";
import {setValue} from "./node.js";
import {renderSessions} from "./sessions.js";
import {noteApprovals} from "./alerts.js";

export async function refreshApprovals() {
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
  noteApprovals(data.approvals, (id) => table.sessions.find((s) => s.sessionId === id));
  if (changed) renderSessions();
  if (!view.id || generation !== view.generation) return;
  const mine = data.approvals.filter((a) => a.sessionId === view.id);
  $("approvals-box").hidden = mine.length === 0;
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

export async function decide(approvalId, decision, button) {
  const done = await act(button, "approval " + approvalId, () =>
    api("POST", "/v1/codex/approvals/" + encodeURIComponent(approvalId),
        {decision, decidedBy: "console"}));
  refreshApprovals();  // decided here, elsewhere (409) or gone: show what is true now
  return done;
}

function approvalRow(a) {
  const p = a.params || {};
  const buttons = [["accept", "Accept", "accept", "approval-accept"],
                   // Accept for session: Codex stops asking for the same command here.
                   ["acceptForSession", "Accept for session", "accept",
                    "approval-accept-session"],
                   ["decline", "Decline", "decline", "approval-decline"]]
    .map(([decision, label, cls, testid]) => {
      const b = el("button", {type: "button", "data-testid": testid, class: cls}, label);
      b.addEventListener("click", async () => {
        if (await decide(a.approvalId, decision, b) !== undefined) row.remove();
      });
      return b;
    });
  const row = el("li", {"data-testid": "approval-row", "data-approval-id": a.approvalId},
    el("div", {class: "what"}, el("span", {class: "badge"}, a.kind), " ",
       el("code", {}, approvalWhat(a))),
    el("div", {class: "muted"}, [p.cwd && "in " + p.cwd, p.reason,
                                 "asked " + when(a.createdAt)].filter(Boolean).join(" · ")),
    el("div", {class: "buttons"}, buttons));
  return row;
}

