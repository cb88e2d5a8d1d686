"""HTTP/1.1 to codexd over kept-alive connections, with h11 on Trio sockets (private: import
from :mod:`codexd_trio.client`; issue 27).

Two users: the conductor proxies ``/v1/codex/*`` through an :class:`UpstreamPool` (it passes each
request and answer through whole), and a :class:`~codexd_trio.client.CodexdClient` talking plain
HTTP sends its httpx requests through one (:class:`PoolTransport`), so a script, the CLI and the
conductor's own calls keep httpx's API without httpx's connection machinery.

Why not httpx's own transport: on a loopback hop it costs more than the hop. httpx builds its
request and response models, runs its connection pool's locks and its backend on every request;
a request to codexd needs far less: write one request, read one answer, put the connection back
(``docs/benchmarks.md``, "Conductor" and "A turn's timeline", has the measurements).

What it keeps from httpx: a timeout on every network step (connect, send, each read), an
unreachable or silent codexd raising :class:`~codexd_trio.client.CodexdUnavailable` (the proxy's
503 ``codexd_unavailable``), the request id and codexd's token on every request, and a connection
reused only when its last exchange ended cleanly. An idle connection codexd may have closed
(Hypercorn drops idle keep-alive connections after 5 s) is never used: idle ones expire before
that, and one found readable (codexd closed it, or sent something unasked) is dropped. A request
that fails on a reused connection before any answer arrived is retried once on a new connection
when it is a GET (a POST is never sent twice: codexd's ``Idempotency-Key`` is how a client
retries one safely).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import httpx
import trio

from codexd_trio.base.context import current_request_id
from codexd_trio.client._ws import CodexdUnavailable

__all__ = ["PoolTransport", "UpstreamAnswer", "UpstreamPool"]

# Hypercorn closes a keep-alive connection idle for 5 s (its default); ours expire first.
IDLE_EXPIRY_S = 4.0
# Idle connections kept for reuse; more concurrent requests open more and close the surplus.
MAX_IDLE = 8
_READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class UpstreamAnswer:
    """codexd's answer, whole: status, headers (names lower-case) and body."""

    status: int
    headers: dict[str, str]
    content: bytes


class _Connection:
    """One kept-alive HTTP/1.1 connection (h11 state machine over a Trio socket stream)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        """Idle, not expired, and nothing to read: codexd has not closed it (an EOF, or any
        byte, makes the socket readable; an idle HTTP/1.1 connection has nothing to say)."""
        if time.monotonic() - self.idle_since > IDLE_EXPIRY_S:
            return False
        try:
            readable, _, _ = select.select([self.stream.socket.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


class UpstreamPool:
    """Requests to one codexd over a small pool of kept-alive connections.

    Args:
        base_url: codexd's ``http://host:port`` (plain HTTP only: it is a loopback hop).
        timeout: seconds allowed for each network step (connect, send, every read).
        headers: sent with every request (codexd's bearer token).

    **Resource handling:** :meth:`aclose` closes the idle connections; a connection in use is
    closed by its request when it cannot be reused (an error, a cancel, ``Connection: close``).
    """

    def __init__(self, base_url: str, *, timeout: float,
                 headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the pool speaks plain HTTP to codexd: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._host_header = parts.netloc.encode("ascii")
        self._timeout = timeout
        self._headers = [(k.encode("latin-1"), v.encode("latin-1"))
                         for k, v in (headers or {}).items()]
        self._idle: list[_Connection] = []
        self._closed = False
        # Called with (method, status, seconds) once each answer is read (the metrics).
        self.observe: Callable[[str, int, float], None] | None = None

    async def aclose(self) -> None:
        """Close every idle connection; later requests open no more."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.stream.socket.close()
        await trio.lowlevel.checkpoint()

    async def request(self, method: str, target: str, *,
                      headers: Sequence[tuple[str, str]] = (),
                      body: bytes | None = None) -> UpstreamAnswer:
        """Send ``method target`` (path and query) to codexd and read the whole answer.

        Raises:
            CodexdUnavailable: codexd cannot be reached, or a step took longer than the timeout,
                or the answer was not HTTP.

        **Cancellation:** the connection in use is closed (it is mid-exchange); nothing else
        changes.
        """
        started = time.perf_counter()
        fields = self._fields(method, headers, body)
        target_bytes = target.encode("latin-1")
        connection = self._take()
        reused = connection is not None
        try:
            answer = await self._exchange(connection, method, target_bytes, fields, body)
        except _Retryable as exc:
            if not (reused and method in ("GET", "HEAD")):
                raise CodexdUnavailable(self._cannot(exc.__cause__ or exc)) from exc
            # Once, on a new connection: codexd closed the old one before reading this request.
            try:
                answer = await self._exchange(None, method, target_bytes, fields, body)
            except _Retryable as again:
                raise CodexdUnavailable(self._cannot(again.__cause__ or again)) from again
        if self.observe is not None:
            self.observe(method, answer.status, time.perf_counter() - started)
        return answer

    # ------------------------------------------------------------------------------------

    def _fields(self, method: str, headers: Sequence[tuple[str, str]],
                body: bytes | None) -> list[tuple[bytes, bytes]]:
        fields = [(b"host", self._host_header), *self._headers]
        fields += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        request_id = current_request_id()
        if request_id is not None and not any(k.lower() == b"x-request-id" for k, _ in fields):
            fields.append((b"x-request-id", request_id.encode("latin-1")))
        if body or method not in ("GET", "HEAD"):
            fields.append((b"content-length", str(len(body or b"")).encode()))
        return fields

    def _take(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable():
                return connection
            connection.stream.socket.close()
        return None

    def _give_back(self, connection: _Connection) -> None:
        reusable = (connection.h11.our_state is h11.DONE
                    and connection.h11.their_state is h11.DONE)
        if reusable and not self._closed and len(self._idle) < MAX_IDLE:
            connection.h11.start_next_cycle()
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.stream.socket.close()

    async def _connect(self) -> _Connection:
        try:
            with trio.fail_after(self._timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            raise CodexdUnavailable(self._cannot(exc)) from exc
        return _Connection(stream)

    async def _exchange(self, connection: _Connection | None, method: str, target: bytes,
                        fields: list[tuple[bytes, bytes]], body: bytes | None
                        ) -> UpstreamAnswer:
        if self._closed:
            raise CodexdUnavailable(f"cannot reach codexd at {self.base_url}: the conductor is "
                                    "stopping")
        if connection is None:
            connection = await self._connect()
        conn = connection.h11
        answered = False
        try:
            data = conn.send(h11.Request(method=method, target=target, headers=fields)) or b""
            if body:
                data += conn.send(h11.Data(data=body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            with trio.fail_after(self._timeout):
                await connection.stream.send_all(data)
            status = 0
            answer_fields: dict[str, str] = {}
            chunks: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    with trio.fail_after(self._timeout):
                        received = await connection.stream.receive_some(_READ_SIZE)
                    conn.receive_data(received)
                elif isinstance(event, h11.Response):
                    answered = True
                    status = event.status_code
                    answer_fields = {k.decode("latin-1"): v.decode("latin-1")
                                     for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("codexd closed the connection")
                # An InformationalResponse (1xx) carries nothing for us: read on.
        except BaseException as exc:
            await trio.aclose_forcefully(connection.stream)
            if isinstance(exc, trio.TooSlowError):
                raise CodexdUnavailable(f"codexd at {self.base_url} did not answer within "
                                        f"{self._timeout:g} s") from exc
            if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                                h11.ProtocolError)):
                if not answered:
                    raise _Retryable() from exc
                raise CodexdUnavailable(self._cannot(exc)) from exc
            raise
        self._give_back(connection)
        return UpstreamAnswer(status, answer_fields, b"".join(chunks))

    def _cannot(self, exc: BaseException) -> str:
        return f"cannot reach codexd at {self.base_url}: {type(exc).__name__}: {exc}"


class _Retryable(Exception):
    """The exchange failed before any answer arrived (the cause says why)."""


# What the pool writes itself: the Host, and the body framed by a Content-Length.
_POOL_WRITES = frozenset({b"host", b"content-length", b"transfer-encoding"})


class PoolTransport(httpx.AsyncBaseTransport):
    """httpx's transport over an :class:`UpstreamPool`: the wire under a plain-HTTP
    :class:`~codexd_trio.client.CodexdClient` (httpx still builds the request, runs the event
    hooks and hands back its ``Response``).

    Differences from httpx's own transport, all within what the client promises: one timeout
    for every network step (the client's), errors raised as
    :class:`~codexd_trio.client.CodexdUnavailable` (which httpx passes through unchanged) and
    the answer read whole. A request for another host than the pool's is refused.
    """

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (url.scheme, url.host, url.port or 80) != ("http", self.pool.host, self.pool.port):
            raise httpx.UnsupportedProtocol(
                f"this client sends to {self.pool.base_url} only, not to {url}")
        body = await request.aread()
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in request.headers.raw if name.lower() not in _POOL_WRITES]
        answer = await self.pool.request(request.method, url.raw_path.decode("ascii"),
                                         headers=headers, body=body)
        return httpx.Response(answer.status, headers=list(answer.headers.items()),
                              content=answer.content)

    async def aclose(self) -> None:
        await self.pool.aclose()
