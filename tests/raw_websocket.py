"""A websocket client at the frame level (wsproto over a trio TCP stream), for tests that must do
what no well-behaved client library does: send frames nobody asked for, then leave."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


class RawWebsocket:
    """One client connection; :func:`raw_websocket` opens it."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self._events: list[Event] = []

    async def _next_event(self) -> Event:
        while not self._events:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.ws.receive_data(data)
            self._events.extend(self.ws.events())
        return self._events.pop(0)

    async def get_text(self) -> str:
        """The next text message (pings are answered by wsproto's caller: none are sent here)."""
        parts: list[str] = []
        while True:
            event = await self._next_event()
            if isinstance(event, CloseConnection):
                raise EOFError(f"closed with {event.code}")
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts)

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def leave(self) -> None:
        """Send a close frame and drop the TCP connection without waiting for the answer."""
        try:
            await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
        finally:
            await self.stream.aclose()


@asynccontextmanager
async def raw_websocket(
    url: str, headers: Sequence[tuple[str, str]] = ()
) -> AsyncIterator[RawWebsocket]:
    """Open ``ws://host:port/path?query``; raise ``ConnectionRefusedError`` if the upgrade is
    refused (with the status in its message).

    **Resource handling:** the TCP stream is closed on exit (if :meth:`RawWebsocket.leave` has not
    already closed it).
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        extra = [(k.encode(), v.encode()) for k, v in headers]
        await stream.send_all(ws.send(Request(host=parts.netloc, target=target,
                                              extra_headers=extra)))
        client = RawWebsocket(stream, ws)
        event = await client._next_event()
        if isinstance(event, RejectConnection):
            body = b""
            while event.has_body:
                data = await client._next_event()
                assert isinstance(data, RejectData)
                body += data.data
                if data.body_finished:
                    break
            raise ConnectionRefusedError(f"{event.status_code} {body.decode(errors='replace')}")
        assert isinstance(event, AcceptConnection), event
        yield client
    finally:
        await stream.aclose()
