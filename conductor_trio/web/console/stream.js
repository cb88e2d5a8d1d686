// The selected session's relay websocket (/v1/codex/events?sessionId=…&after=…&batch=1), its
// state badge and the raw Events tab. view.cursor (state.js) is where a (re)connection resumes;
// the console drops what is at or below it (console.js, addEvent).

import {$, el} from "./dom.js";
import {token} from "./api.js";
import {RETRY_MIN_MS, view} from "./state.js";

const RETRY_MAX_MS = 10000;
const MAX_EVENT_ROWS = 1000;
// onEvent(event): each event of the session; onReconnect(): before a reconnection.
const hooks = {onEvent: () => {}, onReconnect: () => {}};

export function initStream(given) {
  Object.assign(hooks, given);
}

export function setStreamState(state) {
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

export function openStream() {
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
      for (const e of frame) if (e && typeof e.seq === "number") hooks.onEvent(e);
    } else if (typeof frame.seq === "number") {
      hooks.onEvent(frame);
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
      hooks.onReconnect();
      openStream();
    }, delay);
  };
}

export function closeStream() {
  clearTimeout(view.retryTimer);
  view.generation += 1;
  if (view.ws) {
    const ws = view.ws;
    view.ws = null;
    ws.onclose = null;
    ws.close(1000, "console selected another session");
  }
}

export function eventRow(e) {
  const list = $("events");
  const d = e.detail || {};
  const text = e.type === "app-server.item.agentMessage.delta"
    ? JSON.stringify(d.delta || "") : e.message || "";
  list.prepend(el("li", {"data-testid": "event-row", "data-seq": String(e.seq),
                         "data-type": e.type, class: "lvl-" + (e.level || "info")},
    el("span", {class: "seq"}, "#" + e.seq),
    el("span", {class: "time"}, (e.at || "").slice(11, 19)),
    el("span", {class: "type", title: e.type}, e.type),
    el("span", {class: "msg"}, text)));
  while (list.childElementCount > MAX_EVENT_ROWS) list.lastElementChild.remove();
}
