"""The README's first command: the whole node comes up offline and runs a real turn."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from codexd_trio.codexbin import REPO_ROOT
from codexd_trio.testing import scratch_root


@pytest.mark.real_codex
def test_up_demo_runs_a_real_turn_through_the_conductor_and_stops_cleanly() -> None:
    # Never under /tmp, wherever the checkout is (Codex warns about homes under /tmp).
    var = Path(tempfile.mkdtemp(prefix="test-up-", dir=scratch_root()))
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "codexd_trio.node_up",
                "--demo",
                "--no-wait",
                "--var-dir",
                str(var),
                "--codexd-port",
                "0",
                "--conductor-port",
                "0",
                "--status-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=REPO_ROOT,
            check=False,
        )
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        assert "codex said 'echo: Hello Codex, this is the offline demo.' (completed)" in out
        for name in ("scripted-model", "codexd", "conductor", "status-api"):
            assert f"{name} stopped (exit 0)" in out
        assert (var / "logs" / "codexd" / "events.jsonl").stat().st_size > 0
        assert (var / "state" / "codexd" / "session-registry.json").is_file()
        # One state root for both daemons: the conductor's files sit beside codexd's.
        assert (var / "state" / "conductor" / "lease.json").is_file()
        assert not (var / "state" / "conductor" / "conductor").exists()
    finally:
        shutil.rmtree(var, ignore_errors=True)


def test_up_rejects_bad_arguments() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "codexd_trio.node_up", "--codexd-port", "many"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("up: ")
    assert len(result.stderr.strip().splitlines()) == 1
