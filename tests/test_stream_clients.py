"""Event-stream clients that talk back (issue 20, item 3).

codexd's stream handler and the conductor's relay only ever send. quart-trio queues what a client
sends in a channel of 10 frames; once that is full it stops reading the connection, so it never
sees the client leave: the handler was never cancelled, the subscriber stayed counted, and a
graceful stop waited out its whole grace. Both handlers now read (and drop) what a client sends.

Real codexd (real codex child, scripted model), a conductor in this process, and a client at the
frame level (``tests.raw_websocket``) that sends 30 text frames and leaves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import trio

from codexd_trio.client import CodexdClient
from codexd_trio.testing import ScriptedModel
from codexd_trio.testing.daemon import running_codexd
from codexd_trio.web.app import WEBSOCKET_MAX_CLIENT_MESSAGE
from tests.fake_codexd import open_conductor
from tests.raw_websocket import RawWebsocket, raw_websocket

GUARD = 120
# Three times what quart-trio queues for a handler that does not read.
CHATTY_FRAMES = 30
# How long the count may take to settle once the client is gone: a bound, not a measurement
# (it settles in milliseconds; the old handler never let it).
SETTLE_S = 20


async def _subscribers(http: httpx.AsyncClient) -> int:
    text = (await http.get("/metrics")).text
    found = re.search(r"^codexd_websocket_subscribers (\S+)$", text, re.MULTILINE)
    assert found, "codexd_websocket_subscribers is missing from /metrics"
    return int(float(found.group(1)))


async def _wait_subscribers(http: httpx.AsyncClient, count: int) -> None:
    """Poll codexd's /metrics until it counts ``count`` stream subscribers (bounded)."""
    with trio.fail_after(SETTLE_S):
        while await _subscribers(http) != count:  # noqa: ASYNC110 - cross-process, bounded
            await trio.sleep(0.05)


async def _chatter(client: RawWebsocket) -> None:
    hello = json.loads(await client.get_text())
    assert hello["type"] == "hello"
    for i in range(CHATTY_FRAMES):
        await client.send_text(f'{{"ping": {i}}}')


@pytest.mark.real_codex
async def test_a_chatty_stream_client_that_leaves_is_let_go_by_codexd(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            httpx.AsyncClient(base_url=codexd.url) as http,
            CodexdClient(codexd.url) as api,
        ):
            url = codexd.url.replace("http://", "ws://") + "/v1/codexd/events"
            async with raw_websocket(url) as client:
                await _chatter(client)
                # What it sent is dropped; the stream keeps serving it.
                session = await api.create_session(purpose="smoke")
                while (event := json.loads(await client.get_text()))["type"] != "session.created":
                    pass
                assert event["sessionId"] == session.sessionId
                assert await _subscribers(http) == 1
                await client.leave()
            # The handler saw the client go: nothing is left subscribed ...
            await _wait_subscribers(http, 0)
            # A message larger than any client of a stream needs is refused, not buffered.
            async with raw_websocket(url) as client:
                assert json.loads(await client.get_text())["type"] == "hello"
                await client.send_text("x" * (WEBSOCKET_MAX_CLIENT_MESSAGE + 1))
                with pytest.raises(EOFError, match="closed with 1009"):
                    await client.get_text()
            await _wait_subscribers(http, 0)
            # ... so a graceful stop has no stream to wait for.
            with trio.fail_after(30):
                assert await codexd.terminate() == 0


@pytest.mark.real_codex
async def test_a_chatty_relay_client_that_leaves_is_let_go_by_the_conductor(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            httpx.AsyncClient(base_url=codexd.url) as http,
            open_conductor(codexd.url, tmp_path / "conductor") as c,
        ):
            relays = c.conductor.relays
            url = c.url.replace("http://", "ws://") + "/v1/codex/events"
            async with raw_websocket(url) as client:
                await _chatter(client)
                created = await c.http.post("/v1/codex/sessions", json={"purpose": "smoke"})
                assert created.status_code == 201, created.text
                while json.loads(await client.get_text())["type"] != "session.created":
                    pass
                assert len(relays) == 1
                await client.leave()
            # The relay ended, and with it its upstream stream on codexd.
            await _wait_subscribers(http, 0)
            with trio.fail_after(SETTLE_S):
                while relays:  # noqa: ASYNC110 - a set the relay handlers leave, bounded
                    await trio.sleep(0.05)
            # A graceful stop of the conductor has no relay left to close.
            c.conductor.begin_stop()
            with trio.fail_after(30):
                await c.done.wait()
