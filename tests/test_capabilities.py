"""BAA_REQUIRE turns a skip for a missing capability into a failure (issue 29, §3); without
it the run skips and its summary says what was not tested."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.capabilities import capability_of, missing, reason, required

ROOT = Path(__file__).resolve().parent.parent


def _run_probe(require: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BAA_REQUIRE"}
    if require is not None:
        env["BAA_REQUIRE"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
         "-q", "-rA", "tests/capability_probe.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_a_local_run_skips_and_names_the_missing_capabilities() -> None:
    run = _run_probe(None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 skipped" in run.stdout
    assert "missing capabilities" in run.stdout
    assert "browser: 1 test(s) skipped" in run.stdout
    assert "etcd: 1 test(s) skipped" in run.stdout


def test_under_baa_require_a_missing_capability_fails() -> None:
    run = _run_probe("etcd,browser")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 skipped" in run.stdout  # the skip that names no capability stays a skip
    assert "FAILED tests/capability_probe.py::test_needs_etcd_in_its_body" in run.stdout
    assert "test_needs_a_browser_by_its_mark" in run.stdout  # a skipif mark fails too
    assert "BAA_REQUIRE" in run.stdout


def test_only_the_named_capabilities_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAA_REQUIRE", "browser sandbox, shellcheck")
    assert required() == {"browser", "sandbox", "shellcheck"}
    with pytest.raises(pytest.skip.Exception):
        missing("etcd", "not named")
    with pytest.raises(pytest.fail.Exception):
        missing("sandbox", "named")
    monkeypatch.setenv("BAA_REQUIRE", "")
    assert required() == set()
    assert capability_of(reason("etcd", "x")) == "etcd"
    assert capability_of("Skipped: " + reason("browser", "x")) == "browser"
    assert capability_of("some other reason") is None


def test_an_unknown_capability_is_a_usage_error() -> None:
    run = _run_probe("etcd,gpu")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "gpu" in run.stdout + run.stderr
