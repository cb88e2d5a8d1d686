"""The node's daemons as supervised processes: started the way a service manager starts them
(own process group, found through the JSON ready line, never a sleep), restarted after each
death like launchd's KeepAlive, stopped with SIGTERM at the end — and every process of the run
accounted for afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from bench.chaos.context import RUN_MARKER, Context
from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.base.process import NotReady, follow_ready_line

READY_TIMEOUT_S = 60.0
# A process that cannot start this many times in a row ends the run.
MAX_FAILED_STARTS = 8


@dataclass
class Incarnation:
    pid: int
    started: float
    ready: float | None = None
    ended: float | None = None
    code: int | None = None
    expected: bool = False
    ticks: int | None = None


@dataclass
class Managed:
    """One daemon of the node and every process that has played it during the run.

    Attributes:
        name: ``codexd``, ``conductor-a``, ``etcd``...
        role: what the samples are grouped by (``codexd``, ``conductor``, ``etcd``...).
        argv: the command line (the same for every start: fixed ports, same files).
        url: the daemon's base URL (known before the start: its port is fixed).
        ready: ``line`` (a JSON ready line on stdout) or an URL polled until it answers.
    """

    ctx: Context
    name: str
    role: str
    argv: list[str]
    env: dict[str, str]
    url: str
    log_path: Path
    ready: str = "line"
    restart: bool = True
    incarnations: list[Incarnation] = field(default_factory=list)
    process: trio.Process | None = None
    stopping: bool = False
    up: trio.Event = field(default_factory=trio.Event)
    _expected_pids: set[int] = field(default_factory=set)
    _failed_starts: int = 0
    on_start: Callable[[Managed], None] | None = None

    @property
    def pid(self) -> int | None:
        """The current process's pid while it runs."""
        if self.process is not None and self.process.returncode is None:
            return self.process.pid
        return None

    def expect_death(self, pid: int) -> None:
        """The harness is about to kill ``pid``: its exit is not a failure."""
        self._expected_pids.add(pid)

    async def wait_up(self) -> bool:
        """Wait until the daemon is ready (bounded); False (and a violation) if it is not."""
        with trio.move_on_after(READY_TIMEOUT_S):
            await self.up.wait()
            return True
        self.ctx.violation("recovers",
                           f"{self.name} was not ready again within {READY_TIMEOUT_S:.0f}s",
                           daemon=self.name)
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the daemon running until :meth:`stop`; started once it is first ready."""
        reported = False

        def ready() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started()

        while not self.stopping:
            if self.ctx.disk_full and self.role == "codexd":
                # Starting on a full disk is allowed to fail (reported, not judged); try again
                # once the disk has room, as a service manager's next attempt would.
                await self.ctx.disk_healed.wait()
            ok = await self._one_life(ready)
            if not self.restart:
                return
            if not ok:
                self._failed_starts += 1
                if self._failed_starts >= MAX_FAILED_STARTS:
                    raise RuntimeError(f"{self.name} failed to start {MAX_FAILED_STARTS} times; "
                                       f"see {self.log_path}")
                await trio.sleep(0.5)  # pacing a retry, not waiting for anything
            else:
                self._failed_starts = 0

    async def _one_life(self, on_ready: Callable[[], None]) -> bool:
        """Spawn, wait for ready, wait for the exit. True if it got ready."""
        env = dict(self.env)
        env[RUN_MARKER] = self.ctx.run_id
        with open(self.log_path, "ab") as log:
            process = await trio.lowlevel.open_process(
                self.argv, stdout=subprocess.PIPE if self.ready == "line" else log,
                stderr=log, env=env, cwd=str(REPO_ROOT), start_new_session=True)
        self.process = process
        life = Incarnation(pid=process.pid, started=self.ctx.now(),
                           ticks=start_ticks(process.pid))
        self.incarnations.append(life)
        self.ctx.log(self.name, f"started pid {process.pid}")
        got_ready = False
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(READY_TIMEOUT_S):
                        if self.ready == "line":
                            await nursery.start(follow_ready_line, process)
                        else:
                            await _poll_ready(self.ready, process)
                except (NotReady, trio.TooSlowError, _Exited):
                    pass
                else:
                    got_ready = True
                    life.ready = self.ctx.now()
                    self.ctx.log(self.name, f"ready pid {process.pid}")
                    if self.on_start is not None:
                        self.on_start(self)
                    self.up.set()
                    on_ready()
                code = await process.wait()
                nursery.cancel_scope.cancel(reason="process exited")
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    with suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()
            self.up = trio.Event()
        life.ended, life.code = self.ctx.now(), process.returncode
        life.expected = process.pid in self._expected_pids or self.stopping
        self.ctx.log(self.name, f"pid {process.pid} exited {process.returncode}"
                     f"{'' if life.expected else ' UNEXPECTEDLY'}")
        if not life.expected:
            tail = _tail(self.log_path)
            if self.ctx.disk_full or not self.ctx.disk_healed.is_set():
                self.ctx.notes.append(f"{self.name} pid {process.pid} exited {code} while the "
                                      f"disk was full: {tail[-300:]}")
                self.ctx.counters[f"{self.name} exits on a full disk"] += 1
            else:
                self.ctx.violation("daemon_exits",
                                   f"{self.name} pid {process.pid} exited by itself ({code})",
                                   daemon=self.name, code=code, log_tail=tail)
        self.ctx.check("daemon_exits")
        return got_ready

    async def stop(self, grace_s: float) -> None:
        """SIGTERM (after SIGCONT, in case it was frozen) and wait up to ``grace_s`` plus a
        margin; a daemon that needs SIGKILL, or exits non-zero, breaks ``graceful_stop``."""
        self.stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
            os.kill(process.pid, signal.SIGTERM)
        self.ctx.check("graceful_stop")
        with trio.move_on_after(grace_s + 10) as scope:
            code = await process.wait()
        if scope.cancelled_caught:
            self.ctx.violation("graceful_stop",
                               f"{self.name} did not stop within {grace_s + 10:.0f}s of SIGTERM",
                               daemon=self.name)
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        elif code != 0 and not (self.role == "etcd" and code == -signal.SIGTERM):
            # etcd (not ours) ends by re-raising SIGTERM; every daemon of the node exits 0.
            self.ctx.violation("graceful_stop", f"{self.name} exited {code} after SIGTERM",
                               daemon=self.name, log_tail=_tail(self.log_path))

    def leaders(self) -> dict[int, int | None]:
        """Every process group this daemon led: pid -> when it started."""
        return {life.pid: life.ticks for life in self.incarnations}


class _Exited(Exception):
    pass


async def _poll_ready(url: str, process: trio.Process) -> None:
    """For a daemon without a ready line (etcd): ask its health URL until it answers."""
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if process.returncode is not None:
                raise _Exited
            try:
                if (await http.get(url)).json().get("health") == "true":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            # Another process: nothing to wait on but its port; bounded by the caller.
            await trio.sleep(0.05)


def _tail(path: Path, size: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# Processes of the run


def run_processes(run_id: str) -> list[tuple[int, str]]:
    """Every live process carrying the run's marker: ``(pid, command line)``."""
    found: list[tuple[int, str]] = []
    needle = f"{RUN_MARKER}={run_id}".encode()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append((int(entry), cmdline[:200]))
    return found


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat``); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def groups_alive(leaders: dict[int, int | None]) -> list[int]:
    """The run's process groups that still have a member.

    ``leaders`` maps each group id (its leader's pid) to when that leader started. A group
    whose id now belongs to a leader that started at another time is someone else's: the
    kernel reused the pid after the run's group was gone (a long run on a busy machine)."""
    alive = []
    for pgid, started in leaders.items():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        now = start_ticks(pgid)
        if now is not None and started is not None and now != started:
            continue
        alive.append(pgid)
    return alive


def is_run_process(pid: int, run_id: str, name_part: str) -> bool:
    """``pid`` is a live process of this run whose command line mentions ``name_part`` (never
    signal a pid the kernel may have handed to someone else)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"{RUN_MARKER}={run_id}".encode() not in f.read().split(b"\0"):
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return name_part.encode() in f.read()
    except OSError:
        return False


def child_pid_from_state(state_dir: Path) -> int | None:
    """The Codex child's pid as codexd last wrote it (``daemon-state.json``)."""
    try:
        state = json.loads((state_dir / "codexd" / "daemon-state.json").read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("child", {}).get("pid")
    return pid if isinstance(pid, int) else None


def rss_and_fds(pid: int) -> tuple[float, int] | None:
    """Resident set size (MiB) and open file descriptors of ``pid``; None if it is gone."""
    try:
        rss = 0.0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024.0
                    break
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return rss, fds
