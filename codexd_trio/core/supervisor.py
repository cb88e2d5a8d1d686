"""The child supervisor and its incarnations (DESIGN.md, "The child incarnation…").

::

    ChildSupervisor.run                 spawn, restart with backoff, give up to ``failed`` (and
    │                                   keep trying), never let a spawn error end codexd
    └── Incarnation #n                  one child process, and everything that dies with it:
        ├── JSON-RPC client             (reader, stderr drain: inside ``open_app_server``)
        ├── loaded threads, approval request keys
        └── work nursery                every state-changing operation runs here, not in the
                                        HTTP handler's task: a disconnect abandons only the wait

An operation submitted with :meth:`Incarnation.run` pins one incarnation for its whole life, so
it can never mix two child processes; when the child goes away its pending requests fail with
``ChildExited`` and the incarnation ends only once every operation has settled.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import msgspec
import trio

from codexd_trio import __version__
from codexd_trio.base.codexbin import (
    CodexBinaryNotFound,
    bundled_resource_dir,
    check_reported_version,
    resolve_server_command,
    version_from_user_agent,
)
from codexd_trio.base.contracts import ChildStatus, CodexVersionStatus, now_iso
from codexd_trio.base.errors import ChildUnavailable
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.domain import Emit
from codexd_trio.protocol.appserver import (
    AppServerClient,
    AppServerError,
    ChildExited,
    Notification,
    RequestTimeout,
    ServerRequest,
)
from codexd_trio.protocol.child import ChildSpawnError, ChildSpec, ExitStatus
from codexd_trio.protocol.spawn import attach_app_server, open_app_server

log = logging.getLogger("codexd")
T = TypeVar("T")

# A child that stays up this long counts as healthy again (restart backoff resets).
HEALTHY_AFTER_S = 60.0
# This many failed starts in a row -> the child status is ``failed`` (readyz 503).
FAILED_AFTER = 5
# What one failed incarnation can raise; anything else is a bug and ends codexd loudly.
CHILD_FAILURES = (
    ChildSpawnError,
    CodexBinaryNotFound,
    OSError,
    ChildExited,
    AppServerError,
    RequestTimeout,
)


@dataclass
class Backoff:
    """Restart delay: the first failure restarts at once (as systemd and supervisord do), then
    ``initial`` doubling per consecutive failure up to ``maximum``, with jitter."""

    initial: float = 0.5
    maximum: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        if self.failures == 1:
            return 0.0
        nominal = self.initial * 2 ** (self.failures - 2)
        # Jitter first, then the cap: the maximum is a promise, not a suggestion.
        return min(self.maximum, float(nominal) * random.uniform(0.8, 1.2))

    def reset(self) -> None:
        self.failures = 0


def child_spec(config: CodexdConfig) -> ChildSpec:
    """How to start the configured app-server (the native binary, never the npm launcher)."""
    binary = resolve_server_command(config.server_command)
    env = dict(os.environ)
    env.update(config.extra_env)
    env.setdefault("NO_COLOR", "1")
    resources = bundled_resource_dir(binary)
    if resources is not None:
        # The bundled bwrap on PATH silences "could not find bubblewrap" at every start.
        env["PATH"] = f"{resources}{os.pathsep}{env.get('PATH', '')}"
    return ChildSpec(
        argv=[str(binary), *config.server_args],
        cwd=config.server_cwd,
        env=env,
        stderr_log=config.codexd_logs / "stderr.log",
    )


class Host(Protocol):
    """What the supervisor needs from the daemon that hosts it."""

    def child_spec(self) -> ChildSpec: ...

    def child_changed(self, child: ChildStatus) -> None: ...

    def publish(self, emit: Emit) -> object: ...

    def on_notification(self, incarnation: Incarnation, note: Notification) -> None: ...

    async def on_server_request(self, incarnation: Incarnation, req: ServerRequest) -> Any: ...

    async def room(self) -> None:
        """Return once the host can take more events from the child (see EventLog.room)."""

    def child_gone(self, status: ExitStatus | None, error: str | None) -> None: ...


@dataclass(eq=False)
class Incarnation:
    """One child process and the state that belongs to it alone."""

    number: int
    client: AppServerClient
    work: trio.Nursery
    loaded_threads: set[str] = field(default_factory=set)
    # JSON-RPC request id -> approval id, for the approvals this child asked for.
    approval_requests: dict[int | str, str] = field(default_factory=dict)
    closing: bool = False

    async def run(self, op: Callable[[Incarnation], Awaitable[T]]) -> T:
        """Run ``op(self)`` in this incarnation's work nursery and wait for its outcome.

        Raises:
            ChildUnavailable: the child went away (or codexd stopped it) before ``op`` settled.
            Whatever ``op`` raises.

        **Cancellation:** cancelling the caller abandons the wait only; ``op`` runs to its end
        under its own RPC timeouts and records its outcome.
        """
        if self.closing:
            raise ChildUnavailable("the codex app-server is going away", incarnation=self.number)
        try:
            return await run_detached(self.work, partial(op, self))
        except OperationCancelled:
            raise ChildUnavailable(
                "the codex app-server stopped during the request", incarnation=self.number
            ) from None


class OperationCancelled(Exception):
    """The nursery running a detached operation was cancelled before it settled."""


async def run_detached(nursery: trio.Nursery, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` as a task of ``nursery`` and wait for its outcome.

    ``fn``'s exceptions are delivered to the waiter and never reach ``nursery``.

    Raises:
        OperationCancelled: ``nursery`` was cancelled before ``fn`` finished.

    **Cancellation:** cancelling the caller abandons the wait only; ``fn`` runs on.
    """
    done = trio.Event()
    result: list[T] = []
    failure: list[Exception] = []

    async def runner() -> None:
        try:
            result.append(await fn())
        except Exception as exc:  # delivered to the waiter, never crashes the nursery
            failure.append(exc)
        finally:
            done.set()

    nursery.start_soon(runner)
    await done.wait()
    if failure:
        raise failure[0]
    if not result:
        raise OperationCancelled("the operation was cancelled before it finished")
    return result[0]


class ChildSupervisor:
    """Keeps one child running: spawn, restart with backoff, stop on cancel.

    **Cancellation:** cancelling :meth:`run` stops the current incarnation: its operations are
    cancelled, then the child's process group is stopped (``open_app_server``'s staged stop).
    """

    def __init__(self, host: Host, *, backoff: Backoff, request_timeout: float,
                 server_request_timeout: float, stdout_log: Any,
                 external: str | None = None) -> None:
        self.host = host
        # An endpoint to attach to (strategy external) instead of a child to spawn.
        self.external = external
        self.backoff = backoff
        self.request_timeout = request_timeout
        self.server_request_timeout = server_request_timeout
        self.stdout_log = stdout_log
        self.current: Incarnation | None = None
        # The contract's spelling of a spawned child's endpoint: its stdio.
        self.child = ChildStatus(
            strategy="external" if external else "spawn", endpoint=external or "stdio://"
        )
        self.count = 0

    def _set(self, **changes: Any) -> None:
        self.child = msgspec.structs.replace(self.child, **changes)
        self.host.child_changed(self.child)

    def require(self) -> Incarnation:
        """The running incarnation, or :class:`ChildUnavailable`."""
        incarnation = self.current
        if incarnation is None or incarnation.closing:
            raise ChildUnavailable(
                f"the codex app-server is {self.child.status}",
                child=msgspec.to_builtins(self.child),
            )
        return incarnation

    def stopped(self) -> None:
        """Record that codexd stopped the child on purpose (graceful stop)."""
        self._set(status="stopped", pid=None, exitedAt=now_iso())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise forever; ``started()`` after the first attempt, successful or not."""
        reported = False
        while True:
            started = trio.current_time()
            status: ExitStatus | None = None
            error: str | None = None

            def ready() -> None:
                nonlocal reported
                if not reported:
                    reported = True
                    task_status.started()

            try:
                status = await self._incarnate(ready)
            except CHILD_FAILURES as exc:
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, ChildExited):
                    status = exc.status
                log.warning("codex app-server failed: %s", error)
            ready()
            self._set(
                status="restarting",
                pid=None,
                exitedAt=now_iso(),
                exitCode=status.code if status else None,
                exitSignal=status.signal if status else None,
            )
            self.host.child_gone(status, error)
            if trio.current_time() - started >= HEALTHY_AFTER_S:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            failed = self.backoff.failures >= FAILED_AFTER
            self._set(
                status="failed" if failed else "restarting",
                restarts=self.child.restarts + 1,
                lastError=error or (status.describe() if status else None),
            )
            self.host.publish(
                Emit(
                    "child.restarting",
                    f"restarting codex app-server in {delay:.1f} s",
                    level="error" if failed else "warn",
                    detail={"delayS": round(delay, 3), "failures": self.backoff.failures},
                )
            )
            await trio.sleep(delay)

    async def _incarnate(self, ready: Callable[[], None]) -> ExitStatus:
        if self.external is not None:
            self._set(
                status="starting" if self.child.status != "failed" else "failed",
                exitCode=None,
                exitSignal=None,
            )
            self.host.publish(
                Emit("child.starting", f"attaching to the app-server at {self.external}",
                     detail={"endpoint": self.external})
            )
        else:
            spec = self.host.child_spec()
            self._set(
                status="starting" if self.child.status != "failed" else "failed",
                command=spec.argv[0],
                args=list(spec.argv[1:]),
                exitCode=None,
                exitSignal=None,
            )
            self.host.publish(
                Emit("child.starting", "starting codex app-server",
                     detail={"argv": list(spec.argv)})
            )
        self.count += 1
        number = self.count
        holder: list[Incarnation] = []

        def on_notification(note: Notification) -> None:
            if holder:
                self.host.on_notification(holder[0], note)

        async def on_server_request(req: ServerRequest) -> Any:
            if not holder:
                raise ChildUnavailable("server request before the handshake finished")
            return await self.host.on_server_request(holder[0], req)

        options: dict[str, Any] = {
            "on_notification": on_notification,
            "on_server_request": on_server_request,
            "backpressure": self.host.room,
            "server_request_timeout": self.server_request_timeout,
            "request_timeout": self.request_timeout,
            "stdout_log": self.stdout_log,
            "client_name": "codexd",
            "client_version": __version__,
        }
        connect = (
            attach_app_server(self.external, **options) if self.external is not None
            else open_app_server(spec, **options)
        )
        async with connect as client, trio.open_nursery() as work:
            incarnation = Incarnation(number=number, client=client, work=work)
            holder.append(incarnation)
            self.current = incarnation
            try:
                user_agent = client.initialize_result.get("userAgent")
                # From the handshake, not `codex --version`: works for an attached server too.
                check = check_reported_version(
                    version_from_user_agent(user_agent),
                    binary=None if self.external is not None else spec.argv[0],
                )
                self._set(
                    status="running",
                    pid=client.pid,
                    startedAt=now_iso(),
                    initializedAt=now_iso(),
                    userAgent=user_agent if isinstance(user_agent, str) else None,
                    lastError=None,
                    codexVersion=msgspec.convert(check.to_dict(), CodexVersionStatus),
                )
                if not check.supported:
                    self.host.publish(
                        Emit("codex.version.unsupported", check.message(), level="warn",
                             detail=check.to_dict())
                    )
                self.host.publish(
                    Emit(
                        "child.started",
                        f"codex app-server running ({_where(client.pid, self.external)})",
                        detail={"pid": client.pid, "endpoint": self.external,
                                "incarnation": number},
                    )
                )
                self.host.publish(
                    Emit(
                        "app-server.initialized",
                        "app-server initialized",
                        detail=dict(client.initialize_result),
                    )
                )
                ready()
                status = await client.wait_exited()
            finally:
                # No new work for a dying child; what runs settles against ChildExited.
                incarnation.closing = True
                self.current = None
        return status


def _where(pid: int | None, endpoint: str | None) -> str:
    return f"pid {pid}" if pid is not None else f"attached at {endpoint}"
