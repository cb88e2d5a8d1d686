// The fleet view (issue 28): every node with its health, all sessions and all pending
// approvals with their node, and a new session placed by node or labels.
//
// A module of its own, loaded after pair.js and console.js (all deferred, in order). It builds
// its section and appends it to the page's layout, so the page's own markup is untouched; it
// reads the same credential as console.js (the shared token of this tab, else this device's
// token from pair.js) and calls only /v1/fleet/* on the conductor that served it, which asks
// the other nodes. Without etcd the fleet is this node alone, and the view says so.
// Everything is inside one function: the page's scripts share one global scope, and a helper
// named like one of console.js's (el) would replace it.
(() => {
  "use strict";

  const FLEET_REFRESH_MS = 5000;
  const FLEET_TOKEN_KEY = "baa.conductor.token";  // console.js's key for the tab's token

  function fleetToken() {
    const typed = sessionStorage.getItem(FLEET_TOKEN_KEY);
    if (typed) return typed;
    return typeof deviceToken === "function" ? deviceToken() : "";
  }

  async function fleetCall(method, path, body) {
    const headers = {Accept: "application/json"};
    const t = fleetToken();
    if (t) headers.Authorization = "Bearer " + t;
    const init = {method, headers, cache: "no-store", credentials: "omit"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let reply;
    try {
      reply = await fetch(path, init);
    } catch (e) {
      return {ok: false, error: {code: "unreachable", message: "the conductor cannot be reached"}};
    }
    try {
      return await reply.json();
    } catch (e) {
      return {ok: false, error: {code: "bad_answer", message: "HTTP " + reply.status}};
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else if (name.startsWith("data-")) node.setAttribute(name, value);
      else node[name] = value;
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function fleetSection() {
    const section = el("section", {className: "card wide", id: "fleet", "data-testid": "fleet"});
    section.setAttribute("aria-labelledby", "fleet-h");
    section.append(
      el("h2", {id: "fleet-h", text: "Fleet "},
         el("span", {id: "fleet-summary", className: "muted", "data-testid": "fleet-summary"})),
      el("p", {id: "fleet-error", className: "muted", "data-testid": "fleet-error", hidden: true}),
      el("h3", {text: "Nodes"}),
      el("div", {className: "table-wrap"}, el("table", {},
        el("thead", {}, el("tr", {}, ...["node", "state", "mode", "Codex", "sessions",
          "active turns", "approvals", "labels"].map((h) => el("th", {text: h})))),
        el("tbody", {id: "fleet-nodes", "data-testid": "fleet-nodes"}))),
      el("h3", {text: "New session on the fleet"}),
      fleetForm(),
      el("p", {id: "fleet-placed", className: "muted", "data-testid": "fleet-placed"}),
      el("h3", {text: "Pending approvals, every node"}),
      el("ul", {id: "fleet-approvals", className: "approvals", "data-testid": "fleet-approvals"}),
      el("h3", {text: "Sessions, every node"}),
      el("div", {className: "table-wrap"}, el("table", {},
        el("thead", {}, el("tr", {}, ...["id", "node", "status", "last turn", "updated"].map(
          (h) => el("th", {text: h})))),
        el("tbody", {id: "fleet-sessions", "data-testid": "fleet-sessions"}))),
    );
    return section;
  }

  function fleetForm() {
    const form = el("form", {id: "fleet-new-form", className: "new-session",
                             autocomplete: "off", "data-testid": "fleet-new-form"},
      el("input", {id: "fleet-cwd", name: "cwd", placeholder: "cwd (absolute path on that node)"}),
      el("select", {id: "fleet-node", name: "node", "data-testid": "fleet-node"},
         el("option", {value: "", text: "node: least busy"})),
      el("input", {id: "fleet-labels", name: "labels", "data-testid": "fleet-labels",
                   placeholder: "labels: gpu, repo=baa"}),
      el("button", {type: "submit", text: "Create on the fleet", "data-testid": "fleet-new"}));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      createOnFleet();
    });
    return form;
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
  }

  function renderNodes(data) {
    const rows = document.getElementById("fleet-nodes");
    const select = document.getElementById("fleet-node");
    const chosen = select.value;
    rows.replaceChildren();
    select.replaceChildren(el("option", {value: "", text: "node: least busy"}));
    const all = data.nodes.concat(data.offline);
    for (const n of all) {
      const r = n.registration || {};
      const c = r.counts || {};
      const state = !n.registered ? "offline" : (n.reachable ? "ok" : "unreachable");
      const labels = Object.entries(r.labels || {}).map(([k, v]) => (v ? k + "=" + v : k));
      const row = el("tr", {"data-testid": "fleet-node-row", "data-node": n.nodeId,
                            "data-state": state},
        el("td", {}, el("code", {text: n.nodeId + (n.self ? " (this node)" : "")})),
        el("td", {text: state + (n.error && state !== "ok" ? ": " + n.error : "")}),
        el("td", {text: r.mode || "?"}),
        el("td", {text: r.child || "?"}),
        el("td", {text: c.sessions == null ? "?" : String(c.sessions)}),
        el("td", {text: c.activeTurns == null ? "?" : String(c.activeTurns)}),
        el("td", {text: c.pendingApprovals == null ? "?" : String(c.pendingApprovals)}),
        el("td", {text: labels.join(", ")}));
      rows.append(row);
      if (n.registered) select.append(el("option", {value: n.nodeId, text: "node: " + n.nodeId}));
    }
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
    const down = all.filter((n) => !n.registered || !n.reachable).length;
    document.getElementById("fleet-summary").textContent =
      all.length + (all.length === 1 ? " node" : " nodes") + (down ? ", " + down + " down" : "");
  }

  function renderSessions(data) {
    const rows = document.getElementById("fleet-sessions");
    rows.replaceChildren();
    for (const s of data.sessions) {
      rows.append(el("tr", {"data-testid": "fleet-session-row", "data-session": s.sessionId,
                            "data-node": s.node},
        el("td", {}, el("code", {text: s.sessionId})),
        el("td", {text: s.node}),
        el("td", {text: s.status}),
        el("td", {text: s.lastTurnStatus || ""}),
        el("td", {text: when(s.updatedAt)})));
    }
  }

  function renderApprovals(data) {
    const list = document.getElementById("fleet-approvals");
    list.replaceChildren();
    if (!data.approvals.length) {
      list.append(el("li", {className: "muted", text: "none waiting"}));
      return;
    }
    for (const a of data.approvals) {
      const what = (a.params && (a.params.command || a.params.reason)) || a.kind;
      const item = el("li", {"data-testid": "fleet-approval", "data-approval": a.approvalId,
                             "data-node": a.node},
        el("span", {text: a.node + " · " + a.kind + ": "}),
        el("code", {text: Array.isArray(what) ? what.join(" ") : String(what)}),
        el("span", {className: "muted", text: " (session " + a.sessionId + ")"}));
      for (const decision of ["accept", "decline"]) {
        const button = el("button", {type: "button", text: decision === "accept" ? "Accept"
          : "Decline", "data-testid": "fleet-approval-" + decision});
        button.addEventListener("click", () => decideOnFleet(a, decision, button));
        item.append(" ", button);
      }
      list.append(item);
    }
  }

  function fleetError(message) {
    const box = document.getElementById("fleet-error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  async function refreshFleet() {
    const [nodes, sessions, approvals] = await Promise.all([
      fleetCall("GET", "/v1/fleet/nodes"),
      fleetCall("GET", "/v1/fleet/sessions?limit=50"),
      fleetCall("GET", "/v1/fleet/approvals?state=pending&limit=50"),
    ]);
    if (!nodes.ok) {
      fleetError(nodes.error.code === "unauthorized"
        ? "The fleet needs the shared token (Node panel) or a paired device."
        : "The fleet cannot be read: " + nodes.error.message);
      return;
    }
    fleetError(nodes.data.etcdError ? "etcd does not answer: " + nodes.data.etcdError : "");
    renderNodes(nodes.data);
    if (sessions.ok) renderSessions(sessions.data);
    if (approvals.ok) renderApprovals(approvals.data);
  }

  async function createOnFleet() {
    const body = {};
    const cwd = document.getElementById("fleet-cwd").value.trim();
    const node = document.getElementById("fleet-node").value;
    const labels = document.getElementById("fleet-labels").value.split(",")
      .map((x) => x.trim()).filter((x) => x);
    if (cwd) body.cwd = cwd;
    if (node) body.node = node;
    if (labels.length) body.labels = labels;
    const placed = document.getElementById("fleet-placed");
    placed.textContent = "placing…";
    const answer = await fleetCall("POST", "/v1/fleet/sessions", body);
    if (answer.ok) {
      placed.dataset.node = answer.data.node;
      placed.textContent = "placed on " + answer.data.node + ": " + answer.data.session.sessionId;
    } else {
      const why = answer.error.details && answer.error.details.nodes;
      placed.dataset.node = "";
      placed.textContent = answer.error.message + (why ? " " + Object.entries(why).map(
        ([n, reason]) => n + ": " + reason).join("; ") : "");
    }
    await refreshFleet();
  }

  async function decideOnFleet(approval, decision, button) {
    button.disabled = true;
    const path = "/v1/fleet/sessions/" + encodeURIComponent(approval.sessionId) + "/approvals/"
      + encodeURIComponent(approval.approvalId);
    const answer = await fleetCall("POST", path, {decision, decidedBy: "console (fleet)"});
    if (!answer.ok) fleetError("Not decided: " + answer.error.message);
    await refreshFleet();
  }

  function startFleet() {
    const layout = document.querySelector("main.layout");
    if (!layout || document.getElementById("fleet")) return;
    layout.append(fleetSection());
    refreshFleet();
    setInterval(refreshFleet, FLEET_REFRESH_MS);
    // A token typed in the Node panel: read the fleet with it at once.
    const input = document.getElementById("token-input");
    if (input) input.addEventListener("change", () => setTimeout(refreshFleet, 0));
  }

  startFleet();
})();
