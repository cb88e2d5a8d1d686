// Someone is waiting: the page's title counts the pending approvals ("(1) conductor console"),
// and a browser notification fires for each new one if the person allowed them. Permission is
// asked once, from a visible button, never on load.

import {$, excerpt} from "./dom.js";

const TITLE = "conductor console";
const seen = new Set();
let first = true;

function supported() {
  return typeof globalThis.Notification === "function";
}

function renderButton() {
  const button = $("notify-enable");
  // Shown only while the browser would still ask: granted or refused, there is nothing to do.
  button.hidden = !supported() || globalThis.Notification.permission !== "default";
}

export function initNotifications() {
  const button = $("notify-enable");
  button.addEventListener("click", async () => {
    if (!supported()) return;
    button.disabled = true;
    try {
      await globalThis.Notification.requestPermission();
    } finally {
      button.disabled = false;
      renderButton();
    }
  });
  renderButton();
}

// approvals: every pending approval of the node; sessionOf(id): its session row, if listed.
export function noteApprovals(approvals, sessionOf) {
  document.title = approvals.length ? "(" + approvals.length + ") " + TITLE : TITLE;
  const fresh = approvals.filter((a) => !seen.has(a.approvalId));
  for (const a of approvals) seen.add(a.approvalId);
  // Those already waiting when the page opened are on the page: only new ones notify.
  if (first) { first = false; return; }
  if (!supported() || globalThis.Notification.permission !== "granted") return;
  for (const a of fresh) {
    const p = a.params || {};
    const s = sessionOf(a.sessionId);
    const what = p.command ? (Array.isArray(p.command) ? p.command.join(" ") : p.command)
      : a.kind === "fileChange" ? "a file change" : a.kind;
    try {
      const note = new globalThis.Notification("Codex is waiting for you", {
        body: excerpt((s && s.title ? s.title + ": " : "") + what, 180),
        tag: a.approvalId,
      });
      note.onclick = () => {
        window.focus();
        location.hash = "session=" + encodeURIComponent(a.sessionId) + "&approval="
          + encodeURIComponent(a.approvalId);
      };
    } catch (e) {
      // A browser that only notifies from a service worker (Chrome on Android): the title and
      // the page still say it.
    }
  }
}
