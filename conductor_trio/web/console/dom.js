// Small DOM and text helpers shared by the console's modules.

export const $ = (id) => document.getElementById(id);

// el("div", {class: "x", "data-testid": "y"}, child, "text", ...): text children are text
// nodes, never HTML, so nothing an agent or a command prints can become markup here.
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    node.append(c);
  }
  return node;
}

export function short(id) {
  return id ? String(id).replace(/^session-/, "").slice(0, 8) : "—";
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const age = (Date.now() - d.getTime()) / 1000;
  if (age < 60) return Math.max(0, Math.round(age)) + "s ago";
  if (age < 3600) return Math.round(age / 60) + "m ago";
  if (age < 86400) return Math.round(age / 3600) + "h ago";
  return d.toISOString().slice(0, 16).replace("T", " ");
}

// The end of a path is the part that tells sessions apart: "…/project/sub".
export function tailPath(path) {
  if (!path) return "";
  const parts = String(path).split("/").filter(Boolean);
  return parts.length > 2 ? "…/" + parts.slice(-2).join("/") : path;
}

// The project folder: the last name of the cwd ("baa-conductor" for /home/me/src/baa-conductor).
export function folderName(path) {
  if (!path) return "";
  const parts = String(path).split("/").filter(Boolean);
  return parts.length ? parts[parts.length - 1] : "/";
}

export function excerpt(text, n) {
  if (!text) return "";
  const flat = String(text).replace(/\s+/g, " ").trim();
  return flat.length > n ? flat.slice(0, n - 1) + "…" : flat;
}

// True when a keystroke goes to a text field (j/k and Esc must not steal the person's typing).
export function typing(target) {
  const t = target || document.activeElement;
  if (!t) return false;
  return t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName);
}
