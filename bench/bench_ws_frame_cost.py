"""Server CPU per websocket frame: Quart-Trio's websocket versus a bare ASGI handler, both on
Hypercorn's trio worker (issue 16: is a leaner path for the event stream worth it?).

One server process (this one) serves both on 127.0.0.1: ``/quart`` is a Quart-Trio websocket
route, ``/asgi`` an ASGI callable in front of the same app that answers the upgrade itself. For
each, a subscriber process (``--client``) opens ``--connections`` websockets and reads until it
has ``--frames`` frames of an event-sized (~430 bytes) text on each; the server measures its own
CPU (``time.process_time``, every thread) from the first send to the last. Frames are sent one
per ``send`` exactly as the event stream's default framing does.

    .venv/bin/python -m bench.bench_ws_frame_cost [--frames 5000] [--connections 10] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from functools import partial
from typing import Any

import trio
import trio_websocket
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import websocket
from quart_trio import QuartTrio

from bench.common import add_common_args, machine_facts, print_result
from codexd_trio.client import open_websocket

PAYLOAD = (
    '{"seq":123456,"at":"2026-11-30T16:20:00.000Z","type":"app-server.item.agentMessage.delta",'
    '"level":"info","sessionId":"session-8a1f0c2e-5d7b-4b8e-9c1a-2f3e4d5c6b7a","threadId":'
    '"0199a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a5b","turnId":"0199a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a6c",'
    '"message":"","detail":{"threadId":"0199a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a5b","turnId":'
    '"0199a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a6c","itemId":"msg_0123456789abcdef","delta":"d42 "}}'
)


class Meter:
    """Server CPU from the first frame sent to the last, over all connections of one run."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0

    def begin(self) -> None:
        if self.start is None:
            self.start = time.process_time()

    def finish(self) -> None:
        self.end = time.process_time()


def build_app(frames: int, meters: dict[str, Meter]) -> Any:
    app = QuartTrio("frame-cost")

    @app.websocket("/quart")
    async def quart_route() -> None:
        await websocket.accept()
        meters["quart"].begin()
        for _ in range(frames):
            await websocket.send(PAYLOAD)
        meters["quart"].finish()
        await websocket.close(1000)

    quart_asgi = app.asgi_app

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or scope["path"] != "/asgi":
            await quart_asgi(scope, receive, send)
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        meters["asgi"].begin()
        for _ in range(frames):
            await send({"type": "websocket.send", "text": PAYLOAD})
        meters["asgi"].finish()
        await send({"type": "websocket.close", "code": 1000})

    app.asgi_app = asgi  # type: ignore[method-assign]
    return app


async def client_main(url: str, connections: int, frames: int) -> None:
    async def one() -> None:
        async with open_websocket(url) as ws:
            for _ in range(frames):
                await ws.get_message()
            # Let the server close first: a client close racing the server's last send makes
            # Hypercorn send its close reply concurrently (BusyResourceError in the app).
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.get_message()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)


async def run(frames: int, connections: int) -> dict[str, Any]:
    meters = {"quart": Meter(), "asgi": Meter()}
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    result: dict[str, Any] = {"benchmark": "ws_frame_cost", "frames": frames,
                              "connections": connections}
    async with trio.open_nursery() as nursery:
        shutdown = trio.Event()
        binds = await nursery.start(
            partial(serve, build_app(frames, meters), config, shutdown_trigger=shutdown.wait)
        )
        base = binds[0].replace("http://", "ws://")
        for name in ("quart", "asgi", "quart", "asgi"):
            meters[name] = Meter()
            await trio.run_process(
                [sys.executable, "-m", "bench.bench_ws_frame_cost", "--client", f"{base}/{name}",
                 "--frames", str(frames), "--connections", str(connections)],
                stdout=subprocess.DEVNULL,
            )
            meter = meters[name]
            assert meter.start is not None
            us = (meter.end - meter.start) / (frames * connections) * 1e6
            result.setdefault(f"{name}_us_per_frame", []).append(us)
        shutdown.set()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    add_common_args(parser)
    args = parser.parse_args()
    if args.client:
        trio.run(client_main, args.client, args.connections, args.frames)
        return
    frames = 200 if args.quick else args.frames
    result = trio.run(run, frames, args.connections)
    result["machine"] = machine_facts()
    q, a = result["quart_us_per_frame"], result["asgi_us_per_frame"]
    lines = [
        f"websocket frame cost, {args.connections} connections x {frames} frames of "
        f"{len(PAYLOAD)} bytes, server CPU per frame (two runs each):",
        f"  Quart-Trio websocket route: {', '.join(f'{v:.1f}' for v in q)} us",
        f"  bare ASGI handler:          {', '.join(f'{v:.1f}' for v in a)} us",
    ]
    print_result(result, lines, as_json=args.json)


if __name__ == "__main__":
    main()
