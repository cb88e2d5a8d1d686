"""``--server-strategy external`` over a unix socket whose path is longer than an ``AF_UNIX``
address holds (107 bytes on Linux, 103 on macOS).

``codex app-server --listen unix://LONG`` binds under ``/tmp/codex-daemon-<uid>/<hash>`` and leaves
a symlink at LONG; a checkout (and so a test root) under a long path gives such an endpoint. These
tests stand up a real listening socket that speaks the WebSocket upgrade, as the app-server does,
and reach it through a long path in both ways a path can be long.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_websocket

from codexd_trio.protocol import transport
from codexd_trio.protocol.child import ChildSpawnError
from codexd_trio.protocol.transport import open_peer

SUN_PATH_MAX = 103  # the smaller of macOS's 104 - 1 and Linux's 108 - 1


def long_dir(base: Path, at_least: int = 150) -> Path:
    """A directory under ``base`` whose path is at least ``at_least`` bytes long."""
    name = "d" * max(1, at_least - len(str(base)) - 1)
    parts = [name[i : i + 100] for i in range(0, len(name), 100)]  # NAME_MAX is 255
    path = base.joinpath(*parts)
    path.mkdir(parents=True)
    assert len(os.fsencode(path)) >= at_least
    return path


@asynccontextmanager
async def echo_server(path: str) -> AsyncIterator[None]:
    """A WebSocket echo server on a unix socket bound at ``path`` (which must be short)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()

    async def echo(stream: trio.SocketStream) -> None:
        # trio-websocket's server wants an IP listener; the upgrade itself is the same.
        async with stream, trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            ws = await request.accept()
            try:
                while True:
                    await ws.send_message(await ws.get_message())
            except trio_websocket.ConnectionClosed:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, echo, [trio.SocketListener(sock)])
        yield
        nursery.cancel_scope.cancel(reason="test over")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (the test's own tmp_path may be long)."""
    with tempfile.TemporaryDirectory(prefix="baa-sock-") as where:
        path = Path(where)
        assert len(os.fsencode(path)) < 60
        yield path


async def _round_trip(endpoint: str) -> None:
    async with open_peer(endpoint) as peer:
        await peer.send(b'{"id":1}\n')
        assert await peer.receive_line() == b'{"id":1}'


async def test_a_long_symlink_to_a_short_socket_connects_through_its_target(
    tmp_path: Path, short_dir: Path
) -> None:
    # What codex app-server --listen unix://LONG leaves behind.
    target = short_dir / "app-server.sock"
    link = long_dir(tmp_path) / "app-server.sock"
    link.symlink_to(target)
    assert len(os.fsencode(link)) > 107
    with trio.fail_after(10):
        async with echo_server(str(target)):
            await _round_trip(f"unix://{link}")


async def test_a_socket_inside_a_long_directory_connects(
    tmp_path: Path, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = short_dir / "links"
    links.mkdir()
    monkeypatch.setattr(transport, "_link_dirs", lambda: [str(links)])
    # No short name resolves to it: bound at a short path, then moved (the inode is the socket).
    bound = short_dir / "s.sock"
    moved = long_dir(tmp_path) / "app-server.sock"
    with trio.fail_after(10):
        async with echo_server(str(bound)):
            bound.rename(moved)
            assert len(os.fsencode(os.path.realpath(moved))) > SUN_PATH_MAX
            await _round_trip(f"unix://{moved}")
    # The short link it went through was private and is gone.
    assert list(links.iterdir()) == []


async def test_a_long_path_to_nothing_yet_is_the_ordinary_not_there_error(tmp_path: Path) -> None:
    # codexd retries while the app-server is not up; the error must say why, not "too long".
    missing = long_dir(tmp_path) / "app-server.sock"
    with pytest.raises(ChildSpawnError, match="No such file or directory"):
        await _round_trip(f"unix://{missing}")


async def test_no_short_way_to_a_long_path_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every place a short link could go is itself too long.
    monkeypatch.setattr(transport, "_link_dirs", lambda: [str(long_dir(tmp_path / "tmp"))])
    far = long_dir(tmp_path / "far") / "app-server.sock"
    with pytest.raises(ChildSpawnError) as info:
        await _round_trip(f"unix://{far}")
    message = str(info.value)
    assert "longer than" in message
    assert str(far) in message
