"""Child supervision against small Python children (``sys.executable -c ...``)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from codexd_trio.base.limiters import reads_limiter
from codexd_trio.protocol.child import (
    MIN_MAX_LINE,
    ChildGone,
    ChildProcess,
    ChildSpawnError,
    ChildSpec,
    ExitStatus,
    LineTooLong,
    open_child,
)
from codexd_trio.protocol.childlog import CappedLog
from codexd_trio.testing.daemon import assert_group_gone, group_alive
from tests.test_store import all_tokens_held

MIB = 1024 * 1024


def py(code: str, stderr_log: Path | None = None) -> ChildSpec:
    return ChildSpec(argv=[sys.executable, "-c", textwrap.dedent(code)], stderr_log=stderr_log)


async def read_line(child: ChildProcess) -> bytes:
    line = await child.receive_line()
    assert line is not None, "unexpected EOF from the child"
    return line


async def wait_process_gone(pid: int) -> None:
    """Wait for a process that is not our child to exit (pidfd becomes readable)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def test_large_line_is_read_intact() -> None:
    code = """
        import sys
        block = bytes(range(256)) * (20 * 1024 * 4)  # 20 MiB without newlines
        block = block.replace(b"\\n", b"N")
        sys.stdout.buffer.write(block + b"\\n" + b"after\\n")
        sys.stdout.buffer.flush()
    """
    expected = (bytes(range(256)) * (20 * 1024 * 4)).replace(b"\n", b"N")
    with trio.fail_after(60):
        async with open_child(py(code)) as child:
            line = await read_line(child)
            assert len(line) == 20 * MIB
            assert line == expected
            assert await read_line(child) == b"after"
            assert await child.receive_line() is None


async def test_line_over_the_limit_is_skipped_and_reading_continues() -> None:
    code = f"""
        import sys
        out = sys.stdout.buffer
        out.write(b"first\\n")
        out.write(b"y" * ({MIN_MAX_LINE} + 3 * 1024 * 1024) + b"\\n")
        out.write(b"second\\n")
        out.flush()
    """
    with trio.fail_after(60):
        async with open_child(py(code), max_line=MIN_MAX_LINE) as child:
            assert child.max_line == MIN_MAX_LINE
            assert await read_line(child) == b"first"
            with pytest.raises(LineTooLong) as info:
                await child.receive_line()
            assert info.value.length == MIN_MAX_LINE + 3 * MIB
            assert await read_line(child) == b"second"
            assert await child.receive_line() is None


async def test_max_line_has_a_floor() -> None:
    async with open_child(py("pass"), max_line=10) as child:
        assert child.max_line == MIN_MAX_LINE


async def test_final_line_without_newline_is_returned() -> None:
    code = "import sys; sys.stdout.write('a\\nno newline'); sys.stdout.flush()"
    async with open_child(py(code)) as child:
        assert await read_line(child) == b"a"
        assert await read_line(child) == b"no newline"
        assert await child.receive_line() is None


async def test_stderr_is_drained_to_the_log_while_stdout_is_busy(tmp_path: Path) -> None:
    # 8 MiB of stderr is far beyond a pipe buffer: without a drain the child would block
    # before ever writing the stdout line we wait for.
    log = tmp_path / "logs" / "stderr.log"
    log.parent.mkdir()
    log.write_bytes(b"previous run\n")
    code = """
        import sys
        chunk = b"e" * 1023 + b"\\n"
        for _ in range(8 * 1024):
            sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
        print("stdout after stderr flood", flush=True)
        sys.stdin.read()
    """
    with trio.fail_after(60):
        async with open_child(py(code, stderr_log=log)) as child:
            assert await read_line(child) == b"stdout after stderr flood"
    data = log.read_bytes()
    assert data.startswith(b"previous run\n"), "the log is appended to, not truncated"
    assert len(data) == len(b"previous run\n") + 8 * MIB


async def test_stderr_drain_runs_while_the_default_and_read_threads_are_all_busy(
    tmp_path: Path,
) -> None:
    # The pipe is read by Trio's I/O loop; the log file's writes need threads. With Trio's
    # default limiter taken (as by a wave of replays) a drain on it would stall, the child would
    # block on a full stderr pipe and never write its stdout line. (Spawning needs a default
    # thread too, inside trio.lowlevel.open_process, so the threads are taken after the spawn.)
    log = tmp_path / "logs" / "stderr.log"
    code = """
        import sys
        print("ready", flush=True)
        sys.stdin.readline()
        chunk = b"e" * 1023 + b"\\n"
        for _ in range(1024):
            sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
        print("stdout after stderr flood", flush=True)
        sys.stdin.read()
    """
    with trio.fail_after(60):
        async with open_child(py(code, stderr_log=log)) as child:
            assert await read_line(child) == b"ready"
            async with all_tokens_held(
                trio.to_thread.current_default_thread_limiter(), reads_limiter()
            ):
                await child.send(b"go\n")
                assert await read_line(child) == b"stdout after stderr flood"
    assert log.read_bytes() == (b"e" * 1023 + b"\n") * 1024


async def test_graceful_stop_by_closing_stdin() -> None:
    code = """
        import sys
        print("ready", flush=True)
        sys.stdin.read()
        print("saw EOF", flush=True)
        sys.exit(3)
    """
    with trio.fail_after(30):
        async with open_child(py(code)) as child:
            assert await read_line(child) == b"ready"
            status = await child.stop(grace=20)
            assert status == ExitStatus(code=3, signal=None)
            assert status.describe() == "exit code 3"
            assert child.exit_status == status
            assert await read_line(child) == b"saw EOF"
            with pytest.raises(ChildGone):
                await child.send(b"too late\n")


async def test_sigterm_when_stdin_eof_is_ignored() -> None:
    code = """
        import time
        print("ready", flush=True)
        while True:
            time.sleep(60)
    """
    with trio.fail_after(30):
        async with open_child(py(code)) as child:
            assert await read_line(child) == b"ready"
            status = await child.stop(grace=0.2, term_grace=20)
            assert status == ExitStatus(code=None, signal=signal.SIGTERM)
            assert status.describe() == "killed by SIGTERM"


async def test_sigkill_when_stdin_eof_and_sigterm_are_ignored() -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        while True:
            time.sleep(60)
    """
    with trio.fail_after(30):
        async with open_child(py(code)) as child:
            assert await read_line(child) == b"ready"
            status = await child.stop(grace=0.2, term_grace=0.2)
            assert status == ExitStatus(code=None, signal=signal.SIGKILL)
            assert status.describe() == "killed by SIGKILL"
            assert not group_alive(child.pgid)


async def test_exit_code_is_reported() -> None:
    with trio.fail_after(30):
        async with open_child(py("import sys; sys.exit(7)")) as child:
            assert child.exit_status is None or child.exit_status.code == 7
            status = await child.wait()
            assert status == ExitStatus(code=7, signal=None)
            assert child.exit_status == status
            assert await child.receive_line() is None


async def test_send_reaches_the_child() -> None:
    code = """
        import sys
        for line in sys.stdin:
            print("echo:" + line[:2], len(line), flush=True)
    """
    with trio.fail_after(30):
        async with open_child(py(code)) as child:
            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(child.send, f"{n:02d}-{'z' * 50_000}\n".encode())
            seen = {await read_line(child) for _ in range(20)}
            assert seen == {f"echo:{n:02d} 50004".encode() for n in range(20)}


def _grandchild_code() -> str:
    return """
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(["sleep", "600"])
        print(grandchild.pid, flush=True)
        while True:
            time.sleep(60)
    """


async def test_cancel_leaves_no_process_of_the_group_behind() -> None:
    with trio.fail_after(60):
        with trio.CancelScope() as scope:
            async with open_child(py(_grandchild_code()), grace=0.2, term_grace=0.2) as child:
                pgid = child.pgid
                grandchild = int(await read_line(child))
                assert os.getpgid(grandchild) == pgid, "the grandchild shares the group"
                scope.cancel(reason="test: cancel the owner of the child")
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert child.exit_status is not None
        assert child.exit_status.signal == signal.SIGKILL
        await wait_process_gone(grandchild)
        await assert_group_gone(pgid)


async def test_exception_in_block_stops_the_group_and_propagates_unwrapped() -> None:
    seen: list[int] = []

    async def fail_inside() -> None:
        async with open_child(py(_grandchild_code()), grace=0.2, term_grace=0.2) as child:
            seen.extend([child.pgid, int(await read_line(child))])
            raise RuntimeError("boom")

    with trio.fail_after(60):
        with pytest.raises(RuntimeError, match="boom"):
            await fail_inside()
        pgid, grandchild = seen
        await wait_process_gone(grandchild)
        await assert_group_gone(pgid)


async def test_group_members_outliving_the_leader_are_killed() -> None:
    # The leader exits on stdin EOF, but its grandchild would run on: stop() kills the group.
    code = """
        import subprocess, sys
        grandchild = subprocess.Popen(["sleep", "600"])
        print(grandchild.pid, flush=True)
        sys.stdin.read()
    """
    with trio.fail_after(60):
        async with open_child(py(code)) as child:
            grandchild = int(await read_line(child))
            status = await child.stop(grace=20)
            assert status == ExitStatus(code=0, signal=None)
            await wait_process_gone(grandchild)
            await assert_group_gone(child.pgid)


async def test_spawn_failure_is_typed(tmp_path: Path) -> None:
    with pytest.raises(ChildSpawnError):
        async with open_child(ChildSpec(argv=[str(tmp_path / "missing-binary")])):
            pytest.fail("must not get here")


def test_a_child_log_rolls_over_instead_of_growing_without_end(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "stderr.log"
    log = CappedLog(path, max_bytes=100)
    try:
        for n in range(25):
            log.write(f"line {n:02d}\n".encode())  # 8 bytes each
    finally:
        log.close()
    current = path.read_bytes()
    older = path.with_name("stderr.log.1").read_bytes()
    assert len(current) <= 100
    assert len(older) <= 100
    # Nothing of the last two files' worth is lost, and it stays in order.
    assert (older + current).decode().split() == [
        w for n in range(25 - (len(older) + len(current)) // 8, 25) for w in ("line", f"{n:02d}")
    ]
    reopened = CappedLog(path, max_bytes=100)  # a restart counts what the file already holds
    reopened.write(b"x" * 95)
    reopened.close()
    assert path.read_bytes() == b"x" * 95  # it rolled over first
    assert path.with_name("stderr.log.1").read_bytes() == current


class KillpgSpy:
    """Records every ``os.killpg`` of a known child's group, with whether the child (the group
    leader) had already been reaped at that moment. Once it is reaped, and the group is empty,
    its id is free for the system to hand out again: a signal then could hit a stranger's
    group."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.children: dict[int, ChildProcess] = {}
        self.calls: list[tuple[int, int, bool]] = []  # (pgid, signal, leader reaped)
        real = os.killpg

        def killpg(pgid: int, signum: int) -> None:
            child = self.children.get(pgid)
            if child is not None and signum != 0:  # 0 only probes (group_alive)
                # Popen sets returncode exactly when it reaps the process.
                reaped = child._process._proc.returncode is not None
                self.calls.append((pgid, signum, reaped))
            real(pgid, signum)

        monkeypatch.setattr(os, "killpg", killpg)

    def watch(self, child: ChildProcess) -> ChildProcess:
        self.children[child.pgid] = child
        return child

    def after_reaping(self) -> list[tuple[int, int, bool]]:
        return [call for call in self.calls if call[2]]


@pytest.mark.parametrize("how", ["stdin-eof", "sigterm", "sigkill", "cancel"])
async def test_the_group_is_never_signalled_after_its_leader_was_reaped(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    spy = KillpgSpy(monkeypatch)
    code = {
        "stdin-eof": """
            import subprocess, sys
            grandchild = subprocess.Popen(["sleep", "600"])
            print(grandchild.pid, flush=True)
            sys.stdin.read()
        """,
        "sigterm": """
            import subprocess, time
            grandchild = subprocess.Popen(["sleep", "600"])
            print(grandchild.pid, flush=True)
            while True:
                time.sleep(60)
        """,
        "sigkill": _grandchild_code(),
        "cancel": _grandchild_code(),
    }[how]
    with trio.fail_after(60):
        with trio.CancelScope() as scope:
            async with open_child(py(code), grace=0.2, term_grace=0.2) as child:
                spy.watch(child)
                grandchild = int(await read_line(child))
                if how == "cancel":
                    scope.cancel(reason="test: cancel the owner of the child")
                    await trio.sleep_forever()
                await child.stop(grace=20 if how == "stdin-eof" else 0.2, term_grace=0.2)
        await wait_process_gone(grandchild)  # the orphan was still killed
        await assert_group_gone(child.pgid)
    assert spy.calls, "the group was signalled at all"
    assert spy.after_reaping() == []


async def test_a_leader_that_exits_by_itself_takes_its_group_with_it_before_it_is_reaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A crash: nobody calls stop(); the supervisor only waits for the child.
    spy = KillpgSpy(monkeypatch)
    code = """
        import subprocess, sys
        grandchild = subprocess.Popen(["sleep", "600"])
        print(grandchild.pid, flush=True)
        sys.exit(9)
    """
    with trio.fail_after(30):  # a hang guard: the old code left the orphan running
        async with open_child(py(code)) as child:
            spy.watch(child)
            grandchild = int(await read_line(child))
            assert await child.wait() == ExitStatus(code=9, signal=None)
            await wait_process_gone(grandchild)
            assert spy.calls == [(child.pgid, signal.SIGKILL, False)]
        await assert_group_gone(child.pgid)
    assert spy.after_reaping() == []
