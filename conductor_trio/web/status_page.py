"""The status snapshot's page: one self-contained HTML document (no external assets).

The page fetches ``/v1/status`` (same origin) every few seconds and fills itself in, so the same
page works on the conductor and on the status-api. It is laid out for a phone first.
"""

from __future__ import annotations

import html

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  :root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; }
  body { font: 16px/1.4 system-ui, -apple-system, sans-serif; margin: 0; padding: 12px;
         max-width: 720px; margin-inline: auto; }
  h1 { font-size: 1.25rem; margin: 0 0 4px; }
  .sub { color: #777; font-size: .85rem; margin-bottom: 12px; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
  .card { border: 1px solid #8884; border-radius: 10px; padding: 10px; }
  .card.wide { grid-column: 1 / -1; }
  .label { font-size: .75rem; text-transform: uppercase; letter-spacing: .04em; color: #777; }
  .value { font-size: 1.15rem; font-weight: 600; word-break: break-word; }
  .ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
  ul { margin: 4px 0 0; padding-left: 18px; font-size: .9rem; }
  #error { display: none; margin-bottom: 8px; padding: 8px; border-radius: 8px;
           background: #cf222e22; color: var(--bad); }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div class="sub">node <b id="node-id">…</b> · source <span id="source">…</span>
  · updated <span id="observed-at">…</span>__CONSOLE_LINK__</div>
<div id="error"></div>
<div class="grid">
  <div class="card"><div class="label">Role</div><div class="value" id="role">…</div></div>
  <div class="card"><div class="label">Mode</div><div class="value" id="mode">…</div></div>
  <div class="card"><div class="label">codexd</div><div class="value" id="codexd">…</div></div>
  <div class="card"><div class="label">Child</div><div class="value" id="child">…</div></div>
  <div class="card"><div class="label">Sessions</div><div class="value" id="sessions">…</div></div>
  <div class="card"><div class="label">Last event</div>
    <div class="value" id="last-seq">…</div></div>
  <div class="card wide"><div class="label">Lease</div><div class="value" id="lease">…</div></div>
  <div class="card wide"><div class="label">Metrics endpoints</div>
    <div class="value" id="metrics">…</div><ul id="metrics-detail"></ul></div>
  <div class="card wide"><div class="label">Active turns</div>
    <div class="value" id="active-count">…</div><ul id="active-turns"></ul></div>
  <div class="card wide"><div class="label">Warnings</div><ul id="warnings"></ul></div>
</div>
<script>
"use strict";
const REFRESH_MS = 3000;
function setText(id, text, cls) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.className = "value" + (cls ? " " + cls : "");
}
function list(id, items) {
  const ul = document.getElementById(id);
  ul.replaceChildren(...items.map(t => { const li = document.createElement("li");
    li.textContent = t; return li; }));
}
function render(s) {
  document.getElementById("source").textContent = s.source || "?";
  document.getElementById("observed-at").textContent = s.observed_at || "?";
  const err = document.getElementById("error");
  if (s.source === "unreachable") {
    err.style.display = "block";
    err.textContent = "conductor unreachable: " + ((s.conductor || {}).error || "");
    document.getElementById("node-id").textContent = "?";
    ["role", "mode", "codexd", "child", "sessions", "last-seq", "lease", "active-count",
     "metrics"].forEach(id => setText(id, "unknown", "warn"));
    list("active-turns", []);
    list("metrics-detail", []);
    list("warnings", s.warnings || []);
    return;
  }
  err.style.display = "none";
  document.getElementById("node-id").textContent = (s.node || {}).node_id || "?";
  const roleCls = s.role === "leader" ? "ok" : (s.role === "degraded" ? "bad" : "warn");
  setText("role", s.role || "?", roleCls);
  const mode = (s.mode || {}).mode || "?";
  setText("mode", mode + ((s.mode || {}).reason ? " — " + s.mode.reason : ""),
          mode === "running" ? "ok" : "warn");
  const cx = s.codexd || {};
  setText("codexd", cx.reachable ? "reachable" : "unreachable", cx.reachable ? "ok" : "bad");
  const child = cx.child || {};
  setText("child",
          child.status ? child.status + (child.pid ? " (pid " + child.pid + ")" : "") : "—",
          child.status === "running" ? "ok" : "warn");
  const ss = s.sessions || {};
  setText("sessions", ss.count == null ? "—" : ss.count + " (" + ss.active_count + " active)");
  setText("last-seq", s.last_event_seq == null ? "—" : "#" + s.last_event_seq);
  const l = s.lease || {};
  // The term is the fencing token (with etcd: the key's create revision).
  setText("lease", l.holder_id ? l.holder_id + " · term " + l.term
          + (l.store ? " · " + l.store : "")
          + (l.expires_at ? " · until " + l.expires_at : "") : "no lease");
  // GET /metrics of each daemon: the conductor's and codexd's from the conductor, the
  // status-api's own when the page is served by it.
  const m = Object.assign({}, s.metrics || {});
  if (s.status_api && s.status_api.metrics) m["status-api"] = s.status_api.metrics;
  const names = Object.keys(m);
  const failing = names.filter(n => !m[n].ok);
  setText("metrics", names.length === 0 ? "—" : (failing.length === 0 ? "all ok"
          : failing.join(", ") + " failing"), failing.length === 0 ? "ok" : "bad");
  list("metrics-detail", names.map(n => n + ": " + (m[n].ok ? "ok, " + m[n].families
       + " metric families" : "failing" + (m[n].error ? " (" + m[n].error + ")" : ""))));
  const turns = s.active_turns || [];
  setText("active-count", String(turns.length));
  list("active-turns", turns.map(t => t.sessionId + " · " + t.turnId));
  list("warnings", s.warnings || []);
}
async function refresh() {
  try {
    const r = await fetch("/v1/status", {cache: "no-store"});
    const body = await r.json();
    if (!body.ok) throw new Error(body.error ? body.error.message : "HTTP " + r.status);
    render(body.data);
  } catch (e) {
    const err = document.getElementById("error");
    err.style.display = "block";
    err.textContent = "cannot load /v1/status: " + e.message;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""


def render_page(title: str, *, console_href: str | None = None) -> str:
    """The status page with a title (the data arrives by ``fetch``).

    ``console_href`` links the operator console: ``/console`` on the conductor's own page, the
    conductor's absolute URL on the status-api's (which is read-only and serves none).
    """
    link = (f' · <a id="console-link" href="{html.escape(console_href)}">console</a>'
            if console_href else "")
    return PAGE.replace("__TITLE__", title).replace("__CONSOLE_LINK__", link)
