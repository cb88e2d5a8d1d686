"""Helpers of the runtime tests: running the scripts and render.py, reading units, fake nodes."""

from __future__ import annotations

import contextlib
import json
import plistlib
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


RUNTIME = REPO / "scripts" / "runtime"


RENDER = RUNTIME / "render.py"


SCRIPTS = [
    "install-launchd.sh",
    "status-launchd.sh",
    "restart-launchd.sh",
    "reload-launchd.sh",
    "check-launchd.sh",
    "check-node.sh",
    "codexd-e2e-smoke.sh",
]


SERVICES = ("codexd", "conductor", "status-api")


MODULES = {
    "codexd": "codexd_trio",
    "conductor": "conductor_trio",
    "status-api": "conductor_trio.status_api",
}


def run_script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUNTIME / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def render(
    out_dir: Path, manager: str, *flags: str, expect: int = 0
) -> tuple[dict[str, Path], subprocess.CompletedProcess[str]]:
    proc = subprocess.run(
        [
            sys.executable,
            str(RENDER),
            "render",
            "--manager",
            manager,
            "--out-dir",
            str(out_dir),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == expect, proc.stderr
    files: dict[str, Path] = {}
    for line in proc.stdout.splitlines():
        kind, *rest = line.split("\t")
        if kind == "file":
            files[rest[0]] = Path(rest[1])
    return files, proc


def dir_flags(dirs: dict[str, Path]) -> list[str]:
    return [
        "--logs-dir",
        str(dirs["logs"]),
        "--state-dir",
        str(dirs["state"]),
        "--shared-token-file",
        str(dirs["token"]),
    ]


def parse_unit(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(directives of [Service] except Environment, Environment variables) of a rendered unit."""
    section = ""
    service: dict[str, str] = {}
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section != "Service":
            continue
        if key == "Environment":
            for word in shlex.split(value):
                k, _, v = word.replace("%%", "%").partition("=")
                env[k] = v
        else:
            service[key] = value
    return service, env


class FakeNode:
    """One loopback HTTP server answering the probes of all three services (paths differ)."""

    def __init__(self) -> None:
        self.role = "leader"
        self.child_state = "running"
        # strategy external: codexd reports the endpoint it attaches to, and no pid.
        self.strategy = "spawn"
        self.endpoint: str | None = None
        self.last_error: str | None = None
        self.node_id = "mini-main"
        # codexd's bearer token when set: /v1/codexd/* answer 401 without it, as codexd does.
        self.codexd_token: str | None = None
        # The conductor's shared token when set: /v1/codex/* answer 401 without it, as a
        # conductor over a codexd with a token does.
        self.shared_token: str | None = None
        self.authorization: dict[str, set[str | None]] = {}
        # The metric-name prefixes /metrics answers with (one server plays all three daemons).
        self.metric_prefixes = ["codexd", "conductor", "status_api"]

    def respond(self, path: str, authorization: str | None) -> tuple[int, str, bytes]:
        def ok(data: dict[str, Any]) -> tuple[int, str, bytes]:
            return 200, "application/json", json.dumps({"ok": True, "data": data}).encode()

        self.authorization.setdefault(path, set()).add(authorization)
        if (
            self.codexd_token is not None
            and path.startswith("/v1/codexd/")
            and authorization != f"Bearer {self.codexd_token}"
        ):
            error = {"code": "unauthorized", "message": "codexd needs its bearer token"}
            return 401, "application/json", json.dumps({"ok": False, "error": error}).encode()
        if (
            self.shared_token is not None
            and path.startswith("/v1/codex/")
            and authorization != f"Bearer {self.shared_token}"
        ):
            error = {"code": "unauthorized", "message": "the conductor needs the shared token"}
            return 401, "application/json", json.dumps({"ok": False, "error": error}).encode()
        if path == "/v1/codex/sessions?limit=1":
            return ok({"sessions": [], "nextCursor": None})
        if path in ("/healthz", "/readyz"):
            return ok({"status": "ok"})
        if path == "/rolez":
            return 200, "text/plain", self.role.encode()
        if path == "/v1/codexd/status":
            child = {
                "status": self.child_state,
                "strategy": self.strategy,
                "endpoint": self.endpoint,
                "pid": None if self.strategy == "external" else 4242,
                "lastError": self.last_error,
            }
            daemon = {"started": True, "child": child}
            return ok({"snapshot": {"identity": {"nodeId": self.node_id}, "daemon": daemon}})
        if path == "/v1/status":
            return ok({"mode": "running"})
        if path == "/metrics":
            text = "".join(f"# HELP {p}_http_requests x\n# TYPE {p}_http_requests counter\n"
                           f"{p}_http_requests_total 1.0\n" for p in self.metric_prefixes)
            return 200, "text/plain; version=0.0.4", text.encode()
        return 404, "application/json", b'{"ok":false}'


def check_node_args(base: str) -> list[str]:
    return [
        "--node",
        "mini",
        "--skip-logs",
        "--codexd-api-base",
        base,
        "--conductor-api",
        base,
        "--status-api",
        base,
    ]


class FakeAppServer:
    """A unix socket (or, without ``path``, a loopback TCP port) answering the WebSocket upgrade
    the way ``codex app-server --listen unix://PATH`` / ``ws://IP:PORT`` does (codexd's first step
    when it attaches), one connection at a time."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.upgrades = 0
        if path is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.bind(("127.0.0.1", 0))
            self.endpoint = f"ws://127.0.0.1:{self._sock.getsockname()[1]}"
        else:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(str(path))
            self.endpoint = f"unix://{path}"
        self._sock.listen(4)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(5)
                head = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    if head.startswith(b"GET ") and b"upgrade: websocket" in head.lower():
                        self.upgrades += 1
                        conn.sendall(
                            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                            b"connection: Upgrade\r\n\r\n"
                        )
                        conn.recv(64)  # the client's close frame, or its end

    def stop(self, *, unlink: bool = True) -> None:
        """Stop listening; ``unlink=False`` leaves a stale socket file behind (a killed server)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=10)
        if unlink and self.path is not None:
            self.path.unlink(missing_ok=True)


def env_of(path: Path) -> dict[str, str]:
    if path.suffix == ".plist":
        env: dict[str, str] = plistlib.loads(path.read_bytes())["EnvironmentVariables"]
        return env
    return parse_unit(path)[1]


def program_of(path: Path) -> list[str]:
    if path.suffix == ".plist":
        program: list[str] = plistlib.loads(path.read_bytes())["ProgramArguments"]
        return program
    return shlex.split(parse_unit(path)[0]["ExecStart"])


def expected_codex_binary() -> Path | None:
    """The native binary codexd would spawn for ``codex`` (the vendored one), when installed."""
    from codexd_trio.base import codexbin

    vendored = codexbin.vendored_binary(REPO / "vendor" / "codex")
    return vendored if vendored.is_file() else None
