"""The HTTP half of codexd's client (private: import from :mod:`codexd_trio.client`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import msgspec

from codexd_trio.base.context import current_request_id
from codexd_trio.base.contracts import (
    Event,
    Session,
    TurnInput,
)
from codexd_trio.client._approvals import ApprovalCalls
from codexd_trio.client._conversation import ConversationCalls
from codexd_trio.client._pool import PoolTransport, UpstreamPool
from codexd_trio.client._queue import QueueCalls
from codexd_trio.client._ws import (
    _TURN_END_TYPES,
    CodexdError,
    CodexdUnavailable,
    EventStream,
    StreamOverflow,
    _ok_decoder,
    _open_event_stream,
    error_from_response,
)

__all__ = ["CodexdClient"]

# The typed calls name codexd's own paths; a client with another api_root maps them onto it.
_CODEXD_ROOT = "/v1/codexd"


async def _stamp_request(request: httpx.Request) -> None:
    # The id of the request being served (the conductor proxying one) follows it to codexd.
    request_id = current_request_id()
    if request_id is not None and "x-request-id" not in request.headers:
        request.headers["X-Request-Id"] = request_id
    request.extensions["baa.started"] = time.perf_counter()


class CodexdClient(ApprovalCalls, QueueCalls, ConversationCalls):
    """An async client of one codexd (its calls by subject: :class:`ApprovalCalls`,
    :class:`QueueCalls`, :class:`ConversationCalls`).

    Use as an async context manager (or call :meth:`aclose`)::

        async with CodexdClient("http://127.0.0.1:4319") as client:
            session = await client.create_session()
            accepted = await client.start_turn(session.sessionId, "hello")
            done = await client.wait_for_turn(session.sessionId, accepted["turnId"])

    Args:
        base_url: codexd's local API base, e.g. ``http://127.0.0.1:4319``.
        timeout: per-request network timeout in seconds (connect, read, write, pool); a request
            that exceeds it raises :class:`CodexdUnavailable`. Callers bound whole operations with
            their own ``trio.fail_after`` scopes.
        token: codexd's bearer token when one is configured (``BAA_CODEXD_TOKEN[_FILE]``, see
            :func:`codexd_trio.base.settings.resolve_codexd_token`); sent on every request and
            upgrade. Through the conductor: its shared token (``BAA_SHARED_TOKEN[_FILE]``).
        api_root: where codexd's routes live: ``/v1/codexd`` (codexd itself) or ``/v1/codex``
            (a conductor's ``base_url``, which proxies them; ``status()`` is then not there).

    Over plain HTTP (codexd's loopback API, or a conductor's) the ``httpx.AsyncClient`` sends
    through a lean h11 connection pool (:class:`~codexd_trio.client._pool.PoolTransport`, issue
    27: httpx's own connection machinery costs more than the loopback hop); over HTTPS through
    httpx's own transport.

    **Resource handling:** owns one ``httpx.AsyncClient`` (connection pool), closed by
    :meth:`aclose`; each :meth:`events` stream owns its websocket and closes it on exit.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0, token: str | None = None,
                 api_root: str = "/v1/codexd") -> None:
        self.base_url = base_url.rstrip("/")
        self.api_root = api_root.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"codexd base URL must look like http://127.0.0.1:4319: {base_url!r}")
        self.auth_headers: dict[str, str] = (
            {"Authorization": f"Bearer {token}"} if token is not None else {}
        )
        transport = (PoolTransport(UpstreamPool(self.base_url, timeout=timeout))
                     if parts.scheme == "http" else None)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=self.auth_headers,
            event_hooks={"request": [_stamp_request], "response": []}, transport=transport,
        )

    def observe_responses(self, observe: Callable[[httpx.Response, float], None]) -> None:
        """Call ``observe(response, seconds)`` when each answer's headers arrive (metrics)."""

        async def hook(response: httpx.Response) -> None:
            started = response.request.extensions.get("baa.started")
            if isinstance(started, float):
                observe(response, time.perf_counter() - started)

        self._http.event_hooks["response"].append(hook)

    async def __aenter__(self) -> CodexdClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # ----------------------------------------------------------------------------------------
    # Raw access

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request and return the raw response, whatever its status (for proxying).

        Raises:
            CodexdUnavailable: codexd could not be reached or did not answer in time.

        **Cancellation:** a cancel drops the request; the pooled connection is discarded.
        """
        kwargs: dict[str, Any] = {}
        if json is not None:
            kwargs["content"] = msgspec.json.encode(json)
        elif content is not None:
            kwargs["content"] = content
        if method == "POST":
            # codexd takes JSON bodies only (CONTRACT.md "Who may call"), even empty ones.
            merged = {"content-type": "application/json"}
            merged.update(headers or {})
            headers = merged
        try:
            return await self._http.request(
                method, path, params=dict(params) if params else None, headers=headers, **kwargs
            )
        except httpx.TransportError as exc:
            raise CodexdUnavailable(
                f"cannot reach codexd at {self.base_url}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        if self.api_root != _CODEXD_ROOT and path.startswith(_CODEXD_ROOT + "/"):
            path = self.api_root + path[len(_CODEXD_ROOT):]
        response = await self.request(method, path, json=json, params=params, headers=headers)
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            env = _ok_decoder.decode(response.content)
        except msgspec.ValidationError as exc:
            raise CodexdError(
                response.status_code, "invalid_response", f"codexd answered {path} oddly: {exc}"
            ) from exc
        except msgspec.DecodeError as exc:
            raise CodexdError(
                response.status_code, "invalid_response", f"codexd answered {path} with non-JSON"
            ) from exc
        return env.data

    # ----------------------------------------------------------------------------------------
    # Probes

    async def healthz(self) -> dict[str, Any]:
        """``GET /healthz``: ``{status, pid, uptimeS}``."""
        return dict(await self._call("GET", "/healthz"))

    async def readyz(self) -> dict[str, Any]:
        """``GET /readyz``: ``{ready: true}``; raises :class:`CodexdError` (503) when not ready."""
        return dict(await self._call("GET", "/readyz"))

    async def describe(self) -> dict[str, Any]:
        """``GET /describe``: name, version, routes, event stream."""
        return dict(await self._call("GET", "/describe"))

    async def status(self) -> dict[str, Any]:
        """``GET /v1/codexd/status``: ``{service, snapshot}``."""
        return dict(await self._call("GET", "/v1/codexd/status"))

    # ----------------------------------------------------------------------------------------
    # Sessions and turns

    async def list_sessions(self, *, status: str | None = None,
                            order: str | None = None) -> list[Session]:
        """Every session (``GET /v1/codexd/sessions``, following ``nextCursor``)."""
        out: list[Session] = []
        cursor: str | None = None
        while True:
            page, cursor = await self.sessions_page(
                limit=1000, cursor=cursor, status=status, order=order)
            out.extend(page)
            if cursor is None:
                return out

    async def sessions_page(
        self, *, limit: int = 500, cursor: str | None = None, status: str | None = None,
        order: str | None = None,
    ) -> tuple[list[Session], str | None]:
        """One page of sessions (oldest first; ``order="activity"``: newest ``updatedAt``
        first) and the cursor of the next (``None``: last)."""
        params = {"limit": str(limit)}
        for key, value in (("cursor", cursor), ("status", status), ("order", order)):
            if value is not None:
                params[key] = value
        data = await self._call("GET", "/v1/codexd/sessions", params=params)
        return msgspec.convert(data["sessions"], list[Session]), data.get("nextCursor")

    async def create_session(
        self,
        *,
        cwd: str | None = None,
        model: str | None = None,
        purpose: str = "duplex",
        approval_policy: str | None = None,
        sandbox: str | None = None,
        approvals: str | None = None,
        idempotency_key: str | None = None,
        title: str | None = None,
        thread_id: str | None = None,
    ) -> Session:
        """``POST /v1/codexd/sessions``; returns the new session (``thread_id``: adopt that
        existing Codex thread instead of starting one, see :meth:`adopt_thread`)."""
        body: dict[str, Any] = {"purpose": purpose}
        for key, value in (
            ("cwd", cwd),
            ("model", model),
            ("approvalPolicy", approval_policy),
            ("sandbox", sandbox),
            ("approvals", approvals),
            ("title", title),
            ("threadId", thread_id),
        ):
            if value is not None:
                body[key] = value
        data = await self._call(
            "POST", "/v1/codexd/sessions", json=body, headers=self._idem(idempotency_key)
        )
        return msgspec.convert(data["session"], Session)

    async def get_session(self, session_id: str) -> tuple[Session, list[Event]]:
        """``GET /v1/codexd/sessions/{id}``: the session and its recent events."""
        data = await self._call("GET", f"/v1/codexd/sessions/{session_id}")
        return (
            msgspec.convert(data["session"], Session),
            msgspec.convert(data.get("recentEvents", []), list[Event]),
        )

    async def start_turn(
        self, session_id: str, input: TurnInput, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/codexd/turn``: ``{accepted, sessionId, turnId, session}``.

        Raises:
            CodexdError: e.g. 409 ``turn_in_progress``, 404 ``not_found``.
        """
        data: dict[str, Any] = await self._call(
            "POST",
            "/v1/codexd/turn",
            json={"sessionId": session_id, "input": input},
            headers=self._idem(idempotency_key),
        )
        return data

    async def steer_turn(
        self,
        session_id: str,
        input: TurnInput,
        *,
        expected_turn_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/codexd/turn/steer``: ``{sessionId, turnId}``; 409 ``no_active_turn``."""
        body: dict[str, Any] = {"sessionId": session_id, "input": input}
        if expected_turn_id is not None:
            body["expectedTurnId"] = expected_turn_id
        data: dict[str, Any] = await self._call(
            "POST", "/v1/codexd/turn/steer", json=body, headers=self._idem(idempotency_key)
        )
        return data

    async def interrupt_turn(
        self,
        session_id: str,
        *,
        turn_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/codexd/turn/interrupt``: ``{sessionId, turnId, accepted}``."""
        body: dict[str, Any] = {"sessionId": session_id}
        if turn_id is not None:
            body["turnId"] = turn_id
        data: dict[str, Any] = await self._call(
            "POST", "/v1/codexd/turn/interrupt", json=body, headers=self._idem(idempotency_key)
        )
        return data

    # ----------------------------------------------------------------------------------------
    # Events

    async def events_page(
        self, *, after: int = 0, limit: int = 100, session_id: str | None = None
    ) -> list[Event]:
        """``GET /v1/codexd/events?after=N&limit=M``: retained events with ``seq > after``."""
        return (await self.events_window(after=after, limit=limit, session_id=session_id))[0]

    async def events_window(
        self, *, after: int = 0, limit: int = 100, session_id: str | None = None
    ) -> tuple[list[Event], int]:
        """One page of the durable log (only ``session_id``'s events, when given) and the
        log's ``lastSeq`` (the newest event's seq, whatever the filter)."""
        params = {"after": str(after), "limit": str(limit)}
        if session_id is not None:
            params["sessionId"] = session_id
        data = await self._call("GET", "/v1/codexd/events", params=params)
        return msgspec.convert(data["events"], list[Event]), int(data.get("lastSeq") or 0)

    def events_url(self, *, after: int | None = None, session_id: str | None = None,
                   batch: bool = False) -> str:
        """The websocket URL of the event stream with the given query (``batch``: ``batch=1``,
        a JSON array of events per frame)."""
        pairs = (("after", None if after is None else str(after)), ("sessionId", session_id),
                 ("batch", "1" if batch else None))
        query = {key: value for key, value in pairs if value is not None}
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        base = scheme + self.base_url[self.base_url.index(":") :]
        return f"{base}{self.api_root}/events" + (f"?{urlencode(query)}" if query else "")

    def events(
        self, *, after: int | None = None, session_id: str | None = None, batch: bool = True
    ) -> AbstractAsyncContextManager[EventStream]:
        """Subscribe to ``WS /v1/codexd/events``.

        Args:
            after: replay every retained event with a larger seq first; ``None`` = live only.
            session_id: only this session's events.
            batch: ask for ``?batch=1`` framing (several events per frame during a burst:
                much cheaper for codexd and for this client); the stream yields single events
                either way.

        Yields:
            An :class:`EventStream` whose ``hello`` has been received.

        Raises:
            CodexdUnavailable: cannot connect, or the handshake timed out.
            CodexdError: codexd refused the handshake with an error envelope.

        **Resource handling:** the websocket (and its TCP stream, which trio-websocket 0.12
        would leak when the server closes first) is closed when the context exits.
        """
        return _open_event_stream(
            self.events_url(after=after, session_id=session_id, batch=batch),
            headers=self.auth_headers,
        )

    async def wait_for_turn(self, session_id: str, turn_id: str) -> Session:
        """Wait until a turn has settled and return the session as it is then.

        Subscribes to the session's events first, then reads the session (so a turn that already
        ended is seen at once, and one that ends later is seen on the stream), and follows the
        stream until ``app-server.turn.completed``, ``turn.failed`` or
        ``app-server.turn.completed.missing`` for that turn. Reconnects after an overflow.

        Raises:
            CodexdUnavailable: codexd went away (including a normal close on its shutdown).
            CodexdError: unknown session.

        **Cancellation:** bound it with ``trio.fail_after`` at the call site; a cancel closes
        the subscription and leaves nothing behind.
        """
        after: int | None = None
        while True:
            try:
                async with self.events(after=after, session_id=session_id) as stream:
                    if after is None:
                        after = stream.hello.lastSeq
                    session = await self._settled(session_id, turn_id)
                    if session is not None:
                        return session
                    async for event in stream:
                        after = event.seq
                        if event.turnId == turn_id and event.type in _TURN_END_TYPES:
                            session = await self._settled(session_id, turn_id)
                            if session is not None:
                                return session
                    raise CodexdUnavailable("codexd closed the event stream before the turn ended")
            except StreamOverflow as exc:
                after = exc.last_delivered_seq

    async def _settled(self, session_id: str, turn_id: str) -> Session | None:
        session, _ = await self.get_session(session_id)
        if session.currentTurnId == turn_id:
            return None
        if session.lastTurnId == turn_id and session.lastTurnStatus != "inProgress":
            return session
        if session.lastTurnId != turn_id and session.currentTurnId is None:
            # A later turn already replaced it, or the turn never ran: either way it is over.
            return session
        return None

