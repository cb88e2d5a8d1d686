"""Attaching to an app-server codexd does not own (``--server-strategy external``).

``codex app-server --listen unix://PATH`` and ``--listen ws://IP:PORT`` (and Codex's own
``app-server daemon``) speak the same JSON-RPC as over stdio, one message per WebSocket text
frame; on a unix socket the server still expects the WebSocket upgrade. So one transport covers
both endpoints: a trio stream (unix or TCP) wrapped by trio-websocket. :class:`WebSocketPeer`
offers the part of :class:`~codexd_trio.protocol.child.ChildProcess` that the app-server client
uses, so the client does not know whether it spawned its peer or attached to it.
Stopping a peer closes the connection and nothing else: codexd never starts or kills an
external app-server.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from urllib.parse import urlsplit

import trio
import trio_websocket

from codexd_trio.protocol.child import ChildGone, ChildSpawnError, ExitStatus, reraise_single

__all__ = ["WebSocketPeer", "open_peer", "parse_endpoint"]

# How an external app-server "exits": its connection closed (no code, no signal).
CLOSED = ExitStatus(code=None, signal=None)
_CONNECT_TIMEOUT_S = 10.0
# Codex sends whole JSON-RPC messages; a diff can be large, the same bound as the stdio reader.
_MAX_MESSAGE = 64 * 1024 * 1024
# The longest path an AF_UNIX address holds: sun_path is 108 bytes on Linux, 104 on macOS and
# the BSDs, one of them kept for the terminating NUL.
_SUN_PATH_MAX = 107 if sys.platform.startswith("linux") else 103


def parse_endpoint(endpoint: str) -> tuple[str, str, int]:
    """``("unix", path, 0)`` or ``("ws", host, port)`` for an external endpoint.

    Raises:
        ValueError: anything else, with a one-line reason (the config turns it into exit 2).
    """
    parts = urlsplit(endpoint)
    if parts.scheme == "unix":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path.startswith("/"):
            raise ValueError(f"a unix endpoint needs an absolute path (unix:///path): {endpoint!r}")
        return "unix", path, 0
    if parts.scheme == "ws":
        if not parts.hostname or parts.port is None:
            raise ValueError(f"a ws endpoint needs a host and a port, got {endpoint!r}")
        return "ws", parts.hostname, parts.port
    raise ValueError(
        f"an external endpoint is unix:///path/to/socket or ws://127.0.0.1:PORT: {endpoint!r}"
    )


def _fits(path: str) -> bool:
    return len(os.fsencode(path)) <= _SUN_PATH_MAX


def _link_dirs() -> list[str]:
    """Where a short private link to a long socket path may go, in order of preference."""
    return [tempfile.gettempdir(), "/tmp"]


@contextmanager
def _connectable(path: str) -> Iterator[str]:
    """A path no longer than an ``AF_UNIX`` address that reaches the socket at ``path``.

    ``connect()`` takes the path in a fixed-size address, but the kernel resolves it like any
    other path, following symlinks of any length. So a long ``path`` is reached through its
    resolved target when that is short (``codex app-server --listen unix://LONG`` binds under
    ``/tmp/codex-daemon-<uid>/`` and leaves a symlink at LONG), else through a short symlink in
    a private temporary directory, removed when the block ends (the connection outlives it).

    Raises:
        ChildSpawnError: no short enough way exists, naming the path and what was tried.
    """
    if _fits(path):
        yield path
        return
    resolved = os.path.realpath(path)
    if _fits(resolved):
        yield resolved
        return
    tried = []
    for base in _link_dirs():
        # mkdtemp's name is 8 random characters after the prefix.
        if not _fits(os.path.join(base, "baa-unix-" + "x" * 8, "s")):
            tried.append(base)
            continue
        try:
            private = tempfile.mkdtemp(prefix="baa-unix-", dir=base)
        except OSError:
            tried.append(base)
            continue
        link = os.path.join(private, "s")
        try:
            os.symlink(resolved, link)
            yield link
        finally:
            with suppress(OSError):
                os.unlink(link)
            with suppress(OSError):
                os.rmdir(private)
        return
    raise ChildSpawnError(
        f"cannot connect to unix://{path}: the path is {len(os.fsencode(path))} bytes, longer "
        f"than the {_SUN_PATH_MAX} a unix socket address holds, so is its resolved path "
        f"{resolved!r}, and no short link could be made in {', '.join(tried)}; "
        "listen on a shorter path"
    )


class WebSocketPeer:
    """One connection to an external app-server, shaped like a child process.

    ``pid`` and ``pgid`` are ``None``: there is no process of ours to signal.
    """

    pid: int | None = None
    pgid: int | None = None

    def __init__(self, ws: trio_websocket.WebSocketConnection, endpoint: str) -> None:
        self._ws = ws
        self.endpoint = endpoint
        self._closed = trio.Event()
        self._send_lock = trio.Lock()

    @property
    def exit_status(self) -> ExitStatus | None:
        return CLOSED if self._closed.is_set() else None

    async def send(self, data: bytes) -> None:
        """Send one JSON-RPC message (a line without its newline) as a text frame.

        Raises:
            ChildGone: the connection is closed.
        """
        async with self._send_lock:
            if self._closed.is_set():
                raise ChildGone("the app-server connection is closed")
            try:
                await self._ws.send_message(data.rstrip(b"\n").decode())
            except trio_websocket.ConnectionClosed as exc:
                self._closed.set()
                raise ChildGone(f"the app-server connection closed: {exc.reason}") from exc

    async def receive_line(self) -> bytes | None:
        """The next message as bytes; ``None`` once the connection is closed."""
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed:
            self._closed.set()
            return None
        return message.encode() if isinstance(message, str) else bytes(message)

    async def wait(self) -> ExitStatus:
        await self._closed.wait()
        return CLOSED

    async def stop(self, grace: float = 2.0, term_grace: float = 2.0) -> ExitStatus:
        """Close the connection (the app-server keeps running). Idempotent."""
        with trio.move_on_after(grace + term_grace):
            await self._ws.aclose()
        self._closed.set()
        return CLOSED

    def kill_group(self) -> None:
        """Nothing to kill: the app-server is not ours."""


@asynccontextmanager
async def open_peer(endpoint: str) -> AsyncIterator[WebSocketPeer]:
    """Connect to an external app-server and yield the peer.

    Raises:
        ChildSpawnError: cannot connect or the WebSocket handshake failed (a child failure for
            the supervisor, retried with its backoff).

    **Resource handling:** the WebSocket and its stream are closed on every exit, shielded and
    bounded (trio-websocket 0.12 would leak the stream when the server closes first).
    """
    kind, where, port = parse_endpoint(endpoint)
    try:
        with trio.fail_after(_CONNECT_TIMEOUT_S):
            if kind == "unix":
                with _connectable(where) as short:
                    stream = await trio.open_unix_socket(short)
            else:
                stream = await trio.open_tcp_stream(where, port)
    except (OSError, trio.TooSlowError) as exc:
        raise ChildSpawnError(f"cannot connect to {endpoint}: {exc or 'timed out'}") from exc
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(_CONNECT_TIMEOUT_S):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery, stream, "localhost" if kind == "unix" else where, "/",
                        max_message_size=_MAX_MESSAGE,
                    )
            except (trio_websocket.HandshakeError, trio.TooSlowError, OSError) as exc:
                raise ChildSpawnError(f"no app-server handshake at {endpoint}: {exc}") from exc
            peer = WebSocketPeer(ws, endpoint)
            try:
                yield peer
            finally:
                with trio.CancelScope(shield=True):
                    await peer.stop(1.0, 1.0)
                nursery.cancel_scope.cancel(reason="app-server connection closed")
    except BaseExceptionGroup as group:
        reraise_single(group)
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
