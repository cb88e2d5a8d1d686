// The selected session as a conversation: every turn in order (the prompt, the agent's
// messages as sanitized Markdown, commands with their output, file changes as diffs, reasoning
// collapsed, approvals where they were asked, token usage), built from the transcript
// (GET …/transcript) and then kept up to date by folding the relay's events into it.
//
// The items' shapes are the transcript's (docs/api.md, "Transcript"); what the stream carries
// is Codex's own items, shaped here the way codexd shapes them (core/items.py), so a turn looks
// the same live and read back (items.js).

import {approvalItem, changesOf, inputText, renderAgent, renderCommand, renderItem, shapeItem,
        usageText} from "./items.js";
import {el} from "./dom.js";

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
  // (rendering grows with its length: ~1.5 ms per kB) waits a little longer between renders.
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
