"""Spawning ``codex app-server`` and holding one :class:`AppServerClient` to it for a block.

Usage::

    async with open_app_server(spec, on_notification=handle) as client:
        thread = await client.thread_start(cwd="/work")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import codexd_trio
from codexd_trio.protocol.appserver import (
    AppServerClient,
    Backpressure,
    NotificationHandler,
    OverloadRetry,
    Peer,
    ServerRequestHandler,
)
from codexd_trio.protocol.child import DEFAULT_MAX_LINE, ChildSpec, open_child, reraise_single
from codexd_trio.protocol.transport import open_peer

__all__ = ["attach_app_server", "open_app_server"]

_DEFAULT_RETRY = OverloadRetry()  # frozen: safe to share


@asynccontextmanager
async def open_app_server(
    spec: ChildSpec,
    *,
    on_notification: NotificationHandler,
    on_server_request: ServerRequestHandler | None = None,
    backpressure: Backpressure | None = None,
    server_request_timeout: float = 600.0,
    request_timeout: float = 30.0,
    max_in_flight: int = 32,
    stdout_log: Path | None = None,
    client_name: str = "codexd",
    client_version: str = codexd_trio.__version__,
    initialize: bool = True,
    overload_retry: OverloadRetry = _DEFAULT_RETRY,
    max_line: int = DEFAULT_MAX_LINE,
    stop_grace: float = 2.0,
    stop_term_grace: float = 2.0,
) -> AsyncIterator[AppServerClient]:
    """Spawn ``codex app-server`` (``spec``), handshake, and yield a client.

    Notifications are passed to ``on_notification`` synchronously and in order from the reader
    task (it must not block). Each server request runs ``on_server_request`` in its own task;
    with no handler, or when it raises or exceeds ``server_request_timeout``, the server gets
    a JSON-RPC error reply (Codex treats that as a decline), so it never waits forever.
    stdout lines that are not JSON-RPC messages are appended to ``stdout_log``.
    ``backpressure``, if given, is awaited before each stdout line is read: while it blocks,
    the pipe fills and the child waits (the host cannot take more events).

    Raises:
        ChildSpawnError: the binary could not be started.
        AppServerError, RequestTimeout, ChildExited: the handshake failed.

    **Cancellation:** cancelling the owner of the block stops the child like a normal exit.

    **Resource handling:** on leaving the block the child is stopped gracefully (close stdin,
    ``stop_grace``, SIGTERM, ``stop_term_grace``, SIGKILL the process group) under a shielded
    scope with its own deadline; server-request tasks still running are cancelled.
    """
    async with (
        open_child(spec, max_line=max_line, grace=stop_grace, term_grace=stop_term_grace) as child,
        _connected(
            child,
            on_notification=on_notification,
            on_server_request=on_server_request,
            backpressure=backpressure,
            server_request_timeout=server_request_timeout,
            request_timeout=request_timeout,
            max_in_flight=max_in_flight,
            stdout_log=stdout_log,
            client_name=client_name,
            client_version=client_version,
            initialize=initialize,
            overload_retry=overload_retry,
            stop_grace=stop_grace,
            stop_term_grace=stop_term_grace,
        ) as client,
    ):
        yield client


@asynccontextmanager
async def attach_app_server(
    endpoint: str,
    *,
    on_notification: NotificationHandler,
    on_server_request: ServerRequestHandler | None = None,
    backpressure: Backpressure | None = None,
    server_request_timeout: float = 600.0,
    request_timeout: float = 30.0,
    stdout_log: Path | None = None,
    client_name: str = "codexd",
    client_version: str = codexd_trio.__version__,
) -> AsyncIterator[AppServerClient]:
    """Connect to an app-server codexd does not own (``unix:///path`` or ``ws://host:port``),
    handshake, and yield a client; leaving the block closes the connection, nothing else.

    Raises:
        ChildSpawnError: cannot connect (a child failure for the supervisor: backoff, retry).
        AppServerError, RequestTimeout, ChildExited: the handshake failed.
    """
    async with (
        open_peer(endpoint) as peer,
        _connected(
            peer,
            on_notification=on_notification,
            on_server_request=on_server_request,
            backpressure=backpressure,
            server_request_timeout=server_request_timeout,
            request_timeout=request_timeout,
            max_in_flight=32,
            stdout_log=stdout_log,
            client_name=client_name,
            client_version=client_version,
            initialize=True,
            overload_retry=_DEFAULT_RETRY,
            stop_grace=1.0,
            stop_term_grace=1.0,
        ) as client,
    ):
        yield client


@asynccontextmanager
async def _connected(
    child: Peer,
    *,
    on_notification: NotificationHandler,
    on_server_request: ServerRequestHandler | None,
    backpressure: Backpressure | None,
    server_request_timeout: float,
    request_timeout: float,
    max_in_flight: int,
    stdout_log: Path | None,
    client_name: str,
    client_version: str,
    initialize: bool,
    overload_retry: OverloadRetry,
    stop_grace: float,
    stop_term_grace: float,
) -> AsyncIterator[AppServerClient]:
    """The client over a spawned child or an attached peer: reader task, handshake, staged stop."""
    client = AppServerClient(
        child,
        on_notification=on_notification,
        on_server_request=on_server_request,
        backpressure=backpressure,
        server_request_timeout=server_request_timeout,
        request_timeout=request_timeout,
        max_in_flight=max_in_flight,
        stdout_log=stdout_log,
        overload_retry=overload_retry,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read_loop, nursery)
            try:
                if initialize:
                    await client.initialize(name=client_name, version=client_version)
                yield client
            finally:
                with trio.CancelScope(shield=True) as cleanup:
                    cleanup.deadline = trio.current_time() + stop_grace + stop_term_grace + 5
                    await client.aclose(stop_grace, stop_term_grace)
                    # Let the reader drain what the child wrote before exiting.
                    with trio.move_on_after(1.0):
                        # The reader, not the exit: a reader already cancelled (an outer
                        # cancel) never sets _exited, and waiting for it cost a full second.
                        await client.reader_done.wait()
                nursery.cancel_scope.cancel(reason="app-server client closed")
    except BaseExceptionGroup as group:
        reraise_single(group)
