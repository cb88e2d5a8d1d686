"""Relaying ``/v1/codex/*`` to codexd: HTTP requests byte for byte, and the event websocket
frame for frame (hello, events, overflow) including codexd's close code.

The conductor holds no Codex truth: status codes and bodies are codexd's own. Only when codexd
cannot be reached does the conductor answer itself, with 503 ``codexd_unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, unquote_plus

import trio
import trio_websocket
from quart import Response, request, websocket
from quart_trio import QuartTrio

from codexd_trio.base.context import current_request_id
from codexd_trio.client import CodexdError, CodexdUnavailable, open_websocket
from codexd_trio.web.callers import Refusal
from codexd_trio.web.envelope import error
from codexd_trio.web.websockets import discarding_client_frames
from conductor_trio.auth.node import REVOKED_CLOSE_CODE
from conductor_trio.service import Conductor

# Request headers worth passing on; hop-by-hop and Host stay with this hop.
FORWARD_HEADERS = ("Content-Type", "Accept", "Idempotency-Key")
# codexd's answer headers a client of the conductor needs too (a replayed keyed POST says so).
ANSWER_HEADERS = ("Idempotency-Replayed",)
# 1006 (abnormal) cannot be sent in a close frame: tell the client codexd failed instead.
_ABNORMAL_RELAY_CODE = 1011
# Codes that name a state and may not be sent in a close frame (RFC 6455 7.4.1).
_UNSENDABLE_CLOSE_CODES = frozenset({1005, 1006, 1015})


def unavailable(conductor: Conductor, exc: BaseException) -> Response:
    """503 ``codexd_unavailable`` naming the target."""
    refusal = unavailable_refusal(conductor, exc)
    return error(refusal.status, refusal.code, refusal.message, refusal.details)


def unavailable_refusal(conductor: Conductor, exc: BaseException) -> Refusal:
    """What :func:`unavailable` answers, for a relay that writes its answer at the ASGI level
    (:mod:`conductor_trio.web.fastpath`)."""
    base = conductor.config.codexd_base
    return Refusal(503, "codexd_unavailable", f"The conductor cannot reach codexd at {base}.",
                   target=base, error=str(exc))


async def proxy_http(conductor: Conductor, upstream_path: str) -> Response:
    """Forward the current request to codexd and return its answer unchanged.

    **Cancellation:** if the client goes away the upstream request is dropped with it; codexd's
    ``Idempotency-Key`` handling makes a retried POST safe.
    """
    body: bytes | None = None
    if request.method == "POST":
        raw = await request.get_data()
        body = raw.encode() if isinstance(raw, str) else raw
    headers = {name: request.headers[name] for name in FORWARD_HEADERS if name in request.headers}
    query = without_token(request.query_string.decode("latin-1"))
    path = upstream_path + (f"?{query}" if query else "")
    try:
        if conductor.upstream is not None:
            if request.method == "POST":
                # codexd takes JSON bodies only (CONTRACT.md "Who may call"), even empty ones.
                headers.setdefault("Content-Type", "application/json")
            lean = await conductor.upstream.request(request.method, path,
                                                    headers=list(headers.items()), body=body)
            status, content, answer_headers = lean.status, lean.content, lean.headers
        else:
            answer = await conductor.client.request(request.method, path, content=body,
                                                    headers=headers)
            status, content, answer_headers = (answer.status_code, answer.content,
                                               dict(answer.headers))
    except CodexdUnavailable as exc:
        return unavailable(conductor, exc)
    return Response(
        content,
        status=status,
        content_type=answer_headers.get("content-type", "application/json"),
        headers={name: answer_headers[name.lower()] for name in ANSWER_HEADERS
                 if name.lower() in answer_headers},
    )


def without_token(query: str) -> str:
    """``query`` without its ``token`` parameters, the rest byte for byte: a caller's credential
    is the conductor's to check, never codexd's to see (the relay builds its upstream URL from
    named parameters, so it never passes one either)."""
    return "&".join(part for part in query.split("&")
                    if part and unquote_plus(part.partition("=")[0]) != "token")


async def relay_events(conductor: Conductor, device_id: str | None = None) -> Response | None:
    """Relay ``WS /v1/codexd/events`` to the current websocket client.

    The upstream is opened *before* accepting, so an unreachable codexd is an HTTP 503 envelope
    and a refused handshake is codexd's own status and body. ``batch=1`` is passed on, so a
    client that asks for batched frames (a JSON array of events each) gets codexd's batches and
    the relay pays its per-frame cost once per batch. Then every frame is relayed as is;
    when codexd closes (1000, 1001 on its shutdown, 1013 after an overflow frame) the client is
    closed with the same code. A conductor shutdown closes relays with 1001; revoking the
    device (``device_id``) whose token opened the relay closes it with 1008 at once.

    **Resource handling:** the upstream websocket and its TCP stream are closed on every exit
    (:func:`codexd_trio.client.open_websocket`).
    """
    after = websocket.args.get("after")
    session_id = websocket.args.get("sessionId")
    batch = websocket.args.get("batch")
    # isascii too: str.isdigit accepts "²", which int() refuses (a 500, not a 400).
    if after is not None and not (after.isascii() and after.isdigit()):
        return error(400, "invalid_request", "after must be a non-negative integer.",
                     {"field": "after"})
    if batch not in (None, "0", "1"):
        return error(400, "invalid_request", "batch must be 0 or 1.",
                     {"field": "batch", "value": batch})
    url = conductor.client.events_url(
        after=int(after) if after is not None else None, session_id=session_id,
        batch=batch == "1",
    )
    return await relay_websocket(conductor, url, dict(conductor.client.auth_headers), device_id,
                                 lambda exc: unavailable(conductor, exc))


async def relay_websocket(conductor: Conductor, url: str, headers: dict[str, str],
                          device_id: str | None,
                          unreachable: Callable[[CodexdUnavailable], Response]
                          ) -> Response | None:
    """Open the upstream websocket ``url`` (codexd's stream, or a peer conductor's relay) with
    ``headers`` and the request id, then accept the current client and relay every frame until
    one side closes, closing the client with the upstream's code. A refused handshake is the
    upstream's own status and envelope; an unreachable upstream is ``unreachable(exc)``."""
    if (request_id := current_request_id()) is not None:
        headers = {**headers, "X-Request-Id": request_id}  # one id from the client through
    try:
        async with open_websocket(url, headers=headers) as upstream:
            await websocket.accept()
            # Read what the client sends, or its leaving goes unseen and the relay (and its
            # upstream stream) stays open for good.
            async with discarding_client_frames():
                code = await _pump(conductor, upstream, device_id)
            await websocket.close(code)
    except CodexdError as exc:
        # The upstream refused the handshake: hand its status and envelope on unchanged.
        return error(exc.status, exc.code, exc.message, exc.details)
    except CodexdUnavailable as exc:
        return unreachable(exc)
    return None


async def _pump(conductor: Conductor, upstream: trio_websocket.WebSocketConnection,
                device_id: str | None = None) -> int:
    with trio.CancelScope() as scope, conductor.auth.relay(device_id, scope) as ticket:
        conductor.relays.add(scope)
        try:
            if conductor.stopping.is_set():
                scope.cancel(reason="conductor stopping")
            while True:
                try:
                    message = await upstream.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    code = exc.reason.code if exc.reason is not None else 1006
                    return _ABNORMAL_RELAY_CODE if code in _UNSENDABLE_CLOSE_CODES else code
                await websocket.send(message)
        finally:
            conductor.relays.discard(scope)
    return REVOKED_CLOSE_CODE if ticket.revoked else 1001


def install_rule_proxy(app: QuartTrio, conductor: Conductor) -> None:
    """The approval rules' routes (issue 25), relayed to codexd like every /v1/codex/* route
    (the access rules ran before; writes are never refused by the mode: rules end work)."""

    @app.route("/v1/codex/approval-rules", methods=["GET", "POST"])
    async def node_rules() -> Response:
        return await proxy_http(conductor, "/v1/codexd/approval-rules")

    @app.route("/v1/codex/sessions/<session_id>/approval-rules", methods=["GET", "POST"])
    async def session_rules(session_id: str) -> Response:
        return await proxy_http(
            conductor, f"/v1/codexd/sessions/{quote(session_id, safe='')}/approval-rules")
