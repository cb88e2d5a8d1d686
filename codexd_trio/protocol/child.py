"""Child process supervision: spawn in a new session, pump stdio, stop the whole process group.

:func:`open_child` is the only way to get a :class:`ChildProcess`; leaving its block — normally,
by an exception or by cancellation — stops the child (close stdin, SIGTERM, SIGKILL the group)
under a shielded scope with its own deadline, so no process of the group survives. This module
knows nothing about JSON-RPC or sessions.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import trio

from codexd_trio.base.contracts import DEFAULT_MAX_LINE
from codexd_trio.protocol.childlog import drain_stderr

__all__ = [
    "DEFAULT_MAX_LINE",
    "MIN_MAX_LINE",
    "ChildGone",
    "ChildProcess",
    "ChildSpawnError",
    "ChildSpec",
    "ExitStatus",
    "LineTooLong",
    "open_child",
]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Thread objects and aggregated diffs can be large (codex-app-server.md §11); a limit below
# this would turn ordinary large messages into lost ones.
MIN_MAX_LINE = 16 * MIB
_READ_CHUNK = 256 * 1024
# Headroom on top of grace + term_grace for the shielded stop on exit: the SIGKILL wait and
# the stderr drain finishing.
_STOP_MARGIN = 5.0
_STDERR_DRAIN_GRACE = 1.0


class ChildSpawnError(Exception):
    """The child could not be started (binary missing, not executable, bad cwd)."""


class ChildGone(Exception):
    """The child's stdin is closed or broken: it exited or is being stopped."""


class LineTooLong(Exception):
    """A stdout line exceeded ``max_line`` and was skipped (up to and including its newline).

    Not fatal: the next :meth:`ChildProcess.receive_line` returns the following line.
    """

    def __init__(self, length: int, max_line: int) -> None:
        super().__init__(f"skipped a stdout line of {length} bytes (limit {max_line})")
        self.length = length
        self.max_line = max_line


@dataclass(frozen=True)
class ChildSpec:
    """What to run. ``env`` replaces the environment entirely when given."""

    argv: Sequence[str]
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    stderr_log: Path | None = None


@dataclass(frozen=True)
class ExitStatus:
    """How the child ended: an exit ``code`` or the ``signal`` that killed it."""

    code: int | None
    signal: int | None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """Build from a :attr:`subprocess.Popen.returncode` (negative = killed by a signal)."""
        if returncode < 0:
            return cls(code=None, signal=-returncode)
        return cls(code=returncode, signal=None)

    def describe(self) -> str:
        """Human wording: ``"exit code 0"``, ``"killed by SIGKILL"``, or ``"connection closed"``
        (an external app-server: no code, no signal)."""
        if self.code is None and self.signal is None:
            return "connection closed"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exit code {self.code}"


class ChildProcess:
    """A running child in its own session (so its process group id equals its pid).

    Obtain one from :func:`open_child`. ``send`` and ``receive_line`` may be used by different
    tasks at the same time; several tasks may ``send`` concurrently (a lock keeps whole lines
    together) but only one task may call ``receive_line``.
    """

    def __init__(self, process: trio.Process, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self._process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self.pid: int = process.pid
        # start_new_session=True makes the child a session and group leader before exec.
        self.pgid: int = process.pid
        self.max_line = max(max_line, MIN_MAX_LINE)
        self._send_lock = trio.Lock()
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already known to contain no newline
        self._eof = False
        # Set by wait() once the leader has exited and is about to be reaped; from then on the
        # group is never signalled. Only wait() reaps the leader.
        self._reaping = False
        self._exit_status: ExitStatus | None = None
        self._wait_lock = trio.Lock()
        self._stdin_closed = False

    @property
    def exit_status(self) -> ExitStatus | None:
        """The exit status once :meth:`wait` has seen the child exit (and reaped it), else None.

        It does not poll: polling would reap the child behind :meth:`wait`'s back (see there).
        """
        return self._exit_status

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the child's stdin as one unit (no interleaving with other sends).

        Raises:
            ChildGone: stdin is closed (by :meth:`stop`) or the pipe is broken.

        **Cancellation:** a cancel mid-write may leave a partial line in the pipe; the caller
        should treat the child as unusable afterwards (the app-server client only cancels
        sends when it is shutting down anyway).
        """
        async with self._send_lock:
            if self._stdin_closed:
                raise ChildGone("stdin is closed")
            try:
                await self._stdin.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChildGone(f"cannot write to the child: {exc!r}") from exc

    async def receive_line(self) -> bytes | None:
        """Read the next stdout line, without its ``\\n``; None at EOF.

        A line longer than ``max_line`` is not returned: it is discarded up to and including
        its newline and :class:`LineTooLong` is raised once it has been skipped, so the next
        call continues with the following line. We chose to skip rather than fail because one
        oversized message (a huge diff) must not take down the connection to a healthy child;
        buffering stays bounded by ``max_line`` plus one read chunk.

        **Cancellation:** safe; bytes already read stay buffered for the next call.
        """
        skipped = 0
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                self._scanned = 0
                if skipped:
                    raise LineTooLong(skipped + len(line), self.max_line)
                return line
            if len(self._buffer) > self.max_line:
                # Keep only what is needed to notice the newline; count what we drop.
                skipped += len(self._buffer)
                self._buffer.clear()
            self._scanned = len(self._buffer)
            if self._eof:
                if skipped:
                    raise LineTooLong(skipped, self.max_line)
                if self._buffer:
                    # A final line without newline still counts as a line.
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    self._scanned = 0
                    return line
                return None
            try:
                chunk = await self._stdout.receive_some(_READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                self._eof = True
            else:
                self._buffer += chunk

    async def wait(self) -> ExitStatus:
        """Wait for the child (the group leader) to exit and return how it ended.

        Once the leader has exited, whatever is left of its group (a shell command Codex
        started, say) is SIGKILLed *before* the leader is reaped: until then its zombie keeps
        the group id from being reused, so the signal can only reach our group. After the reap
        the group is never signalled again (:meth:`kill_group` becomes a no-op): an empty
        group's id is free, and a stranger's new group could have it. This is the only place
        the child is reaped.

        **Cancellation:** safe; the child keeps running.
        """
        async with self._wait_lock:
            if self._exit_status is None:
                if not self._reaping:
                    await _until_exited(self.pid)
                    # Exited, not reaped: the group id is still ours.
                    self._signal_group(signal.SIGKILL)
                    # From here on hands off the group: Trio's wait() reaps, then checkpoints.
                    self._reaping = True
                returncode = await self._process.wait()
                self._exit_status = ExitStatus.from_returncode(returncode)
            else:
                await trio.lowlevel.checkpoint()
        return self._exit_status

    async def close_stdin(self) -> None:
        """Close the child's stdin: the app-server's signal to exit gracefully. Idempotent."""
        self._stdin_closed = True
        # Not under the send lock: a writer blocked on a full pipe must not delay the stop;
        # trio makes that writer fail with ClosedResourceError, which send() maps to ChildGone.
        await self._stdin.aclose()

    async def stop(self, grace: float = 2.0, term_grace: float = 2.0) -> ExitStatus:
        """Stop the child and everything in its process group.

        Closes stdin, waits up to ``grace`` seconds, then SIGTERMs the group, waits up to
        ``term_grace``, then SIGKILLs the group. Once the leader has exited the group is
        SIGKILLed as well, so grandchildren that outlived it (an interrupted shell command)
        die too. Safe to call repeatedly and after the child already exited.

        **Cancellation:** a cancel during the waits leaves the child running; run it shielded
        with a deadline (as :func:`open_child` does) when it must complete.
        """
        await self.close_stdin()
        status = await self._wait_for(grace)
        if status is None:
            self._signal_group(signal.SIGTERM)
            status = await self._wait_for(term_grace)
        if status is None:
            self._signal_group(signal.SIGKILL)
            status = await self.wait()
        # wait() killed what was left of the group (orphans of ours) before it reaped the leader.
        return status

    def kill_group(self) -> None:
        """SIGKILL every process of the child's group at once.

        A no-op once the leader has been reaped (:meth:`wait` kills the rest of the group just
        before it reaps): the group's id may then belong to someone else.
        """
        self._signal_group(signal.SIGKILL)

    async def _wait_for(self, seconds: float) -> ExitStatus | None:
        with trio.move_on_after(seconds):
            return await self.wait()
        return None

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._reaping:
            return  # (being) reaped: the id may be handed out again (see wait())
        with suppress(ProcessLookupError):
            os.killpg(self.pgid, signum)

    async def _aclose_pipes(self) -> None:
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                await stream.aclose()


async def _until_exited(pid: int) -> None:
    """Return once our child ``pid`` has exited, *without* reaping it (its zombie keeps its
    pid, and so its process group's id, from being reused until :meth:`ChildProcess.wait`
    reaps it).

    Linux: a pidfd turns readable at exit. macOS and the BSDs: kqueue's ``NOTE_EXIT``, as
    Trio itself waits there. Elsewhere: ``waitid(WNOWAIT)`` in a thread.

    **Cancellation:** safe; nothing is consumed.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            pidfd: int = pidfd_open(pid)
        except OSError:
            pass  # no pidfd support (kernel < 5.3, a seccomp filter): the portable way below
        else:
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
            return
    if sys.platform == "darwin" or sys.platform.startswith("freebsd"):
        await _until_exited_kqueue(pid)
        return
    # The thread only waits (nothing is reaped): abandoning it on cancel costs a thread until
    # the child exits, which the caller is about to make happen anyway.
    await trio.to_thread.run_sync(
        os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT, abandon_on_cancel=True
    )


if sys.platform == "darwin" or sys.platform.startswith("freebsd"):

    async def _until_exited_kqueue(pid: int) -> None:
        kqueue = trio.lowlevel.current_kqueue()
        note_exit = getattr(select, "KQ_NOTE_EXIT", 0x80000000)

        def event(flags: int) -> select.kevent:
            return select.kevent(pid, filter=select.KQ_FILTER_PROC, flags=flags,
                                 fflags=note_exit)

        try:
            kqueue.control([event(select.KQ_EV_ADD | select.KQ_EV_ONESHOT)], 0)
        except ProcessLookupError:
            return  # it has exited already (a zombie cannot be watched)

        def abort(_: object) -> trio.lowlevel.Abort:
            kqueue.control([event(select.KQ_EV_DELETE)], 0)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_kevent(pid, select.KQ_FILTER_PROC, abort)


def reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the only exception of ``group`` as itself, else the group unchanged.

    Context managers that yield inside a nursery would otherwise hand the caller an
    ExceptionGroup for an ordinary exception raised in the ``with`` body. Background tasks of
    this package never raise (they log), so a group normally holds just the body's exception.
    """
    if len(group.exceptions) == 1:
        only = group.exceptions[0]
        context = only.__context__
        try:
            raise only
        finally:
            # Keep the original context instead of "during handling of <the group>".
            only.__context__ = context
            del only, context
    raise group


@asynccontextmanager
async def open_child(
    spec: ChildSpec,
    *,
    max_line: int = DEFAULT_MAX_LINE,
    grace: float = 2.0,
    term_grace: float = 2.0,
) -> AsyncIterator[ChildProcess]:
    """Spawn ``spec.argv`` in a new session with piped stdio and yield the running child.

    A background task drains stderr into ``spec.stderr_log`` (appended) or discards it.

    Raises:
        ChildSpawnError: the process could not be started.

    **Cancellation:** leaving the block by cancellation stops the child like a normal exit.

    **Resource handling:** on exit of the block, :meth:`ChildProcess.stop` runs shielded with
    its own deadline (``grace + term_grace`` plus a margin), the process group is SIGKILLed if
    that deadline is missed, and all pipes are closed. Nothing of the group survives.
    """
    try:
        process = await trio.lowlevel.open_process(
            list(spec.argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=spec.cwd,
            env=dict(spec.env) if spec.env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        raise ChildSpawnError(f"cannot start {spec.argv[0]!r}: {exc}") from exc
    child = ChildProcess(process, max_line=max_line)
    assert process.stderr is not None
    stderr_done = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr, process.stderr, spec.stderr_log, stderr_done)
            try:
                yield child
            finally:
                with trio.CancelScope(shield=True) as cleanup:
                    cleanup.deadline = trio.current_time() + grace + term_grace + _STOP_MARGIN
                    try:
                        await child.stop(grace, term_grace)
                    finally:
                        child.kill_group()
                    # A process outside our group could still hold stderr open: bound the wait.
                    with trio.move_on_after(_STDERR_DRAIN_GRACE):
                        await stderr_done.wait()
                nursery.cancel_scope.cancel(reason="child stopped")
    except BaseExceptionGroup as group:
        reraise_single(group)
    finally:
        with trio.CancelScope(shield=True) as cleanup:
            cleanup.deadline = trio.current_time() + _STOP_MARGIN
            child.kill_group()
            if child.exit_status is None:
                # Only reachable if the shielded stop above missed its deadline.
                await child.wait()
            await child._aclose_pipes()
