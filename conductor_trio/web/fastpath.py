"""The plain ``/v1/codex/*`` relays, served at the ASGI level in front of Quart (issue 27).

A relayed request costs the conductor its web stack more than the relay: Hypercorn, then Quart
building a request and a response, running its hooks and routing through werkzeug — about twice
the CPU of a bare ASGI handler on the same Hypercorn (``docs/benchmarks.md``, "The hot path").
:class:`CodexFastPath` sits between the :class:`~codexd_trio.web.callers.CallerGuard` (host,
origin, content type: already checked) and Quart, and answers the *ordinary* case of the routes
that only relay: a caller the access rules let through, a node whose mode and lease hold back
nothing, a body with a ``Content-Length`` within the limit. Everything else — a refusal of any
kind, a mode that holds new work, a standby refusing writes, a chunked or oversized body, a path
or method not in the table, a websocket — goes on to Quart's routes untouched, which answer it
as they always did. So the rules stay in one place (:mod:`conductor_trio.web.access`,
:mod:`conductor_trio.web.codex_routes`), and this module only decides "nothing to refuse here".

What it keeps from Quart's route: the path parameters are matched on the decoded path, one
segment each (never ``.`` or ``..``), and quoted again for codexd as the routes quote them; the
query passes without its ``token`` parameters; the same request headers go up and the same
answer headers come down (:mod:`conductor_trio.web.proxy`); an unreachable codexd is 503
``codexd_unavailable``; the route template is recorded for the metrics and the access line
(:class:`~codexd_trio.web.observe.Observe` still wraps it all).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote

from codexd_trio.base.context import CURRENT
from codexd_trio.client import CodexdUnavailable
from codexd_trio.web.app import internal_error_response
from codexd_trio.web.asgi import Headers, plain_length, read_body, send_answer, send_response
from codexd_trio.web.callers import ASGIApp, Receive, Scope, Send
from conductor_trio.mode import Mode
from conductor_trio.service import Conductor
from conductor_trio.web.access import WRITE_METHODS, Caller, codex_access, request_address
from conductor_trio.web.proxy import (
    ANSWER_HEADERS,
    FORWARD_HEADERS,
    unavailable_refusal,
    without_token,
)

__all__ = ["FAST_ROUTES", "CodexFastPath"]

log = logging.getLogger("conductor.api")

_PAUSED: tuple[Mode, ...] = ("paused",)
_HELD: tuple[Mode, ...] = ("paused", "draining")

# (method, route template, the modes in which the route refuses or treats the request apart).
# The templates are those of codex_routes.py; every one relays /v1/codex/X to /v1/codexd/X.
FAST_ROUTES: tuple[tuple[str, str, tuple[Mode, ...]], ...] = (
    ("GET", "/v1/codex/sessions", ()),
    ("POST", "/v1/codex/sessions", _PAUSED),
    ("GET", "/v1/codex/sessions/{session_id}", ()),
    ("POST", "/v1/codex/sessions/{session_id}/close", ()),
    ("POST", "/v1/codex/turn", _HELD),
    ("POST", "/v1/codex/turn/steer", ()),
    ("POST", "/v1/codex/turn/interrupt", ()),
    ("GET", "/v1/codex/sessions/{session_id}/queue", ()),
    ("POST", "/v1/codex/sessions/{session_id}/queue/resume", ()),
    ("DELETE", "/v1/codex/sessions/{session_id}/queue/{queue_id}", ()),
    ("POST", "/v1/codex/sessions/{session_id}/queue/{queue_id}/move", ()),
    ("GET", "/v1/codex/approvals", ()),
    ("GET", "/v1/codex/approvals/{approval_id}", ()),
    ("POST", "/v1/codex/approvals/{approval_id}", ()),
    ("GET", "/v1/codex/sessions/{session_id}/transcript", ()),
    ("GET", "/v1/codex/sessions/{session_id}/transcript/items/{item_id}", ()),
    ("GET", "/v1/codex/threads", ()),
    ("GET", "/v1/codex/threads/{thread_id}", ()),
    ("POST", "/v1/codex/sessions/{session_id}/fork", _PAUSED),
    ("POST", "/v1/codex/sessions/{session_id}/rollback", ()),
    ("POST", "/v1/codex/sessions/{session_id}/compact", _HELD),
    ("POST", "/v1/codex/sessions/{session_id}/review", _HELD),
    ("POST", "/v1/codex/sessions/{session_id}/title", ()),
    ("GET", "/v1/codex/events", ()),
)

_PREFIX = "/v1/codex/"
_UPSTREAM_PREFIX = "/v1/codexd/"


@dataclass(frozen=True)
class _Route:
    template: str
    # The template's segments after /v1/codex/: a literal, or None for a parameter.
    parts: tuple[str | None, ...]
    held: tuple[Mode, ...]


def _compile(template: str, held: tuple[Mode, ...]) -> _Route:
    rest = template.removeprefix(_PREFIX).split("/")
    return _Route(template, tuple(None if p.startswith("{") else p for p in rest), held)


class CodexFastPath:
    """ASGI middleware: answer the plain relays of :data:`FAST_ROUTES` without Quart (see the
    module docstring); pass every other request, and every websocket, to ``app``."""

    def __init__(self, app: ASGIApp, conductor: Conductor, *, max_body_bytes: int) -> None:
        self.app = app
        self.conductor = conductor
        self.max_body_bytes = max_body_bytes
        self._routes: dict[tuple[str, int], list[_Route]] = {}
        for method, template, held in FAST_ROUTES:
            route = _compile(template, held)
            self._routes.setdefault((method, len(route.parts)), []).append(route)

    def match(self, method: str, path: str) -> tuple[_Route, str] | None:
        """The route and the upstream path for a decoded ``path``, or ``None``."""
        if not path.startswith(_PREFIX):
            return None
        segments = path[len(_PREFIX):].split("/")
        for route in self._routes.get((method, len(segments)), ()):
            upstream = []
            for literal, segment in zip(route.parts, segments, strict=True):
                if literal is not None:
                    if segment != literal:
                        break
                    upstream.append(segment)
                elif segment in ("", ".", ".."):
                    break
                else:
                    upstream.append(quote(segment, safe=""))
            else:
                return route, _UPSTREAM_PREFIX + "/".join(upstream)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or self.conductor.upstream is None:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        found = self.match(method, scope.get("path", ""))
        headers = Headers(scope.get("headers"))
        if found is None or not self._plain(method, found[0], scope, headers):
            await self.app(scope, receive, send)
            return
        route, upstream_path = found
        info = CURRENT.get()
        if info is not None:
            info.route = route.template
        body = await read_body(receive)
        if body is None:
            return  # the client went away
        query = without_token(scope.get("query_string", b"").decode("latin-1"))
        forward = [(name, value) for name in FORWARD_HEADERS
                   if (value := headers.get(name)) is not None]
        if method == "POST" and headers.get("Content-Type") is None:
            # codexd takes JSON bodies only, even empty ones (proxy_http does the same).
            forward.append(("Content-Type", "application/json"))
        try:
            answer = await self.conductor.upstream.request(
                method, upstream_path + (f"?{query}" if query else ""), headers=forward,
                body=body if method == "POST" else None)
        except CodexdUnavailable as exc:
            refusal = unavailable_refusal(self.conductor, exc)
            await send_answer(send, refusal.status, refusal.body(), "application/json", [])
            return
        except Exception as exc:
            # A bug, not codexd's answer: the 500 Quart's handler gives (the same function).
            await send_response(
                send, internal_error_response("conductor", log, method, upstream_path, exc))
            return
        extra = [(name, answer.headers[name.lower()]) for name in ANSWER_HEADERS
                 if name.lower() in answer.headers]
        await send_answer(send, answer.status, answer.content,
                          answer.headers.get("content-type", "application/json"), extra)

    def _plain(self, method: str, route: _Route, scope: Scope, headers: Headers) -> bool:
        """Whether nothing would refuse or treat this request apart (else Quart answers it)."""
        conductor = self.conductor
        if route.held and conductor.modes.current.mode in route.held:
            return False
        if method in WRITE_METHODS and conductor.writes_refused:
            return False
        if not plain_length(headers, self.max_body_bytes):
            return False
        client = scope.get("client")
        caller = Caller(method=method, authorization=headers.get("Authorization"),
                        remote_addr=request_address(client[0] if client else None, headers))
        _, refused = codex_access(conductor.config, caller, conductor.auth.devices)
        return refused is None
