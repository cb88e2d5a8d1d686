"""The h11 connection pool under the conductor's proxy and the client
(``codexd_trio.client._pool``, issue 27): kept-alive connections reused only when safe, a
timeout on every step, 503-worthy errors as ``CodexdUnavailable``, a POST never sent twice.
Against small h11 servers whose misbehaviour each test chooses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import pytest
import trio
import trio.testing

from codexd_trio.base.context import CURRENT, RequestInfo
from codexd_trio.client import CodexdClient, CodexdUnavailable, UpstreamPool
from codexd_trio.client import _pool as upstream

Behaviour = Callable[["Server", trio.SocketStream, h11.Connection, h11.Request, bytes],
                     Awaitable[bool]]


@dataclass
class Server:
    """Counts connections and requests; ``behaviour`` answers each request (returns whether
    the connection may serve another)."""

    behaviour: Behaviour
    connections: int = 0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                headers = {k.decode(): v.decode() for k, v in request.headers}
                self.requests.append((request.method.decode(), request.target.decode(), headers,
                                      body))
                if not await self.behaviour(self, stream, conn, request, body):
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await trio.aclose_forcefully(stream)


async def answer(stream: trio.SocketStream, conn: h11.Connection, status: int = 200,
                 body: bytes = b'{"ok":true}', extra: list[tuple[bytes, bytes]] | None = None
                 ) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *(extra or [])]
    data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def ok(server: Server, stream: trio.SocketStream, conn: h11.Connection,
             request: h11.Request, body: bytes) -> bool:
    await answer(stream, conn, body=b'{"echo":"%s"}' % body)
    return True


async def silent(server: Server, stream: trio.SocketStream, conn: h11.Connection,
                 request: h11.Request, body: bytes) -> bool:
    await trio.sleep_forever()
    return False


@asynccontextmanager
async def serving(behaviour: Behaviour) -> AsyncIterator[Server]:
    server = Server(behaviour)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def pool_for(server: Server, step_s: float = 5.0) -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(f"http://127.0.0.1:{server.port}", timeout=step_s,
                        headers={"Authorization": "Bearer codexd-token"})
    try:
        yield pool
    finally:
        await pool.aclose()


async def test_requests_reuse_one_kept_alive_connection_and_carry_the_headers() -> None:
    async with serving(ok) as server, pool_for(server) as pool:
        token = CURRENT.set(RequestInfo("req-abc", "POST", "/v1/codex/turn"))
        try:
            got = await pool.request("POST", "/v1/codexd/turn?x=1",
                                     headers=[("Content-Type", "application/json"),
                                              ("Idempotency-Key", "k1")], body=b"{}")
        finally:
            CURRENT.reset(token)
        assert (got.status, got.content) == (200, b'{"echo":"{}"}')
        assert got.headers["content-type"] == "application/json"
        for _ in range(20):
            assert (await pool.request("GET", "/v1/codexd/sessions")).status == 200
        assert server.connections == 1
        method, target, headers, body = server.requests[0]
        assert (method, target, body) == ("POST", "/v1/codexd/turn?x=1", b"{}")
        assert headers["authorization"] == "Bearer codexd-token"
        assert headers["x-request-id"] == "req-abc"
        assert headers["idempotency-key"] == "k1"
        assert headers["host"] == f"127.0.0.1:{server.port}"
        assert "x-request-id" not in server.requests[1][2]


async def test_concurrent_requests_each_get_a_connection_and_the_pool_keeps_a_few() -> None:
    release = trio.Event()

    async def slow(server: Server, stream: trio.SocketStream, conn: h11.Connection,
                   request: h11.Request, body: bytes) -> bool:
        await release.wait()
        await answer(stream, conn)
        return True

    async with serving(slow) as server, pool_for(server) as pool:
        async with trio.open_nursery() as nursery:
            for _ in range(upstream.MAX_IDLE + 4):
                nursery.start_soon(pool.request, "GET", "/x")
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert server.connections == upstream.MAX_IDLE + 4
        assert len(pool._idle) == upstream.MAX_IDLE  # the surplus was closed
        await pool.request("GET", "/x")
        assert server.connections == upstream.MAX_IDLE + 4  # an idle one was reused


async def test_an_idle_connection_codexd_closed_is_not_used() -> None:
    async def once(server: Server, stream: trio.SocketStream, conn: h11.Connection,
                   request: h11.Request, body: bytes) -> bool:
        await answer(stream, conn)
        return False  # closes the kept-alive connection afterwards (as an idle timeout does)

    async with serving(once) as server, pool_for(server) as pool:
        for _ in range(3):
            await pool.request("POST", "/x", body=b"{}")  # never retried: it must just work
            await trio.testing.wait_all_tasks_blocked()  # the server's close has landed
        assert server.connections == 3
        assert len(server.requests) == 3


async def test_idle_connections_expire_before_codexd_drops_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream, "IDLE_EXPIRY_S", -1.0)  # every idle connection has expired
    async with serving(ok) as server, pool_for(server) as pool:
        for _ in range(3):
            await pool.request("GET", "/x")
        assert server.connections == 3


async def test_a_get_that_meets_a_connection_closing_under_it_is_retried_once_a_post_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race the readable check cannot see: codexd closes the idle connection just as the
    request goes out, without reading it. A GET is sent again on a new connection; a POST is
    not (it answers 503 and the client decides, with an Idempotency-Key)."""

    async def drop_every_second(server: Server, stream: trio.SocketStream,
                                conn: h11.Connection, request: h11.Request,
                                body: bytes) -> bool:
        if len(server.requests) % 2 == 0:
            return False  # closed without an answer
        await answer(stream, conn)
        return True

    monkeypatch.setattr(upstream._Connection, "usable", lambda self: True)
    async with serving(drop_every_second) as server, pool_for(server) as pool:
        assert (await pool.request("GET", "/x")).status == 200  # request 1, connection 1
        assert (await pool.request("GET", "/x")).status == 200  # 2 dropped, 3 answered
        assert [r[0] for r in server.requests] == ["GET", "GET", "GET"]
        assert server.connections == 2
        with pytest.raises(CodexdUnavailable):
            await pool.request("POST", "/x", body=b"{}")  # 4 dropped: not sent again
        assert [r[0] for r in server.requests] == ["GET", "GET", "GET", "POST"]
        assert (await pool.request("POST", "/x", body=b"{}")).status == 200  # fresh connection


async def test_a_codexd_that_never_answers_is_unavailable_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(silent) as server, pool_for(server, step_s=3.0) as pool:
        started = trio.current_time()
        with pytest.raises(CodexdUnavailable, match="did not answer within 3 s"):
            await pool.request("GET", "/x")
        assert trio.current_time() - started == pytest.approx(3.0)
        assert pool._idle == []  # that connection is never reused


async def test_a_codexd_that_is_down_is_unavailable_and_the_pool_recovers() -> None:
    async with serving(ok) as server:
        port = server.port
    pool = UpstreamPool(f"http://127.0.0.1:{port}", timeout=5.0)
    try:
        with pytest.raises(CodexdUnavailable, match="cannot reach codexd"):
            await pool.request("GET", "/x")
    finally:
        await pool.aclose()
    async with serving(ok) as server, pool_for(server) as pool:
        assert (await pool.request("GET", "/x")).status == 200


async def test_an_answer_cut_short_is_unavailable_and_the_next_request_works() -> None:
    async def torn(server: Server, stream: trio.SocketStream, conn: h11.Connection,
                   request: h11.Request, body: bytes) -> bool:
        if len(server.requests) == 1:
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\"")
            return False
        await answer(stream, conn)
        return True

    async with serving(torn) as server, pool_for(server) as pool:
        with pytest.raises(CodexdUnavailable):
            await pool.request("GET", "/x")  # an answer had begun: not retried
        assert len(server.requests) == 1
        assert (await pool.request("GET", "/x")).status == 200


async def test_a_cancelled_request_closes_its_connection_and_the_pool_goes_on() -> None:
    entered = trio.Event()

    async def slow_first(server: Server, stream: trio.SocketStream, conn: h11.Connection,
                         request: h11.Request, body: bytes) -> bool:
        if len(server.requests) == 1:
            entered.set()
            await trio.sleep_forever()
        await answer(stream, conn)
        return True

    async with serving(slow_first) as server, pool_for(server) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.request, "GET", "/x")
            await entered.wait()
            nursery.cancel_scope.cancel()
        assert pool._idle == []
        assert (await pool.request("GET", "/x")).status == 200
        assert server.connections == 2


async def test_answers_in_chunks_and_without_a_body_are_read_whole() -> None:
    async def chunked(server: Server, stream: trio.SocketStream, conn: h11.Connection,
                      request: h11.Request, body: bytes) -> bool:
        if request.target == b"/empty":
            await stream.send_all((conn.send(h11.Response(status_code=204, headers=[])) or b"")
                                  + (conn.send(h11.EndOfMessage()) or b""))
            return True
        data = conn.send(h11.Response(status_code=200, headers=[
            (b"transfer-encoding", b"chunked"), (b"idempotency-replayed", b"true")])) or b""
        for part in (b"x" * 70_000, b"y" * 10):
            data += conn.send(h11.Data(data=part)) or b""
        await stream.send_all(data + (conn.send(h11.EndOfMessage()) or b""))
        return True

    async with serving(chunked) as server, pool_for(server) as pool:
        got = await pool.request("GET", "/big")
        assert got.content == b"x" * 70_000 + b"y" * 10
        assert got.headers["idempotency-replayed"] == "true"
        empty = await pool.request("GET", "/empty")
        assert (empty.status, empty.content) == (204, b"")
        assert server.connections == 1


def test_the_proxy_client_speaks_plain_http_only() -> None:
    with pytest.raises(ValueError, match="plain HTTP"):
        UpstreamPool("https://codexd.example:4319", timeout=1.0)


# --------------------------------------------------------------------------------------------
# The CodexdClient sends plain HTTP through a pool of its own (PoolTransport)


async def test_the_client_sends_through_a_pool_each_header_once() -> None:
    raw: list[list[tuple[bytes, bytes]]] = []

    async def record(server: Server, stream: trio.SocketStream, conn: h11.Connection,
                     request: h11.Request, body: bytes) -> bool:
        raw.append(list(request.headers))
        await answer(stream, conn, 409, b'{"ok":false}', extra=[(b"x-request-id", b"req-abc")])
        return True

    async with serving(record) as server, CodexdClient(
            f"http://127.0.0.1:{server.port}", token="codexd-token") as client:
        token = CURRENT.set(RequestInfo("req-abc", "POST", "/v1/codex/turn"))
        try:
            got = await client.request("POST", "/v1/codexd/turn", json={"input": "hi"},
                                       params={"q": "a b"}, headers={"Idempotency-Key": "k1"})
        finally:
            CURRENT.reset(token)
        assert (got.status_code, got.content) == (409, b'{"ok":false}')
        assert got.headers["x-request-id"] == "req-abc"
        method, target, _, body = server.requests[0]
        assert (method, target, body) == ("POST", "/v1/codexd/turn?q=a+b", b'{"input":"hi"}')
        names = [name for name, _ in raw[0]]
        # The client's hook and the pool both know the request id: it is sent once, and so is
        # every header the pool writes itself.
        for name in (b"x-request-id", b"host", b"content-length", b"authorization"):
            assert names.count(name) == 1, (name, raw[0])
        sent = dict(raw[0])
        assert sent[b"x-request-id"] == b"req-abc"
        assert sent[b"authorization"] == b"Bearer codexd-token"
        assert sent[b"content-type"] == b"application/json"
        assert sent[b"idempotency-key"] == b"k1"
        assert sent[b"content-length"] == b"14"


async def test_the_clients_pool_is_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx's own transport would keep the connection; the pool drops an expired idle one.
    monkeypatch.setattr(upstream, "IDLE_EXPIRY_S", -1.0)
    async with serving(ok) as server, CodexdClient(
            f"http://127.0.0.1:{server.port}") as client:
        for _ in range(3):
            assert (await client.request("GET", "/healthz")).status_code == 200
        assert server.connections == 3


async def test_the_client_through_its_pool_reports_a_silent_codexd_as_unavailable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(silent) as server, CodexdClient(
            f"http://127.0.0.1:{server.port}", timeout=2.0) as client:
        with pytest.raises(CodexdUnavailable, match="did not answer within 2 s"):
            await client.healthz()


async def test_the_client_sends_nothing_to_another_host_and_uses_httpx_over_https() -> None:
    async with serving(ok) as server, CodexdClient(
            f"http://127.0.0.1:{server.port}") as client:
        with pytest.raises(CodexdUnavailable, match=r"not to http://127\.0\.0\.2:1/x"):
            await client.request("GET", "http://127.0.0.2:1/x")
        assert server.requests == []
    # No pool for HTTPS (it speaks plain HTTP only): httpx's transport, and no error.
    async with CodexdClient("https://codexd.example:4319") as client:
        assert client.base_url == "https://codexd.example:4319"
