// The node panel: role, lease, mode and its buttons, codexd and its child, metrics highlights.

import {$, el} from "./dom.js";
import {act, api, notify, token} from "./api.js";
import {node} from "./state.js";

export function setValue(id, text, cls) {
  const e = $(id);
  e.textContent = text;
  e.className = cls || "";
}

export async function refreshNode() {
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
  setValue("active-turns", String((s.active_turns || []).length));
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

export async function changeMode(button, verb) {
  await act(button, verb, async () => {
    const state = await api("POST", "/v1/system/" + verb, {requested_by: "console"});
    renderMode(state);
    notify("mode: " + state.mode, "info", button);
  });
}

// Metrics highlights: /metrics (Prometheus text) when the daemon serves it; otherwise the panel
// stays hidden. Kept in one function because the metric names are still settling.
let lastTurns = null;
export async function refreshMetrics() {
  // The conductor's own series (requests) and codexd's through the conductor (turns).
  const texts = [];
  for (const path of ["/metrics", "/v1/codex/metrics"]) {
    try {
      const headers = token() ? {Authorization: "Bearer " + token()} : {};
      const r = await fetch(path, {cache: "no-store", headers});
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

