"""What every daemon's websocket handlers share: reading what a client sends.

Our event streams only send, but a client may still send frames (a ping of its own, a stray
message). quart-trio queues them in a channel of 10 frames for the handler; a handler that never
reads lets it fill, after which quart-trio stops reading the connection and so never sees the
client leave: the handler is never cancelled, its subscription stays open and a graceful stop
waits out its whole grace. :func:`discarding_client_frames` keeps that channel empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from quart import websocket

__all__ = ["discarding_client_frames"]


@asynccontextmanager
async def discarding_client_frames() -> AsyncIterator[None]:
    """Read and drop every frame the current (accepted) websocket client sends, for the life of
    the block, so quart-trio sees the client's disconnect at once and cancels the handler.

    The cost of a chatty client stays bounded: each frame is at most Hypercorn's
    ``websocket_max_message_size`` (see :func:`codexd_trio.web.app.hypercorn_config`) and is
    dropped as soon as it arrives.

    **Cancellation:** the reading task is cancelled when the block exits, however it exits.
    """
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_discard, name="discard websocket client frames")
        try:
            yield
        finally:
            nursery.cancel_scope.cancel(reason="websocket handler done")


async def _discard() -> None:
    while True:
        await websocket.receive()
