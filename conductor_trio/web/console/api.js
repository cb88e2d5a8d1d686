// Talking to the conductor, the token prompt, and the notice.
//
// The page speaks only to the conductor that served it (same origin): JSON over fetch. The
// shared token lives in sessionStorage (this tab only): never in the page's URL, never in a
// cookie. It goes with every call as Authorization. When codexd has a token, everything under
// /v1/codex/* needs it: a 401 there asks for it in the Node panel, then tries again.

import {$, el} from "./dom.js";

export const TOKEN_KEY = "baa.conductor.token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export function token() {
  // The shared token typed in this tab, else this device's token (kept by pair.js).
  const device = typeof globalThis.deviceToken === "function" ? globalThis.deviceToken() : "";
  return sessionStorage.getItem(TOKEN_KEY) || device || "";
}

export function authHeaders() {
  const t = token();
  return t ? {Authorization: "Bearer " + t} : {};
}

// The token prompt: a 401 from /v1/codex/* shows it and waits for the person to enter a token.
// One wait is shared by every call that met the 401; it ends when a token is entered.
export const tokenWait = {promise: null, resolve: null, timer: null, onEntered: null};

function askForToken(message) {
  const input = $("token-input");
  input.setAttribute("aria-invalid", "true");
  input.placeholder = "the node needs its shared token (BAA_SHARED_TOKEN)";
  notify(message + " — enter the shared token in the Node panel.", "error");
  // Only when the person is not busy elsewhere on the page (typing a turn, say).
  if (document.activeElement === document.body || document.activeElement == null) {
    input.focus();
  }
  if (!tokenWait.promise) {
    tokenWait.promise = new Promise((resolve) => { tokenWait.resolve = resolve; });
  }
  return tokenWait.promise;
}

// A token was entered (Enter, leaving the field, or a pause in typing): the calls that waited
// try again, and what was refused in the background is fetched again (onEntered).
export function tokenEntered() {
  clearTimeout(tokenWait.timer);
  if (!token()) return;
  $("token-input").removeAttribute("aria-invalid");
  const resolve = tokenWait.resolve;
  tokenWait.promise = null;
  tokenWait.resolve = null;
  if (resolve) resolve();
  if (tokenWait.onEntered) tokenWait.onEntered();
}

// opts.wait (default true): on a 401 from /v1/codex/*, ask for the token and try again once one
// is entered. Background refreshes pass false: they only ask, and onEntered re-runs them.
export async function api(method, path, body, opts) {
  const wait = !opts || opts.wait !== false;
  for (;;) {
    try {
      return await apiOnce(method, path, body);
    } catch (e) {
      if (e.status !== 401 || !path.startsWith("/v1/codex/")) throw e;
      const asked = askForToken(e.message);
      if (!wait) throw e;
      await asked;
    }
  }
}

async function apiOnce(method, path, body) {
  const headers = {Accept: "application/json", ...authHeaders()};
  const init = {method, headers, cache: "no-store", credentials: "same-origin"};
  if (method === "POST") {
    // JSON only: the daemons refuse any other POST body type (415).
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body || {});
  }
  let answer;
  try {
    answer = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network_error", "The conductor cannot be reached: " + e.message);
  }
  let envelope;
  try {
    envelope = await answer.json();
  } catch (e) {
    throw new ApiError(answer.status, "bad_answer", "HTTP " + answer.status + " without JSON");
  }
  if (!envelope.ok) {
    const err = envelope.error || {};
    throw new ApiError(answer.status, err.code || "error", err.message || "HTTP " + answer.status,
                       err.details);
  }
  return envelope.data;
}

// -- the notice --------------------------------------------------------------------------------

// The notice is in the page's flow, right under the controls that caused it (or under the
// header): it pushes what follows down and never covers a button, on any screen. It goes away
// by itself, or with its close button, or with Esc.
let noticeTimer = null;

export function notify(text, kind, near) {
  const box = $("notice");
  $("notice-text").textContent = text;
  box.className = kind || "error";
  const anchor = near && near.closest
    ? near.closest(".buttons, .turn-form, .new-session, .approval-inline, li, .card") || near
    : document.querySelector(".top");
  if (anchor && anchor.nextElementSibling !== box) anchor.after(box);
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(hideNotice, kind === "info" ? 4000 : 12000);
}

export function hideNotice() {
  clearTimeout(noticeTimer);
  const box = $("notice");
  if (box.hidden) return false;
  box.hidden = true;
  return true;
}

export function failed(what, e, near) {
  let text = what + ": " + e.message;
  if (e.code && e.code !== "network_error") text += " (" + e.code + ")";
  if (e.code === "unauthorized") text += " — enter the shared token in the Node panel.";
  if (e.code === "not_leader" && e.details.leader) {
    text += " — the leader is " + (e.details.leader.localApiBase || e.details.leader.nodeId);
  }
  notify(text, "error", near);
}

// Runs an action from a button, disabling it meanwhile so a double tap does not send twice.
export async function act(button, what, fn) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (e) {
    failed(what, e, button);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

export function noticeBox() {
  const close = el("button", {type: "button", class: "close", "data-testid": "notice-close",
                              "aria-label": "close the notice"}, "×");
  close.addEventListener("click", hideNotice);
  return close;
}
