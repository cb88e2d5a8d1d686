// The selected session's turn queue (issue 23), under the conversation: what waits to run
// after the current turn, next first, each with move up/down and remove; a stopped queue says
// why and offers to try its head again.

import {$, el, excerpt} from "./dom.js";
import {act, api} from "./api.js";
import {inputText} from "./items.js";

const queue = {sessionId: null, generation: 0};

function path(sessionId, ...rest) {
  return "/v1/codex/sessions/" + [sessionId, "queue", ...rest].map(encodeURIComponent).join("/");
}

export function resetQueue(sessionId) {
  queue.sessionId = sessionId;
  queue.generation += 1;
  render(null);
}

export async function refreshQueue() {
  const sessionId = queue.sessionId;
  if (!sessionId) return;
  const generation = queue.generation;
  let data;
  try {
    data = await api("GET", path(sessionId), null, {wait: false});
  } catch (e) {
    return;  // shown again at the next refresh
  }
  if (generation === queue.generation) render(data.queue);
}

function render(q) {
  const list = $("queue");
  const entries = (q && q.entries) || [];
  $("queue-box").hidden = entries.length === 0 && !(q && q.stopped);
  $("queue-count").textContent = entries.length ? "(" + entries.length + ")" : "";
  const stopped = $("queue-stopped");
  stopped.hidden = !(q && q.stopped);
  if (q && q.stopped) {
    $("queue-stopped-text").textContent = "The queue stopped: " + q.stopped.message
      + " (" + q.stopped.code + "). Remove the first entry or try it again.";
  }
  list.replaceChildren(...entries.map((entry, i) => {
    const id = entry.queueId;
    const up = el("button", {type: "button", class: "small", "data-testid": "queue-up",
                             "aria-label": "run earlier", disabled: i === 0}, "↑");
    const down = el("button", {type: "button", class: "small", "data-testid": "queue-down",
                               "aria-label": "run later", disabled: i === entries.length - 1},
                    "↓");
    const remove = el("button", {type: "button", class: "small decline",
                                 "data-testid": "queue-remove"}, "Remove");
    up.addEventListener("click", () => move(up, id, i - 1));
    down.addEventListener("click", () => move(down, id, i + 1));
    remove.addEventListener("click", () => drop(remove, id));
    return el("li", {"data-testid": "queue-item", "data-queue-id": id,
                     "data-state": entry.state},
      el("span", {class: "queued-text"}, excerpt(inputText(entry.input), 200)),
      entry.state === "starting" ? el("span", {class: "badge"}, "starting") : null,
      el("span", {class: "buttons"}, up, down, remove));
  }));
}

async function move(button, queueId, position) {
  const sessionId = queue.sessionId;
  const data = await act(button, "move", () =>
    api("POST", path(sessionId, queueId, "move"), {position}));
  if (data && sessionId === queue.sessionId) render(data.queue);
}

async function drop(button, queueId) {
  const sessionId = queue.sessionId;
  const data = await act(button, "remove", () => api("DELETE", path(sessionId, queueId)));
  if (data && sessionId === queue.sessionId) render(data.queue);
  else refreshQueue();
}

export async function resumeQueue(button) {
  const sessionId = queue.sessionId;
  const data = await act(button, "resume the queue", () =>
    api("POST", path(sessionId, "resume"), {}));
  if (data && sessionId === queue.sessionId) render(data.queue);
}
