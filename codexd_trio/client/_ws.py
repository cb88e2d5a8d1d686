"""The websocket half of codexd's client, and the errors both halves raise (private: import
them from :mod:`codexd_trio.client`)."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import trio
import trio_websocket

from codexd_trio.base.contracts import (
    DEFAULT_MAX_LINE,
    Event,
    HelloData,
    HelloFrame,
    OverflowFrame,
    Session,
)

# Close codes after which an event stream simply ends (normal closure, server going away).
_NORMAL_CLOSE_CODES = frozenset({1000, 1001})
_OVERFLOW_CLOSE_CODE = 1013
_RECEIVE_BYTES = 64 * 1024
# The largest frame codexd may send: one event can carry a whole app-server line (up to the
# child's 64 MiB line limit), and a batch frame sends its first event however large. With
# trio-websocket's 1 MiB default, one big command output closed every stream with 1009, and a
# client resuming with the same after= met the same event again, forever.
MAX_FRAME_BYTES = DEFAULT_MAX_LINE + 1024 * 1024
# Event types that settle a turn (CONTRACT.md, "Event").
_TURN_END_TYPES = frozenset(
    {"app-server.turn.completed", "turn.failed", "app-server.turn.completed.missing"}
)


class CodexdError(Exception):
    """codexd answered with an error envelope.

    Attributes:
        status: the HTTP status code.
        code: the envelope's snake_case code (``not_found``, ``turn_in_progress``, ...).
        message: the envelope's human sentence.
        details: the envelope's details object.
    """

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}


class CodexdUnavailable(Exception):
    """codexd could not be reached (connection refused, reset, or timed out)."""


class StreamOverflow(Exception):
    """The event stream was closed because this consumer fell behind.

    Attributes:
        last_delivered_seq: the seq of the last event delivered; reconnect with ``after=`` it.
    """

    def __init__(self, last_delivered_seq: int) -> None:
        super().__init__(f"event stream overflow after seq {last_delivered_seq}")
        self.last_delivered_seq = last_delivered_seq


class _ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str = ""
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class _ErrorEnvelope(msgspec.Struct, kw_only=True):
    ok: bool
    error: _ErrorBody


class _OkEnvelope(msgspec.Struct, kw_only=True):
    ok: bool
    data: Any = None


_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)
_ok_decoder = msgspec.json.Decoder(_OkEnvelope)
_frame_decoder = msgspec.json.Decoder(HelloFrame | OverflowFrame)
_event_decoder = msgspec.json.Decoder(Event)
_batch_decoder = msgspec.json.Decoder(list[Event])
_sessions_decoder = msgspec.json.Decoder(list[Session])


def error_from_response(response: httpx.Response) -> CodexdError:
    """The :class:`CodexdError` an error response stands for (envelope or not)."""
    try:
        env = _error_decoder.decode(response.content)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        pass
    else:
        error = env.error
        return CodexdError(response.status_code, error.code, error.message, error.details)
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    return CodexdError(
        response.status_code,
        f"http_{response.status_code}",
        text or f"codexd answered HTTP {response.status_code}",
    )


class EventStream:
    """One open websocket subscription to codexd's events.

    Async-iterate it for :class:`~codexd_trio.base.contracts.Event` values; it reads both framings,
    one event per frame and ``?batch=1`` (a frame holds a JSON array of events, handed out one
    by one). Iteration ends when the
    server closes normally (1000, or 1001 on its shutdown); it raises :class:`StreamOverflow`
    when the server dropped this consumer, and :class:`CodexdUnavailable` on an abnormal close.

    Attributes:
        hello: the first frame's data (``lastSeq``, ``replayFrom``).
        last_seq: the seq of the last event yielded (or ``hello.replayFrom`` before any).
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection, hello: HelloData) -> None:
        self._ws = ws
        self.hello = hello
        self.last_seq = hello.replayFrom
        self.close_code: int | None = None
        # The rest of the last batch frame, not yet handed out.
        self._pending: collections.deque[Event] = collections.deque()

    # A plain async iterator rather than an async generator: a consumer that breaks out of
    # ``async for`` must not leave an unfinalized generator behind for the GC to close.
    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        event = await self.receive()
        if event is None:
            raise StopAsyncIteration
        return event

    async def receive(self) -> Event | None:
        """The next event, or ``None`` once the server closed the stream normally.

        Raises:
            StreamOverflow: the server dropped this consumer (overflow frame and/or close 1013).
            CodexdUnavailable: the connection ended abnormally.
        """
        if self._pending:
            await trio.lowlevel.checkpoint()
            event = self._pending.popleft()
            self.last_seq = event.seq
            return event
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else 1006
                self.close_code = code
                if code in _NORMAL_CLOSE_CODES:
                    return None
                if code == _OVERFLOW_CLOSE_CODE:
                    raise StreamOverflow(self.last_seq) from None
                raise CodexdUnavailable(
                    f"codexd event stream closed abnormally (code {code})"
                ) from None
            raw = message.encode() if isinstance(message, str) else message
            if raw[:1] == b"[":
                try:
                    events = _batch_decoder.decode(raw)
                except msgspec.ValidationError:
                    continue
                except msgspec.DecodeError:
                    continue
                if not events:
                    continue
                self._pending.extend(events[1:])
                self.last_seq = events[0].seq
                return events[0]
            if b'"seq"' in raw:
                try:
                    event = _event_decoder.decode(raw)
                except msgspec.ValidationError:
                    pass
                except msgspec.DecodeError:
                    pass
                else:
                    self.last_seq = event.seq
                    return event
            try:
                frame = _frame_decoder.decode(raw)
            except msgspec.ValidationError:
                continue
            except msgspec.DecodeError:
                continue
            if isinstance(frame, OverflowFrame):
                self.last_seq = frame.data.lastDeliveredSeq
                raise StreamOverflow(frame.data.lastDeliveredSeq)


@asynccontextmanager
async def open_websocket(
    url: str, *, connect_timeout: float = 10.0, headers: Mapping[str, str] | None = None
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Open a client websocket whose TCP stream this function owns and always closes.

    trio-websocket 0.12 leaks the client's TCP stream when the server closes first or refuses
    the handshake; opening the stream here and wrapping it closes it on every exit. Exceptions
    from the body come out as themselves (not wrapped in an exception group). ``headers`` go
    with the upgrade request (``Authorization`` for a codexd with a token).

    Raises:
        CodexdUnavailable: cannot connect, or the handshake timed out.
        CodexdError: the server refused the handshake (its status and error envelope).

    **Resource handling:** the websocket is closed (bounded, shielded) and then its TCP stream.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extra = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    try:
        with trio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as exc:
        raise CodexdUnavailable(f"cannot connect to {url}: {exc or type(exc).__name__}") from exc
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        host,
                        resource,
                        extra_headers=extra,
                        # Not trio-websocket's 4 KiB: a ?batch=1 frame of a burst is up to
                        # 512 KiB, and each read is a trip through the event loop and wsproto.
                        receive_buffer_size=_RECEIVE_BYTES,
                        max_message_size=MAX_FRAME_BYTES,
                    )
            except trio.TooSlowError:
                raise CodexdUnavailable(f"websocket handshake with {url} timed out") from None
            cancelled = False
            try:
                yield ws
            except trio.Cancelled:
                cancelled = True
                raise
            finally:
                with trio.CancelScope(shield=True):
                    # A cancelled consumer (Ctrl-C, a stop) has its websocket's reader task
                    # cancelled too, so the close handshake could never complete: close the
                    # connection at once rather than wait out the bound for it.
                    if not cancelled:
                        with trio.move_on_after(2):
                            await ws.aclose()
                    await stream.aclose()
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        for leaf in leaves:
            if isinstance(leaf, trio_websocket.ConnectionRejected):
                raise _rejected_error(leaf) from None
        real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
        if len(real) == 1:
            raise real[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


@asynccontextmanager
async def _open_event_stream(
    url: str, *, headers: Mapping[str, str] | None = None
) -> AsyncIterator[EventStream]:
    async with open_websocket(url, headers=headers) as ws:
        yield EventStream(ws, await _read_hello(ws, url))


async def _read_hello(ws: trio_websocket.WebSocketConnection, url: str) -> HelloData:
    with trio.fail_after(10):
        try:
            message = await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise CodexdUnavailable(
                f"codexd closed the event stream before hello ({exc.reason})"
            ) from None
    try:
        frame = _frame_decoder.decode(message)
    except msgspec.ValidationError as exc:
        raise CodexdUnavailable(f"codexd event stream {url} did not start with hello") from exc
    except msgspec.DecodeError as exc:
        raise CodexdUnavailable(f"codexd event stream {url} did not start with hello") from exc
    if not isinstance(frame, HelloFrame):
        raise CodexdUnavailable(f"codexd event stream {url} did not start with hello")
    return frame.data


def _rejected_error(exc: trio_websocket.ConnectionRejected) -> CodexdError:
    body = exc.body or b""
    try:
        env = _error_decoder.decode(body)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        pass
    else:
        return CodexdError(exc.status_code, env.error.code, env.error.message, env.error.details)
    return CodexdError(
        exc.status_code, f"http_{exc.status_code}", "codexd refused the event stream"
    )
