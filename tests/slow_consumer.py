"""A consumer too slow for a burst: it is overflowed (1013), then resumes with ``after=`` and
nothing is lost. Shared by the default framing's test and ``?batch=1``'s."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import trio
import trio_websocket

from codexd_trio.client import CodexdClient
from codexd_trio.testing import ScriptedModel, Streamed


async def overflow_then_resume(
    client: CodexdClient,
    scripted_model: ScriptedModel,
    url: str,
    *,
    seqs_of: Callable[[Any], list[int]],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Subscribe at ``url``, let a 2 000-delta turn run without reading, then read: the frames
    before the overflow frame (their seqs by ``seqs_of``) are 1..lastDeliveredSeq, the close is
    1013, and the client resuming from there gets the rest once each."""
    session = await client.create_session()
    seen: list[int] = []
    async with trio_websocket.open_websocket_url(
        url, message_queue_size=1, extra_headers=headers or []
    ) as ws:
        # A tiny receive buffer so the kernel cannot absorb the backlog for us.
        tcp = ws._stream
        assert isinstance(tcp, trio.SocketStream)
        tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert json.loads(await ws.get_message())["type"] == "hello"
        scripted_model.script(Streamed(["x" * 500] * 2000))
        accepted = await client.start_turn(session.sessionId, "flood")
        await client.wait_for_turn(session.sessionId, accepted["turnId"])
        # Only now start reading: the server must have given up on us meanwhile.
        overflow: dict[str, Any] | None = None
        close_code: int | None = None
        while close_code is None:
            try:
                frame = json.loads(await ws.get_message())
            except trio_websocket.ConnectionClosed as exc:
                close_code = exc.reason.code if exc.reason else -1
                continue
            if isinstance(frame, dict) and frame.get("type") == "overflow":
                overflow = frame["data"]
                continue
            seen.extend(seqs_of(frame))
        await ws._stream.aclose()
    assert close_code == 1013
    assert overflow is not None
    last_delivered = overflow["lastDeliveredSeq"]
    assert seen == list(range(1, last_delivered + 1))

    last_seq = (await client.status())["snapshot"]["recentEvents"]["lastSeq"]
    assert last_delivered < last_seq
    async with client.events(after=last_delivered) as stream:
        async for event in stream:
            seen.append(event.seq)
            if event.seq >= last_seq:
                break
    assert seen == list(range(1, last_seq + 1))
