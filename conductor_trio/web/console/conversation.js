// The selected session as a conversation: every turn in order (the prompt, the agent's
// messages as sanitized Markdown, commands with their output, file changes as diffs, reasoning
// collapsed, approvals where they were asked, token usage), built from the transcript
// (GET …/transcript) and then kept up to date by folding the relay's events into it.
//
// The items' shapes are the transcript's (docs/api.md, "Transcript"); what the stream carries
// is Codex's own items, shaped here the way codexd shapes them (core/items.py), so a turn looks
// the same live and read back.

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

function changesOf(raw) {
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

function renderCommand(item, node) {
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

function renderAgent(item, node) {
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

function renderItem(item, hooks) {
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

function usageText(u) {
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

// -- the conversation -------------------------------------------------------------------------

export class Conversation {
  // hooks.decide(approvalId, decision, button): an inline approval's button was pressed.
  constructor(root, hooks) {
    this.root = root;
    this.hooks = hooks;
    this.turns = new Map();
    this.dirty = new Map();  // itemId -> its turn: streamed text to render at the next frame
    this.frame = 0;
  }

  clear() {
    this.turns.clear();
    this.root.replaceChildren();
  }

  // Turns of a transcript page, oldest first; older pages go above what is shown.
  addTurns(turns, older) {
    const frag = document.createDocumentFragment();
    for (const t of turns) {
      if (this.turns.has(t.turnId)) continue;
      frag.append(this.build(t).node);
    }
    const follow = this.atBottom();
    if (older) this.root.prepend(frag); else this.root.append(frag);
    if (follow && !older) this.toBottom();
  }

  build(t) {
    const st = {id: t.turnId, status: t.status || "inProgress", items: new Map(),
                started: new Map(), sawUser: false, usage: t.tokenUsage || null,
                error: t.error || null, origin: t.origin || "turn"};
    st.box = el("div", {class: "items"});
    st.foot = el("footer", {class: "turn-foot"});
    st.prompt = el("div");
    st.node = el("article", {class: "turn", "data-testid": "transcript-turn",
                             "data-turn-id": t.turnId}, st.prompt, st.box, st.foot);
    this.prompt(st, t.input, st.origin);
    this.turns.set(t.turnId, st);
    for (const item of t.items || []) this.upsert(st, item);
    this.foot(st);
    return st;
  }

  // The prompt: from the turn's input (turn.accepted may come after Codex's turn/started).
  prompt(st, input, origin) {
    const text = inputText(input);
    st.origin = origin || st.origin;
    const node = text ? el("div", {class: "user", "data-testid": "transcript-user"}, text)
      : el("div", {class: "user origin muted"}, st.origin === "turn" ? "(no prompt)"
        : "(" + st.origin + ")");
    st.hasPrompt = Boolean(text);
    st.prompt.replaceWith(node);
    st.prompt = node;
  }

  turn(turnId, open) {
    if (!turnId) return null;
    let st = this.turns.get(turnId);
    if (!st && open) {
      st = this.build({turnId, status: "inProgress", input: open.input || [],
                       origin: open.origin || "codex"});
      const follow = this.atBottom();
      this.root.append(st.node);
      if (follow) this.toBottom();
    }
    return st || null;
  }

  upsert(st, item) {
    if (item.type === "userMessage" && !st.sawUser) {
      // The prompt, shown from the turn's input; a turn started from the queue or by Codex
      // itself says it only here.
      st.sawUser = true;
      if (!st.hasPrompt) this.prompt(st, item.content || item.text, st.origin);
      return;
    }
    const shown = st.items.get(item.id);
    if (shown && shown.item.type === "agentMessage" && item.type === "agentMessage") {
      shown.item = item;
      renderAgent(item, shown.node);
      return;
    }
    if (shown && item.type === "commandExecution" && shown.item.type === item.type) {
      shown.item = item;
      renderCommand(item, shown.node);
      return;
    }
    const node = renderItem(item, this.hooks);
    if (shown) shown.node.replaceWith(node); else st.box.append(node);
    st.items.set(item.id, {item, node});
  }

  foot(st) {
    st.node.dataset.status = st.status;
    const bits = [el("span", {class: "badge", "data-status": st.status},
                     st.status === "inProgress" ? "working" : st.status)];
    if (st.error) bits.push(el("span", {class: "bad"}, " " + st.error.message));
    const usage = usageText(st.usage);
    if (usage) bits.push(el("span", {class: "muted", "data-testid": "turn-usage"}, " " + usage));
    st.foot.replaceChildren(...bits);
  }

  atBottom() {
    const r = this.root;
    return r.scrollHeight - r.scrollTop - r.clientHeight < 48;
  }

  toBottom() {
    this.root.scrollTop = this.root.scrollHeight;
  }

  // Streamed text is re-rendered at most once per frame, not once per delta; a long message
  // (rendering grows with its length: ~2 ms per kB) waits a little longer between renders.
  schedule(st, itemId) {
    this.dirty.set(itemId, st);
    if (this.frame) return;
    const size = (st.items.get(itemId).item.text || "").length;
    const wait = Math.min(500, Math.floor(size / 100));
    this.frame = setTimeout(() => requestAnimationFrame(() => {
      this.frame = 0;
      const follow = this.atBottom();
      for (const [id, s] of this.dirty) {
        const shown = s.items.get(id);
        if (shown) renderAgent(shown.item, shown.node);
      }
      this.dirty.clear();
      if (follow) this.toBottom();
    }), wait);
  }

  // One event of the session's stream (already de-duplicated by seq).
  apply(e) {
    const d = e.detail || {};
    const follow = this.atBottom();
    switch (e.type) {
      case "turn.accepted": {
        const st = this.turn(e.turnId, {input: d.input, origin: d.origin || "turn"});
        if (st && !st.hasPrompt && d.input) this.prompt(st, d.input, d.origin || "turn");
        if (d.settled && st) { st.status = d.settled.status || st.status; this.foot(st); }
        break;
      }
      case "app-server.turn.started": {
        const t = d.turn || {};
        this.turn(t.rootTurnId || t.id || e.turnId, {origin: "codex"});
        break;
      }
      case "app-server.item.started": {
        const item = d.item || {};
        const st = this.turn(e.turnId, {origin: "codex"});
        if (!st || !item.id) break;
        if (item.type === "fileChange") st.started.set(item.id, changesOf(item.changes));
        if (item.type === "commandExecution" || item.type === "agentMessage") {
          if (!st.items.has(item.id)) this.upsert(st, shapeItem(item));
        }
        break;
      }
      case "app-server.item.agentMessage.delta": {
        const st = this.turn(e.turnId, {origin: "codex"});
        if (!st || !d.itemId) break;
        let shown = st.items.get(d.itemId);
        if (!shown) {
          this.upsert(st, {type: "agentMessage", id: d.itemId, text: ""});
          shown = st.items.get(d.itemId);
        }
        shown.item = {...shown.item, text: (shown.item.text || "") + (d.delta || "")};
        this.schedule(st, d.itemId);
        return;
      }
      case "app-server.item.commandExecution.outputDelta": {
        const st = this.turn(e.turnId, null);
        const shown = st && st.items.get(d.itemId);
        if (!shown) break;
        shown.item.output = (shown.item.output || "") + (d.delta || "");
        shown.node.querySelector(".cmd-out").textContent = shown.item.output;
        break;
      }
      case "app-server.item.completed": {
        const st = this.turn(e.turnId, {origin: "codex"});
        if (st && d.item && d.item.id) this.upsert(st, shapeItem(d.item));
        break;
      }
      case "app-server.thread.tokenUsage.updated": {
        const st = this.turn(e.turnId, null);
        if (st && d.tokenUsage) { st.usage = d.tokenUsage; this.foot(st); }
        break;
      }
      case "approval.requested": case "approval.resolved": {
        const a = d.approval || {};
        const st = this.turn(e.turnId, null);
        if (st && a.approvalId) this.upsert(st, approvalItem(a, st.started.get(a.itemId)));
        break;
      }
      case "app-server.turn.completed": {
        const st = this.turn(e.turnId, null);
        if (!st) break;
        const t = d.turn || {};
        st.status = ["completed", "interrupted", "failed"].includes(t.status) ? t.status
          : "completed";
        if (t.error) st.error = {message: t.error.message || String(t.error)};
        this.settle(st);
        break;
      }
      case "turn.failed": case "app-server.turn.completed.missing": {
        const st = this.turn(e.turnId, null);
        if (!st) break;
        st.status = "failed";
        st.error = d.error && d.error.message ? d.error : {message: e.message || "failed"};
        this.settle(st);
        break;
      }
      default:
        return;
    }
    if (follow) this.toBottom();
  }

  settle(st) {
    // An approval still pending when its turn ended can no longer be decided.
    for (const shown of st.items.values()) {
      if (shown.item.type === "approval" && shown.item.status === "pending") {
        this.upsert(st, {...shown.item, status: "expired"});
      }
    }
    this.foot(st);
  }

  running() {
    return [...this.turns.values()].some((t) => t.status === "inProgress");
  }
}
