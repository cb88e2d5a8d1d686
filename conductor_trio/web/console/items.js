// One item of a conversation: Codex's items in the transcript's shapes (a port of
// codexd_trio/core/items.py, so a turn looks the same live and read back), and each item's
// block on the page. Everything from Codex is set as text, except agent Markdown, which goes
// through markdown.js (sanitized).

import {el} from "./dom.js";
import {renderMarkdown} from "./markdown.js";

// A finished command's output stays open when it is this short; longer ones fold.
const OPEN_OUTPUT_LINES = 30;

// -- Codex's items in the transcript's shapes (a port of codexd_trio/core/items.py) ----------

function lines(text) {
  return text ? text.match(/[^\n]*\n|[^\n]+$/g) || [] : [];
}

function hunk(ls, sign) {
  const body = ls.map((l) => l.endsWith("\n") ? sign + l
    : sign + l + "\n\\ No newline at end of file\n").join("");
  const n = ls.length;
  return sign === "+" ? `@@ -0,0 +${n ? 1 : 0},${n} @@\n${body}`
    : `@@ -${n ? 1 : 0},${n} +0,0 @@\n${body}`;
}

// A unified diff with ---/+++ headers (Codex sends an update as bare hunks and an added file as
// its raw content).
export function unifiedDiff(path, kind, diff, movePath) {
  diff = diff || "";
  if (diff.startsWith("--- ") || diff.startsWith("diff --git ")) return diff;
  const name = String(path || "").replace(/^\/+/, "");
  if (kind === "add") return `--- /dev/null\n+++ b/${name}\n` + (diff ? hunk(lines(diff), "+") : "");
  if (kind === "delete") return `--- a/${name}\n+++ /dev/null\n` + (diff ? hunk(lines(diff), "-") : "");
  const target = String(movePath || path || "").replace(/^\/+/, "");
  return `--- a/${name}\n+++ b/${target}\n` + diff;
}

export function changesOf(raw) {
  if (!Array.isArray(raw)) return [];
  return raw.filter((c) => c && typeof c === "object").map((c) => {
    let kind = "update";
    let movePath = null;
    if (c.kind && typeof c.kind === "object") {
      kind = c.kind.type || "update";
      movePath = c.kind.move_path || c.kind.movePath || null;
    } else if (typeof c.kind === "string") {
      kind = c.kind;
    }
    if (kind === "update" && movePath) kind = "move";
    const path = c.path || "";
    return {path, kind, movePath, diff: unifiedDiff(path, kind, c.diff, movePath)};
  });
}

function partsText(content) {
  if (!Array.isArray(content)) return typeof content === "string" ? content : "";
  return content.filter((p) => p && p.type === "text" && typeof p.text === "string")
    .map((p) => p.text).join("");
}

function summaryText(v) {
  if (typeof v === "string") return v;
  if (!Array.isArray(v)) return "";
  return v.map((p) => typeof p === "string" ? p : (p && p.text) || "").filter(Boolean)
    .join("\n\n");
}

export function shapeItem(item) {
  const type = item.type || "unknown";
  const id = item.id || "";
  if (type === "userMessage") return {type, id, text: partsText(item.content), content: item.content};
  if (type === "agentMessage" || type === "plan") return {type, id, text: item.text || ""};
  if (type === "reasoning") return {type, id, summary: summaryText(item.summary)};
  if (type === "commandExecution") {
    return {type, id, command: item.command, cwd: item.cwd, status: item.status,
            exitCode: item.exitCode, durationMs: item.durationMs,
            output: item.aggregatedOutput || ""};
  }
  if (type === "fileChange") return {type, id, status: item.status, changes: changesOf(item.changes)};
  const data = {...item};
  delete data.type; delete data.id;
  return {type, id, data};
}

export function approvalItem(a, changes) {
  const p = a.params || {};
  const command = Array.isArray(p.command) ? p.command.join(" ") : p.command;
  return {type: "approval", id: a.approvalId, approvalId: a.approvalId, kind: a.kind,
          itemId: a.itemId, command: a.kind === "commandExecution" ? command : null,
          cwd: a.kind === "commandExecution" ? p.cwd : null, reason: p.reason || null,
          changes: a.kind === "fileChange" ? changes || null : null,
          status: a.state || "pending", decision: a.decision || null,
          decidedBy: a.decidedBy || null};
}

export function inputText(input) {
  if (typeof input === "string") return input;
  if (!Array.isArray(input)) return "";
  return input.map((p) => !p ? "" : p.type === "text" ? p.text
    : "[" + (p.type || "input") + (p.path || p.url ? ": " + (p.path || p.url) : "") + "]")
    .filter(Boolean).join("\n");
}

// -- rendering one item -----------------------------------------------------------------------

function commandMeta(item) {
  const bits = [];
  if (item.cwd) bits.push("in " + item.cwd);
  if (Number.isInteger(item.exitCode)) bits.push("exit " + item.exitCode);
  else if (item.status && !["completed", "inProgress"].includes(item.status)) {
    bits.push(item.status);  // declined, failed
  }
  if (Number.isInteger(item.durationMs)) {
    bits.push(item.durationMs < 1000 ? item.durationMs + " ms"
      : (item.durationMs / 1000).toFixed(1) + " s");
  }
  return bits.join(" · ");
}

export function renderCommand(item, node) {
  const running = !item.status || item.status === "inProgress";
  const block = node || el("details", {class: "cmd", "data-testid": "command-block",
                                       "data-item-id": item.id, open: true},
    el("summary", {}, el("code", {class: "cmd-line"}, "$ " + (item.command || "")),
       el("span", {class: "cmd-meta"})),
    el("pre", {class: "cmd-out", "data-testid": "command-output"}));
  block.dataset.status = item.status || "inProgress";
  if (Number.isInteger(item.exitCode)) block.dataset.exitCode = String(item.exitCode);
  block.querySelector(".cmd-meta").textContent = commandMeta(item);
  const out = block.querySelector(".cmd-out");
  if (!running || item.output) out.textContent = item.output || "";
  if (!running && !node && lines(item.output || "").length > OPEN_OUTPUT_LINES) block.open = false;
  if (item.truncated) block.append(el("div", {class: "muted"}, "output cut: "
    + item.outputBytes + " bytes in all"));
  return block;
}

function diffLine(line) {
  if (line.startsWith("+++") || line.startsWith("---")) return el("span", {class: "dh"}, line);
  if (line.startsWith("@@")) return el("span", {class: "hunk"}, line);
  if (line.startsWith("+")) return el("span", {class: "add", "data-testid": "diff-add"}, line);
  if (line.startsWith("-")) return el("span", {class: "del", "data-testid": "diff-del"}, line);
  return el("span", {class: "ctx"}, line);
}

function renderChanges(changes) {
  return (changes || []).map((c) => el("section", {class: "diff", "data-testid": "diff-file",
                                                   "data-path": c.path},
    el("h4", {}, el("code", {}, c.movePath ? c.path + " → " + c.movePath : c.path),
       " ", el("span", {class: "badge"}, c.kind)),
    el("pre", {class: "diff-body"}, (c.diff || "").split("\n")
      .filter((l, i, all) => l || i < all.length - 1).map(diffLine)),
    c.truncated ? el("div", {class: "muted"}, "diff cut: " + c.diffBytes + " bytes") : null));
}

function renderFileChange(item) {
  return el("div", {class: "filechange", "data-testid": "file-change", "data-item-id": item.id,
                    "data-status": item.status || "inProgress"},
    renderChanges(item.changes),
    item.status && item.status !== "completed"
      ? el("div", {class: "muted"}, "patch " + item.status) : null);
}

export function renderAgent(item, node) {
  const box = node || el("div", {class: "agent md", "data-testid": "transcript-agent",
                                 "data-item-id": item.id, "data-kind": item.type});
  box.replaceChildren(renderMarkdown(item.text));
  return box;
}

const DECISIONS = [["accept", "Accept", "accept"], ["acceptForSession", "Accept for session",
  "accept"], ["decline", "Decline", "decline"]];

function renderApproval(item, hooks) {
  const what = item.kind === "commandExecution"
    ? ["Codex asks to run ", el("code", {}, item.command || "a command"),
       item.cwd ? el("span", {class: "muted"}, " in " + item.cwd) : null]
    : ["Codex asks to change files"];
  const box = el("div", {class: "approval-inline", "data-testid": "approval-inline",
                         "data-inline-approval-id": item.approvalId,
                         "data-status": item.status},
    el("div", {class: "what"}, what),
    item.reason ? el("div", {class: "muted"}, item.reason) : null,
    // The diffs to decide on while it waits; once decided, the file change shows them.
    item.changes && item.status === "pending" ? renderChanges(item.changes) : null,
    item.changes && item.status !== "pending"
      ? el("div", {class: "muted"}, item.changes.map((c) => c.path).join(", ")) : null);
  if (item.status === "pending") {
    const buttons = DECISIONS.map(([decision, label, cls]) => {
      const b = el("button", {type: "button", class: cls,
                              "data-testid": "approval-inline-" + decision}, label);
      b.addEventListener("click", () => hooks.decide(item.approvalId, decision, b));
      return b;
    });
    box.append(el("div", {class: "buttons"}, buttons));
  } else {
    const text = item.status === "expired" && !item.decision ? "expired"
      : (item.decision || item.status) + (item.decidedBy ? " by " + item.decidedBy : "");
    box.append(el("div", {class: "decided", "data-decision": item.decision || ""}, text));
  }
  return box;
}

export function renderItem(item, hooks) {
  switch (item.type) {
    case "agentMessage": case "plan": return renderAgent(item);
    case "commandExecution": return renderCommand(item);
    case "fileChange": return renderFileChange(item);
    case "approval": return renderApproval(item, hooks);
    case "userMessage":
      return el("div", {class: "user steer", "data-testid": "transcript-steer"}, item.text);
    case "reasoning":
      // Collapsed; and not shown at all when Codex sent no summary.
      return el("details", {class: "reasoning", hidden: !item.summary},
                el("summary", {}, "thinking"),
                el("div", {class: "md"}, renderMarkdown(item.summary)));
    default: {
      const name = (item.data && (item.data.tool || item.data.query || item.data.name)) || "";
      return el("details", {class: "other"}, el("summary", {}, "· " + item.type + " " + name),
                el("pre", {}, JSON.stringify(item.data || {}, null, 2)));
    }
  }
}

export function usageText(u) {
  if (!u) return "";
  const last = u.last || u.total || {};
  if (last.totalTokens == null) return "";
  let text = last.totalTokens.toLocaleString("en") + " tokens";
  if (last.inputTokens != null) {
    text += " (in " + last.inputTokens.toLocaleString("en") + ", out "
      + (last.outputTokens || 0).toLocaleString("en") + ")";
  }
  return text;
}

