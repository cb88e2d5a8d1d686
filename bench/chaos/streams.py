"""Subscribers of the event stream, through codexd and through the conductor's relay.

Kinds: ``normal`` (stays until something ends its connection), ``slow`` (reads slowly, so it
overflows during bursts and resumes from ``lastDeliveredSeq``), ``chatty`` (sends frames while
it reads, then leaves) and ``dropper`` (drops its TCP connection without a close frame after a
while, then resumes with ``after=``). Every connection is checked as it goes: the first event
is the one ``after=``/``replayFrom`` promise, seqs follow one another with no gap and no
repeat, ``hello.lastSeq`` never falls below a seq already seen, and an overflow frame names the
last event this client really got. Every event is fingerprinted into :meth:`Context.saw`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
import trio
import trio_websocket

from bench.chaos.context import Context, digest
from bench.chaos.world import Endpoints, World
from codexd_trio.client._ws import MAX_FRAME_BYTES

KINDS = ("normal", "slow", "chatty", "dropper")
# How a connection may end besides its own choice (refused, reset, rejected with 503...).
_CONNECTION_ENDS = (OSError, trio.TooSlowError, trio_websocket.HandshakeError,
                    trio_websocket.ConnectionClosed, trio.BrokenResourceError,
                    trio.ClosedResourceError)


@dataclass
class Subscriber:
    name: str
    kind: str
    via: str
    batch: bool
    last_seq: int | None = None
    max_seen: int = 0
    connections: int = 0
    events: int = 0
    overflows: int = 0
    cuts: int = 0
    _scope: trio.CancelScope | None = None
    _stream: trio.SocketStream | None = None
    _cut: bool = field(default=False)

    @property
    def connected(self) -> bool:
        return self._scope is not None

    def cut(self) -> bool:
        """Drop this subscriber's TCP connection mid-stream (RST, no close frame)."""
        if self._scope is None or self._stream is None:
            return False
        _abort(self._stream)
        self._cut = True
        self._scope.cancel(reason="connection cut by the harness")
        return True


def _abort(stream: trio.SocketStream) -> None:
    # SO_LINGER 0: the close that follows sends a RST, as a cable pulled or a process killed.
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def make_subscribers(ctx: Context) -> list[Subscriber]:
    rng = ctx.rng("subscribers")
    subs = []
    for index in range(ctx.settings.subscribers):
        kind = KINDS[index % len(KINDS)]
        via = "codexd" if (index // len(KINDS)) % 2 == 0 else "conductor"
        if index % 2 == 1 and index < len(KINDS):
            via = "conductor"
        subs.append(Subscriber(f"sub-{index}-{kind}-{via}", kind, via, rng.random() < 0.5))
    return subs


async def follow(ctx: Context, world: World, ep: Endpoints, sub: Subscriber) -> None:
    """Keep ``sub`` subscribed until the clients stop, resuming after every end."""
    rng = ctx.rng(f"sub:{sub.name}")
    if sub.kind == "normal":
        sub.last_seq = 0  # one full replay from the start, then resumes
    while not ctx.stop_clients.is_set():
        try:
            await _connection(ctx, world, ep, sub, rng)
        except* _CONNECTION_ENDS as group:
            exc = group.exceptions[0]
            ctx.log(sub.name, f"connection failed: {type(exc).__name__}: {str(exc)[:120]}")
        # Pacing reconnects, not waiting for anything.
        await trio.sleep(rng.uniform(0.05, 0.3))


async def _connection(ctx: Context, world: World, ep: Endpoints, sub: Subscriber,
                      rng: Any) -> None:
    if sub.via == "codexd":
        base, path = ep.codexd, "/v1/codexd/events"
    else:
        base, path = rng.choice(ep.conductors), "/v1/codex/events"
    query: dict[str, str] = {}
    after = sub.last_seq if sub.kind == "normal" or sub.last_seq is not None else None
    if after is not None:
        query["after"] = str(after)
    if sub.batch:
        query["batch"] = "1"
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    resource = path + (f"?{urlencode(query)}" if query else "")
    headers = [(b"Authorization", ep.headers(sub.via)["Authorization"].encode())]
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, port)
    sub._cut = False
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(5):
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, host, resource, extra_headers=headers,
                    max_message_size=MAX_FRAME_BYTES)
            sub.connections += 1
            ctx.counters["stream connections"] += 1
            with trio.CancelScope() as scope:
                sub._scope, sub._stream = scope, stream
                try:
                    ending = await _read(ctx, world, sub, ws, after, rng, nursery)
                finally:
                    sub._scope = None
            if sub._cut or ending == "abort":
                if sub._cut:
                    sub.cuts += 1
                _abort(stream)
                await stream.aclose()
            elif ending == "close":
                with trio.move_on_after(2):
                    await ws.aclose()
            nursery.cancel_scope.cancel(reason="subscriber connection over")
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _read(ctx: Context, world: World, sub: Subscriber,
                ws: trio_websocket.WebSocketConnection, after: int | None, rng: Any,
                nursery: trio.Nursery) -> str:
    """Read one connection; returns how to end it (``close``, ``abort`` or ``gone``)."""
    try:
        hello = msgspec.json.decode(await ws.get_message())
    except trio_websocket.ConnectionClosed:
        return "gone"
    data = hello.get("data") or {}
    last, replay_from = int(data.get("lastSeq", 0)), int(data.get("replayFrom", 0))
    ctx.check("stream_resume")
    if last < sub.max_seen:
        ctx.violation("stream_resume",
                      f"{sub.name}: hello.lastSeq {last} is below seq {sub.max_seen} it "
                      "already saw (a durable event was forgotten)", subscriber=sub.name)
    if after is not None and replay_from < after + 1:
        ctx.violation("stream_resume", f"{sub.name}: after={after} but replayFrom "
                      f"{replay_from}", subscriber=sub.name)
    if after is not None and replay_from > after + 1:
        ctx.counters["resumes past retention"] += 1
    expected = replay_from
    budget = rng.randint(20, 400) if sub.kind == "dropper" else None
    deadline = trio.current_time() + rng.uniform(0.5, 4.0) if sub.kind in (
        "chatty", "dropper") else None
    if sub.kind == "chatty":
        nursery.start_soon(_chatter, ws, rng)
    while True:
        if ctx.stop_clients.is_set():
            return "close"
        if deadline is not None and trio.current_time() > deadline:
            return "abort" if rng.random() < 0.5 else "close"
        message: str | bytes | None = None
        try:
            # Wakes up now and then to see the deadline and the end of the run.
            with trio.move_on_after(1.0):
                message = await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else 1006
            ctx.counters[f"stream closed {code}"] += 1
            return "gone"
        if message is None:
            continue
        text = message if isinstance(message, str) else message.decode()
        if text.startswith("["):
            events = msgspec.json.decode(text)
        elif '"seq"' in text:
            events = [msgspec.json.decode(text)]
        else:
            frame = msgspec.json.decode(text)
            if frame.get("type") == "overflow":
                delivered = int(frame["data"]["lastDeliveredSeq"])
                sub.overflows += 1
                ctx.check("stream_overflow_resume")
                if delivered != expected - 1:
                    ctx.violation("stream_overflow_resume",
                                  f"{sub.name}: overflow says lastDeliveredSeq {delivered}, the "
                                  f"last event it got was {expected - 1}", subscriber=sub.name)
                sub.last_seq = delivered
            continue
        for event in events:
            seq = int(event["seq"])
            ctx.check("stream_order")
            if seq != expected:
                ctx.violation("stream_order",
                              f"{sub.name}: seq {seq} where {expected} was due "
                              f"({'a gap' if seq > expected else 'a repeat'})",
                              subscriber=sub.name, seq=seq, expected=expected)
            expected = seq + 1
            sub.last_seq = seq
            sub.max_seen = max(sub.max_seen, seq)
            sub.events += 1
            ctx.saw(seq, digest(event), sub.name)
            world.on_event(event)
        if budget is not None:
            budget -= len(events)
            if budget <= 0:
                return "abort"
        if sub.kind == "slow":
            await trio.sleep(rng.uniform(0.01, 0.08))  # being slow is the point


async def _chatter(ws: trio_websocket.WebSocketConnection, rng: Any) -> None:
    """What a chatty client does: frames the server has no use for, many of them."""
    n = 0
    try:
        while True:
            await ws.send_message(f"ping {n}")
            n += 1
            await trio.sleep(rng.uniform(0.005, 0.03))
    except (trio_websocket.ConnectionClosed, trio.BrokenResourceError,
            trio.ClosedResourceError):
        return

