// Pairing, "this device", and the approval rules of the selected session (issue 25).
//
// Loaded before console.js (both deferred, so they run in order); console.js calls
// deviceToken() for its credential and onSessionSelected() when a session is selected.
//
// `conductor pair` prints <conductor>/console#pair=CODE. The code is in the fragment, so it is
// never sent in a request line (nor logged); this page takes it out of the address bar at once,
// exchanges it (POST /v1/pair) for a device token and keeps that in localStorage: closing the tab
// or reloading does not sign the phone out. The token goes with every call like the shared token
// (Authorization; ?token= on the relay websocket). A revoked device is told so, and forgets it.
"use strict";

const DEVICE_KEY = "baa.conductor.device";
const DEVICE_CHECK_MS = 5000;

function storedDevice() {
  try {
    return JSON.parse(localStorage.getItem(DEVICE_KEY) || "null");
  } catch (e) {
    return null;
  }
}

function deviceToken() {
  const d = storedDevice();
  return d && d.token ? d.token : "";
}

function deviceBox() {
  return document.getElementById("device");
}

function renderDevice(state, text) {
  const box = deviceBox();
  if (!box) return;
  box.dataset.state = state;
  document.getElementById("device-text").textContent = text;
  document.getElementById("device-forget").hidden = state !== "paired";
}

async function jsonCall(method, path, body, token) {
  const headers = {Accept: "application/json"};
  if (token) headers.Authorization = "Bearer " + token;
  const init = {method, headers, cache: "no-store", credentials: "omit"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const reply = await fetch(path, init);
  let answer = null;
  try { answer = await reply.json(); } catch (e) { /* not JSON */ }
  return {status: reply.status, answer: answer || {ok: false, error: {code: "bad_answer",
    message: "HTTP " + reply.status}}};
}

async function pairFromUrl() {
  const params = new URLSearchParams(location.hash.slice(1));
  const code = params.get("pair");
  if (!code) return;
  // The code leaves the address bar (and the history) before anything else.
  history.replaceState(null, "", location.pathname + location.search);
  renderDevice("pairing", "pairing…");
  let reply;
  try {
    // The name is the one `conductor pair --name` gave the code.
    reply = await jsonCall("POST", "/v1/pair", {code});
  } catch (e) {
    renderDevice("failed", "pairing failed: the conductor cannot be reached");
    return;
  }
  if (!reply.answer.ok) {
    renderDevice("failed", "pairing failed: " + reply.answer.error.message);
    return;
  }
  const data = reply.answer.data;
  localStorage.setItem(DEVICE_KEY, JSON.stringify(
    {token: data.token, id: data.device.id, name: data.device.name}));
  renderDevice("paired", "this device: " + data.device.name + " (" + data.device.id + ")");
}

async function checkDevice() {
  const d = storedDevice();
  if (!d || !d.token) {
    const box = deviceBox();
    if (box && box.dataset.state !== "revoked" && box.dataset.state !== "failed"
        && box.dataset.state !== "pairing") {
      renderDevice("none", "this browser is not paired (conductor pair)");
    }
    return;
  }
  let reply;
  try {
    reply = await jsonCall("GET", "/v1/devices/me", undefined, d.token);
  } catch (e) {
    return;  // unreachable for now: say nothing new
  }
  if (reply.answer.ok) {
    const dev = reply.answer.data.device;
    renderDevice("paired", "this device: " + dev.name + " (" + dev.id + ")");
    return;
  }
  const details = (reply.answer.error || {}).details || {};
  if (reply.status === 401 && (details.reason === "device_revoked"
                               || details.reason === "device_unknown")) {
    localStorage.removeItem(DEVICE_KEY);
    renderDevice("revoked", details.reason === "device_revoked"
      ? "This device was revoked: it no longer has access. Pair it again to use it."
      : "This device is not known to the node any more. Pair it again to use it.");
  }
}

async function forgetDevice() {
  const d = storedDevice();
  if (!d) return;
  try {
    await jsonCall("DELETE", "/v1/devices/me", undefined, d.token);
  } catch (e) { /* forgotten here anyway */ }
  localStorage.removeItem(DEVICE_KEY);
  renderDevice("none", "this device was forgotten");
}

// -- the selected session's approval rules -----------------------------------------------------

function ruleText(r) {
  return r.name + ": " + r.decision + " " + (r.kind === "any" ? "" : r.kind + " ") + "/"
    + r.match + "/" + (r.cwdPrefix ? " under " + r.cwdPrefix : "");
}

async function onSessionSelected(sessionId) {
  const list = document.getElementById("rules");
  const timeout = document.getElementById("rules-timeout");
  if (!list) return;
  list.replaceChildren();
  timeout.textContent = "";
  let data;
  try {
    data = await api("GET", "/v1/codex/sessions/" + encodeURIComponent(sessionId)
                     + "/approval-rules", null, {wait: false});
  } catch (e) {
    timeout.textContent = "rules: " + e.message;
    return;
  }
  for (const r of data.effectiveRules || []) {
    const li = document.createElement("li");
    li.setAttribute("data-testid", "rule-row");
    li.textContent = ruleText(r);
    list.append(li);
  }
  const verb = data.effectiveTimeoutDecision === "cancel" ? "cancels the turn" : "declines";
  timeout.textContent = "unanswered approvals: codexd " + verb + " after "
    + Math.round(data.effectiveTimeoutS) + " s"
    + ((data.effectiveRules || []).length ? "" : " · no rules");
}

// -- a deep link from a notification: #session=…&approval=… -------------------------------------

function openDeepLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  const session = params.get("session");
  if (!session || typeof select !== "function") return;
  const approval = params.get("approval");
  select(session).then(() => {
    if (!approval) return;
    const row = document.querySelector("[data-approval-id='" + CSS.escape(approval) + "']");
    if (row) row.scrollIntoView();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const forget = document.getElementById("device-forget");
  if (forget) forget.addEventListener("click", forgetDevice);
  pairFromUrl().then(checkDevice);
  setInterval(checkDevice, DEVICE_CHECK_MS);
});
// After console.js's own start (it listens to DOMContentLoaded after this file did); and when a
// link changes only the fragment of a console already open.
window.addEventListener("load", openDeepLink);
window.addEventListener("hashchange", openDeepLink);
