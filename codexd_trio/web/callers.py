"""Who may call a daemon: the rules of CONTRACT.md "Who may call", as one ASGI middleware.

The APIs listen on loopback, but loopback is no trust boundary against web pages: any page a
person visits can send "simple" requests (``text/plain`` or form POSTs, no preflight) to
``127.0.0.1`` and open websockets to it (browsers apply no CORS to websockets), and a page on a
domain that resolves to 127.0.0.1 (DNS rebinding) is even same-origin with it. So every daemon,
codexd, conductor and status-api, wraps its app in :class:`CallerGuard`, which checks, in order:

1. ``Host`` names this daemon (DNS rebinding)                        → 421 ``host_not_allowed``
2. an ``Origin``, when sent, is the daemon's own or configured        → 403 ``origin_not_allowed``
3. the bearer token, when one is configured (``/healthz`` exempt)     → 401 ``unauthorized``
4. a POST body is ``application/json`` (no simple-request body)  → 415 ``unsupported_media_type``

It sits in front of Quart, so a refused request never reaches a route: no session, no turn, no
event, nothing in the journal. A refused websocket upgrade is answered before it is accepted.
It never sends CORS headers, and preflights (``OPTIONS``) are never granted.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs

import msgspec

from codexd_trio.base.addresses import normalize_origin, split_host_header
from codexd_trio.base.contracts import ErrorBody, ErrorEnvelope

__all__ = [
    "LOOPBACK_NAMES",
    "CallerGuard",
    "CallerPolicy",
    "Refusal",
    "bearer_matches",
    "guard",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Methods that carry a body; DELETE has none here and already needs a CORS preflight.
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
_encoder = msgspec.json.Encoder()


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@dataclass(frozen=True)
class CallerPolicy:
    """What one daemon accepts.

    Args:
        daemon: the daemon's name, for messages (``codexd``, ``conductor``, ``status-api``).
        listen_host: the configured listen host; it is always an allowed ``Host``.
        allowed_hosts: further host names callers may use (the conductor's non-loopback hosts).
        allowed_origins: origins besides the daemon's own, e.g. ``http://mini.tailnet:4317``.
        token: a bearer token every request needs, except those to ``token_exempt`` paths.
        token_exempt: paths that never need the token (liveness).
    """

    daemon: str
    listen_host: str
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    token_exempt: frozenset[str] = frozenset({"/healthz"})
    # The setting that allows a further host, named by the 421 (a tailnet name, say).
    host_setting: str = ""

    def host_names(self, bound_host: str | None) -> frozenset[str]:
        names = {self.listen_host.lower().strip("[]"), *LOOPBACK_NAMES}
        names.update(h.lower().strip("[]") for h in self.allowed_hosts)
        if bound_host:
            names.add(bound_host.lower().strip("[]"))
        return frozenset(names)

    def origins(self, names: Iterable[str], port: int | None) -> frozenset[str]:
        """The daemon's own origins (``http://<allowed host>:<port>``) plus configured ones."""
        own: set[str] = set()
        for name in names:
            host = f"[{name}]" if ":" in name else name
            own.add(f"http://{host}" + (f":{port}" if port not in (None, 80) else ""))
        for origin in self.allowed_origins:
            normalized = normalize_origin(origin)
            if normalized:
                own.add(normalized)
        return frozenset(own)


class Refusal(Exception):
    """One broken rule: the status and envelope to answer with."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> bytes:
        envelope = ErrorEnvelope(
            error=ErrorBody(code=self.code, message=self.message, details=self.details)
        )
        return _encoder.encode(envelope)


def guard(app: object, policy: CallerPolicy) -> None:
    """Put a :class:`CallerGuard` in front of a Quart app (its ``asgi_app`` middleware slot)."""
    quart = cast(Any, app)
    quart.asgi_app = CallerGuard(quart.asgi_app, policy)


class CallerGuard:
    """ASGI middleware enforcing a :class:`CallerPolicy` before the wrapped app sees a request.

    Install on a Quart app with :func:`guard`. Lifespan
    and anything that is not HTTP or a websocket passes through untouched.
    """

    def __init__(self, app: ASGIApp, policy: CallerPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            self.check(scope)
        except Refusal as refusal:
            if kind == "http":
                await _refuse_http(send, refusal)
            else:
                await _refuse_websocket(scope, receive, send, refusal)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> None:
        """Raise :class:`Refusal` for the first rule ``scope`` breaks."""
        headers = _headers(scope)
        server = scope.get("server") or (None, None)
        bound_host, bound_port = server[0], server[1]
        names = self.policy.host_names(bound_host)
        daemon = self.policy.daemon

        host_header = headers.get("host")
        if host_header is not None:
            parsed = split_host_header(host_header)
            if parsed is None or parsed[0] not in names or parsed[1] not in (None, bound_port):
                hint = (f"; to allow it, list it with {self.policy.host_setting}"
                        if self.policy.host_setting else "")
                raise Refusal(
                    421,
                    "host_not_allowed",
                    f"{daemon} does not answer to the host {host_header!r}{hint}",
                    host=host_header,
                    **({"setting": self.policy.host_setting} if hint else {}),
                )

        origin = headers.get("origin")
        if origin is not None:
            normalized = normalize_origin(origin)
            if normalized is None or normalized not in self.policy.origins(names, bound_port):
                raise Refusal(
                    403,
                    "origin_not_allowed",
                    f"{daemon} does not serve requests from the origin {origin!r}",
                    origin=origin,
                )

        token = self.policy.token
        if token is not None and scope.get("path") not in self.policy.token_exempt:
            given = headers.get("authorization")
            if not bearer_matches(given, token) and not (
                scope["type"] == "websocket" and _query_token_matches(scope, token)
            ):
                raise Refusal(
                    401,
                    "unauthorized",
                    f"{daemon} needs Authorization: Bearer <token> (a token is configured)",
                    header="Authorization",
                )

        if scope["type"] == "http" and scope.get("method") in _WRITE_METHODS:
            content_type = headers.get("content-type")
            media = (content_type or "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                raise Refusal(
                    415,
                    "unsupported_media_type",
                    "request bodies must be sent as Content-Type: application/json",
                    contentType=content_type,
                )


def _headers(scope: Scope) -> dict[str, str]:
    # Where a header is repeated the last one counts; a browser never repeats Origin or Host.
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers") or ()
    }


def _query_token_matches(scope: Scope, token: str) -> bool:
    # Browsers cannot set headers on a websocket upgrade, hence ?token= there (and only there).
    query = scope.get("query_string", b"").decode("latin-1")
    given = parse_qs(query).get("token") or []
    return bool(given) and hmac.compare_digest(given[-1].encode(), token.encode())


def _response_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The request body (if any) was never read, so the connection cannot be reused.
        (b"connection", b"close"),
    ]


async def _refuse_http(send: Send, refusal: Refusal) -> None:
    body = refusal.body()
    await send(
        {"type": "http.response.start", "status": refusal.status,
         "headers": _response_headers(body)}
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    """Answer the upgrade with an HTTP error instead of accepting it."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = refusal.body()
        headers = [h for h in _response_headers(body) if h[0] != b"connection"]
        await send(
            {"type": "websocket.http.response.start", "status": refusal.status,
             "headers": headers}
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        # Without the extension the server answers 403 itself.
        await send({"type": "websocket.close", "code": 1008})
