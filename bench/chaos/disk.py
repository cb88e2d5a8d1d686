"""A disk that fills and heals, under codexd's state and logs.

``tmpfs`` (the default where the harness may mount, as root can): codexd's ``state/`` and
``logs/`` live on a size-limited tmpfs mounted for the run; a fault fills it with a ballast
file (``fallocate`` up to the free space, then small writes until ``ENOSPC``) and heals it by
deleting the ballast. Every writer on that filesystem — the event log, the registry, the
idempotency journal, the log file, the Codex child's stderr log — meets ``ENOSPC``.

``rlimit`` (the documented fallback where mounting is not allowed): the fault lowers codexd's
``RLIMIT_FSIZE`` soft limit to 0 with ``prlimit(2)`` (Python ignores ``SIGXFSZ``), so every write
that would extend a file fails with ``EFBIG``, and heals by restoring the limit. It hits codexd
only (not its child), and a codexd restarted meanwhile starts with the normal limit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import subprocess
from pathlib import Path

import trio

BALLAST = "ballast.bin"


class Disk:
    """The filesystem under codexd's files, and the fill/heal fault on it."""

    def __init__(self, root: Path, mode: str, size_mb: int) -> None:
        self.root = root
        self.requested = mode
        self.mode = mode
        self.size_mb = size_mb
        self.mounted = False
        self.note = ""
        self._saved_limit: tuple[int, int] | None = None
        self._limited_pid: int | None = None

    def setup(self) -> None:
        """Mount the tmpfs (``auto`` falls back to ``rlimit`` when mounting is refused)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.mode in ("auto", "tmpfs"):
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs",
                 str(self.root)], capture_output=True, text=True, check=False)
            if done.returncode == 0:
                self.mode, self.mounted = "tmpfs", True
                self.note = f"tmpfs of {self.size_mb} MiB at {self.root}"
                return
            if self.mode == "tmpfs":
                raise RuntimeError(f"cannot mount a tmpfs at {self.root}: "
                                   f"{(done.stderr or done.stdout).strip()}")
            self.note = (f"mount refused ({(done.stderr or done.stdout).strip()}); "
                         "fell back to RLIMIT_FSIZE=0 on codexd (EFBIG instead of ENOSPC)")
        else:
            self.note = "RLIMIT_FSIZE=0 on codexd (EFBIG instead of ENOSPC)"
        self.mode = "rlimit"

    def teardown(self) -> None:
        if self.mounted:
            # Lazy: a process of the run that still holds a file must not keep the mount.
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, check=False)
            self.mounted = False

    async def fill(self, codexd_pid: int | None) -> str:
        """Make writes fail; returns what was done (for the history)."""
        if self.mode == "tmpfs":
            return await trio.to_thread.run_sync(self._fill_tmpfs)
        if codexd_pid is None:
            return "no codexd to limit"
        self._saved_limit = resource.prlimit(codexd_pid, resource.RLIMIT_FSIZE)
        resource.prlimit(codexd_pid, resource.RLIMIT_FSIZE, (0, self._saved_limit[1]))
        self._limited_pid = codexd_pid
        return f"RLIMIT_FSIZE=0 on pid {codexd_pid}"

    async def heal(self) -> None:
        if self.mode == "tmpfs":
            await trio.to_thread.run_sync(self._heal_tmpfs)
            return
        if self._limited_pid is not None and self._saved_limit is not None:
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(self._limited_pid, resource.RLIMIT_FSIZE, self._saved_limit)
        self._limited_pid = None

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _fill_tmpfs(self) -> str:
        path = self.root / BALLAST
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            free = self.free_bytes()
            if free > 0:
                try:
                    os.posix_fallocate(fd, os.fstat(fd).st_size, free)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
            # Top off whatever rounding left, until the filesystem refuses.
            chunk = b"\0" * 4096
            for _ in range(100_000):
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        break
                    raise
        finally:
            os.close(fd)
        return f"ballast {path.stat().st_size // (1024 * 1024)} MiB, {self.free_bytes()} B free"

    def _heal_tmpfs(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / BALLAST).unlink()
