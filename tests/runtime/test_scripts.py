"""The shell scripts of scripts/runtime/: help, dry runs, bad flags, the service manager's calls,
the smoke script and shellcheck (baa_runtime.cli is what they call).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.capabilities import missing
from tests.runtime.support import (
    RUNTIME,
    SCRIPTS,
    run_script,
)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_help(script: str, sandbox: dict[str, str]) -> None:
    proc = run_script(script, "--help", env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")
    assert script in proc.stdout


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_dry_runs_without_touching_the_service_manager(
    script: str, manager: str, sandbox: dict[str, str], tmp_path: Path
) -> None:
    args = ["--dry-run"] if script == "codexd-e2e-smoke.sh" else ["--dry-run", "--manager", manager]
    proc = run_script(script, *args, env=sandbox)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "manager-calls.log").exists()
    # Nothing is installed into the (sandboxed) home.
    assert list((tmp_path / "home").iterdir()) == []


def test_install_dry_run_shows_files_and_commands(sandbox: dict[str, str], tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    proc = run_script(
        "install-launchd.sh",
        "--dry-run",
        "--manager",
        "launchd",
        "--service",
        "codexd",
        "--node",
        "mini",
        "--out-dir",
        str(stage),
        env=sandbox,
    )
    assert proc.returncode == 0, proc.stderr
    agents = tmp_path / "home" / "Library" / "LaunchAgents"
    assert f"would write {agents}/so.makefile.baa-codexd.plist" in proc.stdout
    assert "<key>KeepAlive</key>" in proc.stdout
    uid = os.getuid()
    assert (
        f"would run: launchctl bootstrap gui/{uid} {agents}/so.makefile.baa-codexd.plist"
        in proc.stdout
    )
    assert [p.name for p in stage.iterdir()] == ["so.makefile.baa-codexd.plist"]

    proc = run_script("install-launchd.sh", "--dry-run", "--manager", "systemd", env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert (
        "would run: systemctl --user enable baa-codexd.service baa-conductor.service "
        "baa-status-api.service" in proc.stdout
    )


def test_install_refuses_files_that_fail_the_checks(sandbox: dict[str, str]) -> None:
    proc = run_script(
        "install-launchd.sh",
        "--dry-run",
        "--manager",
        "launchd",
        "--service",
        "codexd",
        "--python",
        "/nonexistent/python",
        env=sandbox,
    )
    assert proc.returncode == 1
    assert "python /nonexistent/python does not exist" in proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_flags_are_one_line_and_status_2(script: str, sandbox: dict[str, str]) -> None:
    # The smoke passes unknown arguments to pytest, so give it a flag missing its value instead.
    args = ["--repo-dir"] if script == "codexd-e2e-smoke.sh" else ["--no-such-flag"]
    proc = run_script(script, *args, env=sandbox)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"{script}: ")


@pytest.mark.parametrize(
    "script", ["install-launchd.sh", "status-launchd.sh", "restart-launchd.sh", "reload-launchd.sh"]
)
def test_missing_launchctl_is_one_clear_line(script: str, sandbox: dict[str, str]) -> None:
    env = dict(sandbox)
    # Drop the fake launchctl; if the host has a real one this test is about another host.
    env["PATH"] = env["PATH"].split(":", 1)[1]
    if shutil.which("launchctl", path=env["PATH"]):
        pytest.skip("this host has launchctl")
    proc = run_script(script, "--manager", "launchd", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"{script}: launchctl not found: this host has no launchd "
        "(use --manager systemd on Linux, or --dry-run)"
    )


def test_restart_and_reload_drive_the_service_manager(
    sandbox: dict[str, str], tmp_path: Path
) -> None:
    calls = tmp_path / "manager-calls.log"
    proc = run_script(
        "restart-launchd.sh", "--manager", "launchd", "--service", "conductor", env=sandbox
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        calls.read_text() == f"launchctl kickstart -k gui/{os.getuid()}/so.makefile.baa-conductor\n"
    )
    calls.unlink()

    proc = run_script(
        "reload-launchd.sh", "--manager", "systemd", "--service", "codexd", "--no-wait", env=sandbox
    )
    assert proc.returncode == 2  # nothing installed yet
    assert "baa-codexd.service is not installed" in proc.stderr
    unit_dir = tmp_path / "home" / ".config" / "systemd" / "user"
    unit_dir.mkdir(parents=True)
    (unit_dir / "baa-codexd.service").write_text("[Service]\n")
    proc = run_script(
        "reload-launchd.sh", "--manager", "systemd", "--service", "codexd", "--no-wait", env=sandbox
    )
    assert proc.returncode == 0, proc.stderr
    assert calls.read_text().splitlines() == [
        "systemctl --user daemon-reload",
        "systemctl --user restart baa-codexd.service",
    ]


def test_reload_gives_up_on_codexd_health_after_its_timeout(
    sandbox: dict[str, str], tmp_path: Path
) -> None:
    unit_dir = tmp_path / "home" / ".config" / "systemd" / "user"
    unit_dir.mkdir(parents=True)
    (unit_dir / "baa-codexd.service").write_text("[Service]\n")
    # Port 9 (discard) on loopback: nothing answers HTTP there.
    proc = run_script(
        "reload-launchd.sh",
        "--manager",
        "systemd",
        "--service",
        "codexd",
        "--codexd-api-base",
        "http://127.0.0.1:9",
        "--wait-timeout",
        "0",
        env=sandbox,
    )
    assert proc.returncode == 1
    assert "codexd did not answer http://127.0.0.1:9/healthz within 0s" in proc.stderr


def test_smoke_dry_run_passes_pytest_arguments(sandbox: dict[str, str]) -> None:
    proc = run_script("codexd-e2e-smoke.sh", "--dry-run", "-k", "turn", "-x", env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(
        "would run: .venv/bin/python -m pytest -q tests/test_e2e_node.py -k turn -x"
    )


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        missing("shellcheck", "shellcheck is not installed (Debian package 'shellcheck')")
    scripts = sorted(str(p) for p in RUNTIME.glob("*.sh"))
    proc = subprocess.run(
        [shellcheck, "-x", *scripts], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_refuses_an_inline_codexd_token(sandbox: dict[str, str]) -> None:
    proc = run_script(
        "install-launchd.sh", "--dry-run", "--setenv", "BAA_CODEXD_TOKEN=hunter2", env=sandbox
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "install-launchd.sh: refusing to write BAA_CODEXD_TOKEN into a service file; "
        "use --codexd-token-file"
    )
    assert "hunter2" not in proc.stdout + proc.stderr
