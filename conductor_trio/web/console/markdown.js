// Markdown for the agent's messages: marked (vendor/marked.umd.js) turns the text into HTML,
// DOMPurify (vendor/purify.min.js) sanitizes it, and the page inserts the sanitized DOM
// fragment, never a string. Agent text is untrusted (it repeats what files and commands say):
// no script, no event handler attribute, no javascript: URL, no form, no style survives; the
// page's CSP (script-src 'self', no inline script) is the second wall.
// Both libraries are classic scripts loaded before this module (globalThis.marked/DOMPurify).

const parser = globalThis.marked
  ? new globalThis.marked.Marked({gfm: true, breaks: true, async: false})
  : null;
const purify = globalThis.DOMPurify || null;

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object",
                "embed", "svg", "math"],
  FORBID_ATTR: ["style", "id", "class", "name"],
  ALLOW_DATA_ATTR: false,
};

if (purify) {
  // Links open elsewhere and give the target neither this page nor its address.
  purify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}

// A DocumentFragment: the text rendered as Markdown and sanitized; plain text when either
// library is missing (never unsanitized HTML).
export function renderMarkdown(text) {
  const source = String(text || "");
  if (!parser || !purify) {
    const frag = document.createDocumentFragment();
    const pre = document.createElement("p");
    pre.className = "plain";
    pre.textContent = source;
    frag.append(pre);
    return frag;
  }
  return purify.sanitize(parser.parse(source), PURIFY);
}

export const markdownReady = Boolean(parser && purify);
