"""Fixtures of the runtime tests: a sandboxed environment, node folders, a fake node, a socket
folder short enough for unix sockets."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.support import FakeNode


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    """Environment for the scripts: private HOME/TMPDIR, no BAA_* leaking in, and recording fakes
    of launchctl/systemctl first on PATH (so a script that should not call them is caught)."""
    home = tmp_path / "home"
    home.mkdir()
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    calls = tmp_path / "manager-calls.log"
    for tool in ("launchctl", "systemctl"):
        fake = fakebin / tool
        fake.write_text(f'#!/bin/sh\necho "{tool} $*" >> {shlex.quote(str(calls))}\nexit 0\n')
        fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAA_")}
    env.update(HOME=str(home), TMPDIR=str(tmp_path), PATH=f"{fakebin}:{env.get('PATH', '')}")
    return env


@pytest.fixture
def node_dirs(tmp_path: Path) -> dict[str, Path]:
    """Existing logs/state roots, the way install-launchd.sh leaves them."""
    dirs = {
        "logs": tmp_path / "logs",
        "state": tmp_path / "state",
    }
    for sub in ("launchd", "systemd"):
        (dirs["logs"] / sub).mkdir(parents=True)
    dirs["state"].mkdir()
    token = tmp_path / "shared-token"
    token.write_text("s3cr3t-token-value\n")
    token.chmod(0o600)
    dirs["token"] = token
    codexd_token = tmp_path / "codexd-token"
    codexd_token.write_text("c0dexd-token-value\n")
    codexd_token.chmod(0o600)
    dirs["codexd_token"] = codexd_token
    return dirs


@pytest.fixture
def fake_node() -> Iterator[tuple[FakeNode, str]]:
    node = FakeNode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, ctype, body = node.respond(self.path, self.headers.get("Authorization"))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield node, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short folder for unix sockets: a socket path holds at most 103 bytes, which a pytest
    tmp_path can exceed wherever the checkout or TMPDIR is."""
    folder = Path(tempfile.mkdtemp(prefix="baa-rt-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
