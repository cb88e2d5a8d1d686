"""The operator console: ``GET /console``, a plain HTML + CSS + JS page served by the conductor.

The page only talks to the conductor that served it (same origin: ``fetch`` with
``application/json`` bodies, and the ``/v1/codex/events`` relay websocket), so the daemons' Host
and Origin rules apply to it unchanged. There is no build step and nothing is fetched from
elsewhere: the node has no internet. The files are package data (see ``pyproject.toml``): the
page, its ES modules, the stylesheet, the favicon, and under ``vendor/`` the pinned Markdown
renderer and sanitizer with their licences (``vendor/README.md`` says where they come from).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from quart import Response
from quart_trio import QuartTrio

from codexd_trio.web.envelope import error

# The only files served under /console/: a fixed table, so no path from a URL ever reaches the
# file system.
_JS = "text/javascript; charset=utf-8"
ASSETS = {
    # The page's ES modules (issue 24): console.js imports the others.
    "console.js": _JS,
    "state.js": _JS,
    "node.js": _JS,
    "sessions.js": _JS,
    "approvals.js": _JS,
    "stream.js": _JS,
    "items.js": _JS,
    "dom.js": _JS,
    "api.js": _JS,
    "markdown.js": _JS,
    "conversation.js": _JS,
    "queue.js": _JS,
    "threads.js": _JS,
    "alerts.js": _JS,
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    # Issue 25: pairing, "this device", accept-for-session and the rules (pair.js); the page of
    # a one-tap action link (action.js).
    "pair.js": _JS,
    "action.js": _JS,
    # Issue 28: the fleet view (its own module; it adds its section to the page).
    "fleet.js": _JS,
}
# Pinned third-party files (vendor/README.md): the Markdown renderer, the sanitizer, licences.
VENDORED = {
    "marked.umd.js": _JS,
    "purify.min.js": _JS,
    "marked.LICENSE.md": "text/plain; charset=utf-8",
    "dompurify.LICENSE": "text/plain; charset=utf-8",
    "dompurify.LICENSE-MPL": "text/plain; charset=utf-8",
    "README.md": "text/plain; charset=utf-8",
}

# The console has buttons that pause the node and accept commands: it must never be framed by
# another page (clickjacking), and it loads and connects to nothing but its own origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>conductor</title></head>
<body style="font: 16px/1.5 system-ui, sans-serif; margin: 24px">
<h1 style="font-size: 1.25rem">conductor</h1>
<ul>
<li><a href="/console">Console</a>: sessions, turns, approvals, live events, node mode</li>
<li><a href="/v1/status/ui">Status page</a></li>
<li><a href="/describe">/describe</a> (JSON: routes and auth)</li>
</ul>
</body></html>
"""


@cache
def _read(name: str) -> bytes:
    return files(__package__).joinpath(name).read_bytes()


def _page(body: bytes | str, content_type: str) -> Response:
    return Response(body, content_type=content_type, headers=SECURITY_HEADERS)


def install_console(app: QuartTrio) -> None:
    """Add ``GET /`` (links), ``GET /console`` and its files (fixed tables) to the app."""

    @app.get("/")
    async def home() -> Response:
        return _page(HOME, "text/html; charset=utf-8")

    @app.get("/console")
    async def console() -> Response:
        return _page(_read("index.html"), "text/html; charset=utf-8")

    @app.get("/console/<name>")
    async def console_asset(name: str) -> Response:
        content_type = ASSETS.get(name)
        if content_type is None:
            return error(404, "not_found", f"No console file named {name!r}.",
                         {"name": name, "files": sorted(ASSETS)})
        return _page(_read(name), content_type)

    @app.get("/console/vendor/<name>")
    async def console_vendored(name: str) -> Response:
        content_type = VENDORED.get(name)
        if content_type is None:
            return error(404, "not_found", f"No vendored console file named {name!r}.",
                         {"name": name, "files": sorted(VENDORED)})
        return _page(_read(f"vendor/{name}"), content_type)
