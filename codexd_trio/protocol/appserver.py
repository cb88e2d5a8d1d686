"""Trio client for ``codex app-server`` over a child's stdio.

Thin pumps around the sans-IO :class:`~codexd_trio.protocol.jsonrpc.Connection`: one reader task
turns stdout lines into events and routes them (responses to the waiting caller, notifications to
``on_notification`` in order, each server request to ``on_server_request`` in its own task);
writers share the child's send lock. Framing and correlation live in the connection.

Usage::

    async with open_app_server(spec, on_notification=handle) as client:
        thread = await client.thread_start(cwd="/work/ws")
        await client.turn_start(thread["thread"]["id"], [{"type": "text", "text": "hi"}])

**Cancellation / Resource handling:** leaving the block (normally, by an exception or by
cancellation) stops the child gracefully — close stdin, bounded wait, SIGTERM, SIGKILL the
process group — under a shielded scope with its own deadline. When the child exits on its own
the block does not raise: pending calls fail with :class:`ChildExited` and
:meth:`AppServerClient.wait_exited` returns, so a supervisor can restart it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import trio

from codexd_trio.base.limiters import drains_limiter
from codexd_trio.protocol.calls import CodexCalls
from codexd_trio.protocol.child import ChildGone, ChildProcess, ExitStatus, LineTooLong
from codexd_trio.protocol.childlog import CappedLog, open_append
from codexd_trio.protocol.errors import (
    AppServerError,
    ChildExited,
    OverloadRetry,
    RequestTimeout,
)
from codexd_trio.protocol.jsonrpc import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    SERVER_OVERLOADED,
    Connection,
    ErrorResponse,
    Malformed,
    Notification,
    ProtocolError,
    Response,
    ServerRequest,
)

if TYPE_CHECKING:
    from codexd_trio.protocol.transport import WebSocketPeer

# What the client talks to: a child it spawned, or an app-server it attached to.
Peer = Union["ChildProcess", "WebSocketPeer"]

__all__ = [
    "REPLIED",
    "AppServerClient",
    "AppServerError",
    "Backpressure",
    "ChildExited",
    "Notification",
    "NotificationHandler",
    "OverloadRetry",
    "Peer",
    "ProtocolError",
    "RequestTimeout",
    "ServerRequest",
    "ServerRequestHandler",
]

log = logging.getLogger(__name__)

NotificationHandler = Callable[[Notification], None]
# Returns the request's result, which the client then sends; or REPLIED when the handler sent
# its answer itself with AppServerClient.reply (to learn whether it reached the child).
ServerRequestHandler = Callable[[ServerRequest], Awaitable[Any]]


class _Replied:
    def __repr__(self) -> str:
        return "REPLIED"


# What a server-request handler returns once it has answered with AppServerClient.reply.
REPLIED: Any = _Replied()
# Awaited by the reader before each stdout line; returns when the host can take more.
Backpressure = Callable[[], Awaitable[None]]

# Code for the error reply when a server-request handler timed out (Codex declines on any error).
_HANDLER_TIMEOUT = -32000
# After stdout EOF the process normally exits within milliseconds; waiting a little gives the
# ChildExited raised to pending callers a real exit status. Bounded so callers never hang.
_EXIT_AFTER_EOF_GRACE = 1.0


class _Waiter:
    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.outcome: Response | ErrorResponse | ChildExited | None = None

    def resolve(self, outcome: Response | ErrorResponse | ChildExited) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.done.set()


class AppServerClient(CodexCalls):
    """A connected, initialized app-server. Obtain it from :func:`open_app_server`."""

    def __init__(
        self,
        child: Peer,
        *,
        on_notification: NotificationHandler,
        on_server_request: ServerRequestHandler | None,
        server_request_timeout: float,
        request_timeout: float,
        max_in_flight: int,
        stdout_log: Path | None,
        overload_retry: OverloadRetry,
        backpressure: Backpressure | None = None,
    ) -> None:
        self._child = child
        self._backpressure = backpressure
        self._conn = Connection()
        self._on_notification = on_notification
        self._on_server_request = on_server_request
        self._server_request_timeout = server_request_timeout
        self._request_timeout = request_timeout
        self._in_flight = trio.Semaphore(max_in_flight)
        self._stdout_log_path = stdout_log
        self._stdout_log: CappedLog | None = None
        self._overload_retry = overload_retry
        self._waiters: dict[int, _Waiter] = {}
        self._gone = False
        self._exited = trio.Event()
        # Set when the reader task ends, drained or cancelled (the close waits for it only).
        self.reader_done = trio.Event()
        # None when attached to an app-server codexd does not own (no process to signal).
        self.pid: int | None = child.pid
        self.pgid: int | None = child.pgid
        self.initialize_result: dict[str, Any] = {}

    @property
    def exit_status(self) -> ExitStatus | None:
        """How the child ended, once it has exited."""
        return self._child.exit_status

    async def reply(self, request: ServerRequest, result: Any) -> None:
        """Answer the server request ``request`` with ``result`` now.

        For a handler that must know whether its answer reached the child (an approval
        decision is only recorded once delivered); it then returns :data:`REPLIED`.

        Raises:
            ChildGone: the child is gone (its stdout ended) or the write failed: the answer was
                not delivered.

        **Cancellation:** a cancel mid-write leaves it unknown whether the child got the
        answer; treat it as not delivered.
        """
        if self._gone:
            raise ChildGone("the app-server is gone")
        await self._child.send(self._conn.send_result(request.id, result))

    # ------------------------------------------------------------------ requests

    # A per-request timeout is part of the protocol contract (the server drops replies when
    # overloaded), not a replacement for cancel scopes at the call site.
    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        """Send a request and return its ``result``.

        At most ``max_in_flight`` requests are outstanding at once (further callers wait for a
        slot). A -32001 "overloaded" answer is retried with exponential backoff; the timeout
        covers the whole call, waiting for a slot and retries included.

        Raises:
            AppServerError: the server answered with an error (also after the overload retries
                are used up, with code -32001).
            RequestTimeout: no answer within ``timeout`` (default: the client's
                ``request_timeout``).
            ChildExited: the child exited before or while the request was outstanding.
            ProtocolError: ``params`` cannot be encoded.

        **Cancellation:** safe; an answer arriving after a cancel is logged and dropped.
        """
        limit = self._request_timeout if timeout is None else timeout
        with trio.move_on_after(limit) as scope:
            return await self._request_with_retry(method, params)
        assert scope.cancelled_caught
        raise RequestTimeout(method, limit)

    async def _request_with_retry(self, method: str, params: dict[str, Any] | None) -> Any:
        delays = self._overload_retry.delays()
        while True:
            try:
                return await self._request_once(method, params)
            except AppServerError as exc:
                if exc.code != SERVER_OVERLOADED or not delays:
                    raise
                delay = delays.pop(0)
                log.debug("%s overloaded; retrying in %.2f s", method, delay)
            await trio.sleep(delay)

    async def _request_once(self, method: str, params: dict[str, Any] | None) -> Any:
        async with self._in_flight:
            if self._gone:
                raise ChildExited(self.exit_status, method)
            request_id, line = self._conn.send_request(method, params)
            waiter = _Waiter()
            self._waiters[request_id] = waiter
            try:
                try:
                    await self._child.send(line)
                except ChildGone as exc:
                    raise ChildExited(self.exit_status, method) from exc
                await waiter.done.wait()
            finally:
                if self._waiters.pop(request_id, None) is not None:
                    self._conn.abandon(request_id)
        outcome = waiter.outcome
        if isinstance(outcome, Response):
            return outcome.result
        if isinstance(outcome, ErrorResponse):
            raise AppServerError(method, outcome.code, outcome.message, outcome.data)
        assert isinstance(outcome, ChildExited)
        raise ChildExited(outcome.status, method)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification (no answer).

        Raises:
            ChildExited: the child's stdin is closed.
        """
        try:
            await self._child.send(self._conn.send_notification(method, params))
        except ChildGone as exc:
            raise ChildExited(self.exit_status, method) from exc

    @property
    def process_group(self) -> int:
        """The spawned child's process group (it leads it).

        Raises:
            RuntimeError: attached to an external app-server: there is no group of ours.
        """
        if self.pgid is None:
            raise RuntimeError("attached to an external app-server: no process group")
        return self.pgid

    # ------------------------------------------------------------------ lifetime

    async def wait_exited(self) -> ExitStatus:
        """Wait until the child has exited and its stdout has been drained.

        **Cancellation:** safe.
        """
        await self._exited.wait()
        status = self._child.exit_status
        assert status is not None
        return status

    async def aclose(self, grace: float = 2.0, term_grace: float = 2.0) -> None:
        """Stop the child gracefully (close stdin, wait, SIGTERM, SIGKILL the group).

        **Cancellation:** a cancel may interrupt the waits; :func:`open_app_server` runs this
        shielded with a deadline.
        """
        self._gone = True
        await self._child.stop(grace, term_grace)

    # ------------------------------------------------------------------ reader

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        """Route every stdout line until EOF, then fail pending calls and record the exit."""
        try:
            while True:
                if self._backpressure is not None:
                    # While the host cannot take more (its event log cannot write), stop
                    # reading: the pipe fills and Codex waits, instead of codexd buffering
                    # without limit.
                    await self._backpressure()
                try:
                    line = await self._child.receive_line()
                except LineTooLong as exc:
                    log.warning("app-server stdout: %s", exc)
                    await self._log_stdout(f"[codexd: {exc}]\n".encode())
                    continue
                if line is None:
                    break
                await self._dispatch(self._conn.receive_line(line), nursery)
            self._gone = True
            with trio.move_on_after(_EXIT_AFTER_EOF_GRACE):
                await self._child.wait()
            self._fail_pending()
            if self._child.exit_status is None:
                # stdout is closed but the process lives on: it can never answer again. Left
                # alone it would keep this incarnation (and /readyz) "running" forever.
                log.warning("app-server closed stdout but did not exit; killing its group")
                self._child.kill_group()
            await self._child.wait()
        finally:
            self._gone = True
            self._fail_pending()
            self.reader_done.set()
            if self._child.exit_status is not None:
                self._exited.set()
            if self._stdout_log is not None:
                # Unbuffered: closing does not write, so it cannot block the event loop.
                self._stdout_log.close()
                self._stdout_log = None

    def _fail_pending(self) -> None:
        self._conn.abandon_all()
        failure = ChildExited(self._child.exit_status)
        for waiter in self._waiters.values():
            waiter.resolve(failure)

    async def _dispatch(
        self,
        incoming: Response | ErrorResponse | Notification | ServerRequest | Malformed,
        nursery: trio.Nursery,
    ) -> None:
        if isinstance(incoming, Notification):
            try:
                self._on_notification(incoming)
            except Exception:
                # A buggy handler must not take the connection down with it.
                log.exception("notification handler failed on %s", incoming.method)
        elif isinstance(incoming, Response | ErrorResponse):
            # The connection only classifies answers to our own (integer) ids as responses.
            waiter = self._waiters.get(incoming.id) if isinstance(incoming.id, int) else None
            if waiter is not None:
                waiter.resolve(incoming)
        elif isinstance(incoming, ServerRequest):
            nursery.start_soon(self._answer_server_request, incoming)
        else:
            log.warning("ignoring app-server stdout line: %s", incoming.reason)
            await self._log_stdout(incoming.line + b"\n")

    async def _answer_server_request(self, request: ServerRequest) -> None:
        """Answer one server request; every path sends exactly one reply."""
        handler = self._on_server_request
        if handler is None:
            reply = self._conn.send_error(
                request.id, METHOD_NOT_FOUND, f"no handler for {request.method}"
            )
        else:
            try:
                with trio.fail_after(self._server_request_timeout):
                    result = await handler(request)
                if result is REPLIED:
                    return
                reply = self._conn.send_result(request.id, result)
            except trio.TooSlowError:
                reply = self._conn.send_error(
                    request.id,
                    _HANDLER_TIMEOUT,
                    f"no decision for {request.method} within {self._server_request_timeout:g} s",
                )
            except Exception as exc:
                log.warning("server request handler failed on %s: %r", request.method, exc)
                reply = self._conn.send_error(
                    request.id, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
                )
        try:
            await self._child.send(reply)
        except ChildGone:
            log.info("child gone before the reply to %s could be sent", request.method)

    async def _log_stdout(self, data: bytes) -> None:
        if self._stdout_log_path is None:
            return
        try:
            # The drains' own threads: a saturated default limiter (replays) must not hold the
            # reader, or Codex blocks on a full stdout pipe.
            if self._stdout_log is None:
                self._stdout_log = await trio.to_thread.run_sync(
                    open_append, self._stdout_log_path, limiter=drains_limiter())
            await trio.to_thread.run_sync(self._stdout_log.write, data, limiter=drains_limiter())
        except OSError as exc:
            log.warning("cannot write stdout log %s: %s", self._stdout_log_path, exc)
