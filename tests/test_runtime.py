"""The runtime layer: launchd plists and systemd units rendered from the repo's templates, and the
scripts in scripts/runtime/ that install, inspect, restart, reload and check them.

Nothing is installed: every script runs with HOME and TMPDIR inside the test's folder, and a fake
``launchctl``/``systemctl`` first on PATH records any call so the dry runs can prove they made none.
"""

from __future__ import annotations

import contextlib
import json
import os
import plistlib
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
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


# --------------------------------------------------------------------------- rendering


def test_launchd_plists_round_trip_with_required_keys(
    tmp_path: Path, node_dirs: dict[str, Path]
) -> None:
    files, _ = render(tmp_path / "out", "launchd", "--node", "mini", *dir_flags(node_dirs))
    assert set(files) == set(SERVICES)
    for service, path in files.items():
        assert path.name == f"so.makefile.baa-{service}.plist"
        with path.open("rb") as f:
            plist = plistlib.load(f)
        assert plist["Label"] == f"so.makefile.baa-{service}"
        assert plist["ProgramArguments"] == [
            str(REPO / ".venv" / "bin" / "python"),
            "-m",
            MODULES[service],
            "start",
        ]
        assert plist["WorkingDirectory"] == str(REPO)
        assert plist["RunAtLoad"] is True
        assert plist["KeepAlive"] == {"SuccessfulExit": False}
        assert isinstance(plist["ThrottleInterval"], int)
        assert plist["ThrottleInterval"] >= 1
        assert isinstance(plist["ExitTimeOut"], int)
        assert plist["ExitTimeOut"] > 10
        assert "UserName" not in plist  # agents run as their user
        launchd_logs = node_dirs["logs"] / "launchd"
        assert plist["StandardOutPath"] == str(launchd_logs / f"{plist['Label']}.out.log")
        assert plist["StandardErrorPath"] == str(launchd_logs / f"{plist['Label']}.err.log")
        env = plist["EnvironmentVariables"]
        assert env["BAA_NODE_ID"] == "mini-main"
        # The token's value is never rendered anywhere; only the file that holds it.
        assert "s3cr3t" not in path.read_text()
        assert not any("token" in arg.lower() for arg in plist["ProgramArguments"])
        # A plist dumped again from what was loaded is the same document (no template leftovers).
        assert "@" not in json.dumps(plist)
        assert plistlib.loads(plistlib.dumps(plist)) == plist

    codexd = plistlib.loads(files["codexd"].read_bytes())["EnvironmentVariables"]
    assert codexd["BAA_CODEXD_LOCAL_API_BASE"] == "http://127.0.0.1:4319"
    assert codexd["BAA_CODEXD_LOGS_DIR"] == str(node_dirs["logs"])
    assert codexd["BAA_CODEXD_STATE_DIR"] == str(node_dirs["state"])
    assert codexd["BAA_CODEXD_EVENT_STREAM_PATH"] == "/v1/codexd/events"
    assert codexd["BAA_CODEXD_SERVER_COMMAND"] == "codex"
    assert codexd["BAA_CODEXD_SERVER_ARGS"] == "app-server"
    assert codexd["BAA_CODEXD_SHUTDOWN_GRACE_S"] == "10"
    conductor = plistlib.loads(files["conductor"].read_bytes())["EnvironmentVariables"]
    assert conductor["BAA_SHARED_TOKEN_FILE"] == str(node_dirs["token"])
    assert "BAA_SHARED_TOKEN" not in conductor
    assert conductor["BAA_CONDUCTOR_HOST"] == "mini"
    assert conductor["BAA_CONDUCTOR_ROLE"] == "primary"
    status = plistlib.loads(files["status-api"].read_bytes())["EnvironmentVariables"]
    assert status["BAA_STATUS_API_LOCAL_API"] == "http://127.0.0.1:4318"
    assert status["BAA_CONDUCTOR_LOCAL_API"] == "http://127.0.0.1:4317"


@pytest.mark.parametrize(("grace", "expected_exit_timeout"), [("10", 20), ("5", 20), ("30", 60)])
def test_exit_timeout_is_longer_than_codexd_grace(
    tmp_path: Path, grace: str, expected_exit_timeout: int
) -> None:
    files, _ = render(tmp_path, "launchd", "--service", "codexd", "--shutdown-grace", grace)
    plist = plistlib.loads(files["codexd"].read_bytes())
    assert plist["ExitTimeOut"] == expected_exit_timeout
    assert plist["EnvironmentVariables"]["BAA_CODEXD_SHUTDOWN_GRACE_S"] == grace


@pytest.mark.parametrize("exit_timeout", ["10", "3"])
def test_renderer_refuses_exit_timeout_not_above_grace(tmp_path: Path, exit_timeout: str) -> None:
    files, proc = render(
        tmp_path / "out",
        "launchd",
        "--shutdown-grace",
        "10",
        "--exit-timeout",
        exit_timeout,
        expect=2,
    )
    assert files == {}
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "longer than codexd's shutdown grace" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "base", ["http://0.0.0.0:4319", "http://192.168.1.20:4319", "http://mini.local:4319"]
)
@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_renderer_refuses_non_loopback_codexd(tmp_path: Path, base: str, manager: str) -> None:
    files, proc = render(tmp_path / "out", manager, "--codexd-api-base", base, expect=2)
    assert files == {}
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "loopback" in line
    assert "Traceback" not in proc.stderr


def test_systemd_units_have_the_launchd_semantics_and_environment(
    tmp_path: Path, node_dirs: dict[str, Path]
) -> None:
    flags = ["--node", "mini", "--shutdown-grace", "15", *dir_flags(node_dirs)]
    plists, _ = render(tmp_path / "launchd", "launchd", *flags)
    units, _ = render(tmp_path / "systemd", "systemd", *flags)
    for service in SERVICES:
        unit = units[service]
        assert unit.name == f"baa-{service}.service"
        directives, env = parse_unit(unit)
        plist = plistlib.loads(plists[service].read_bytes())
        assert env == plist["EnvironmentVariables"]
        assert shlex.split(directives["ExecStart"]) == plist["ProgramArguments"]
        assert directives["WorkingDirectory"] == plist["WorkingDirectory"]
        assert directives["Restart"] == "on-failure"
        assert directives["RestartSec"] == str(plist["ThrottleInterval"])
        assert int(directives["TimeoutStopSec"]) == plist["ExitTimeOut"] == 30
        assert int(directives["TimeoutStopSec"]) > 15
        assert directives["KillMode"] == "mixed"
        assert directives["KillSignal"] == "SIGTERM"
        logs = node_dirs["logs"] / "systemd"
        assert directives["StandardOutput"] == f"append:{logs}/baa-{service}.out.log"
        assert directives["StandardError"] == f"append:{logs}/baa-{service}.err.log"
        assert "User" not in directives
        assert "EnvironmentFile" not in directives
        assert "WantedBy=default.target" in unit.read_text()


def test_daemon_scope_runs_as_the_given_user(tmp_path: Path) -> None:
    env_file = tmp_path / "node.env"
    flags = ["--scope", "daemon", "--user", "baa", "--service", "codexd"]
    plists, _ = render(tmp_path / "l", "launchd", *flags)
    units, _ = render(tmp_path / "s", "systemd", *flags, "--env-file", str(env_file))
    assert plistlib.loads(plists["codexd"].read_bytes())["UserName"] == "baa"
    directives, _ = parse_unit(units["codexd"])
    assert directives["User"] == "baa"
    assert directives["EnvironmentFile"] == f"-{env_file}"
    assert "WantedBy=multi-user.target" in units["codexd"].read_text()


def test_odd_characters_survive_systemd_quoting(tmp_path: Path) -> None:
    odd = tmp_path / "logs with space and 100%"
    (odd / "systemd").mkdir(parents=True)
    units, _ = render(tmp_path / "s", "systemd", "--service", "codexd", "--logs-dir", str(odd))
    directives, env = parse_unit(units["codexd"])
    assert env["BAA_CODEXD_LOGS_DIR"] == str(odd)
    assert directives["StandardOutput"] == f"append:{odd}/systemd/baa-codexd.out.log".replace(
        "%", "%%"
    )


def test_rendered_units_pass_systemd_analyze_verify(
    tmp_path: Path, node_dirs: dict[str, Path]
) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    units, _ = render(tmp_path / "units", "systemd", *dir_flags(node_dirs))
    proc = subprocess.run(
        [analyze, "verify", *map(str, units.values())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 and "Failed to initialize manager" in output:
        pytest.skip(f"systemd-analyze cannot run here: {output}")
    assert proc.returncode == 0, output
    # verify reports unknown directives and bad values as warnings with status 0.
    assert output == ""


# --------------------------------------------------------------------------- scripts: contract


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


# --------------------------------------------------------------------------- check-launchd.sh


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_check_accepts_a_good_rendering(
    manager: str, tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    files, _ = render(tmp_path / "out", manager, *dir_flags(node_dirs))
    args = [a for f in files.values() for a in ("--file", str(f))]
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("ok: 3 file(s) checked")


def test_check_catches_codexd_bound_to_all_interfaces(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    files, _ = render(tmp_path / "out", "launchd", "--service", "codexd", *dir_flags(node_dirs))
    plist: dict[str, Any] = plistlib.loads(files["codexd"].read_bytes())
    plist["EnvironmentVariables"]["BAA_CODEXD_LOCAL_API_BASE"] = "http://0.0.0.0:4319"
    files["codexd"].write_bytes(plistlib.dumps(plist))
    proc = run_script("check-launchd.sh", "--file", str(files["codexd"]), env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "so.makefile.baa-codexd.plist: codexd listen address is not loopback: 0.0.0.0 "
        "(BAA_CODEXD_LOCAL_API_BASE=http://0.0.0.0:4319)"
    ]


def test_check_catches_a_missing_log_dir(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    missing = tmp_path / "no-such-logs"
    files, _ = render(
        tmp_path / "out",
        "launchd",
        "--service",
        "codexd",
        *dir_flags(node_dirs),
        "--logs-dir",
        str(missing),
    )
    proc = run_script("check-launchd.sh", "--file", str(files["codexd"]), env=sandbox)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert (
        f"so.makefile.baa-codexd.plist: logs dir (BAA_CODEXD_LOGS_DIR) does not exist: {missing}"
        in lines
    )
    assert (
        f"so.makefile.baa-codexd.plist: stdout log dir does not exist: {missing}/launchd" in lines
    )
    # Every problem is one line naming the file.
    assert all(line.startswith("so.makefile.baa-codexd.plist: ") for line in lines)


def test_check_catches_broken_systemd_semantics_and_inline_secrets(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    files, _ = render(tmp_path / "out", "systemd", "--service", "conductor", *dir_flags(node_dirs))
    unit = files["conductor"]
    text = unit.read_text()
    text = text.replace("Restart=on-failure", "Restart=always")
    text = text.replace("TimeoutStopSec=20", "TimeoutStopSec=5")
    text = text.replace("[Service]\n", '[Service]\nEnvironment="BAA_SHARED_TOKEN=hunter2"\n')
    unit.write_text(text)
    node_dirs["token"].chmod(0o644)
    proc = run_script("check-launchd.sh", "--file", str(unit), env=sandbox)
    assert proc.returncode == 1
    out = proc.stdout
    assert "Restart must be on-failure (got 'always')" in out
    assert "TimeoutStopSec (5s) must be longer than codexd's shutdown grace (10s)" in out
    assert "BAA_SHARED_TOKEN is written inline; use BAA_SHARED_TOKEN_FILE instead" in out
    assert "shared token file is readable by others (chmod 600)" in out


def test_check_reports_services_that_are_not_installed(sandbox: dict[str, str]) -> None:
    proc = run_script(
        "check-launchd.sh", "--manager", "launchd", "--service", "codexd", env=sandbox
    )
    assert proc.returncode == 1
    assert proc.stdout.strip().endswith("so.makefile.baa-codexd.plist: not installed")


# --------------------------------------------------------------------------- check-node.sh


class _FakeNode:
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


@pytest.fixture
def fake_node() -> Iterator[tuple[_FakeNode, str]]:
    node = _FakeNode()

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


def test_check_node_passes_on_a_healthy_node_and_names_each_failure(
    fake_node: tuple[_FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    logs = tmp_path / "logs"
    (logs / "launchd").mkdir(parents=True)
    for service in SERVICES:
        for stream in ("out", "err"):
            (logs / "launchd" / f"so.makefile.baa-{service}.{stream}.log").touch()
    args = [
        "--node",
        "mini",
        "--manager",
        "launchd",
        "--logs-dir",
        str(logs),
        "--codexd-api-base",
        base,
        "--conductor-api",
        base,
        "--status-api",
        base,
    ]
    proc = run_script("check-node.sh", *args, env=sandbox)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()[1:]
    assert len(lines) == 11 + 6
    assert all(line.startswith("ok ") for line in lines)

    node.role = "standby"
    node.child_state = "restarting"
    (logs / "launchd" / "so.makefile.baa-codexd.err.log").unlink()
    proc = run_script("check-node.sh", *args, env=sandbox)
    assert proc.returncode == 1
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert failures == [
        f"FAIL conductor GET {base}/rolez: role is 'standby', expected 'leader'",
        f"FAIL codexd GET {base}/v1/codexd/status: app-server child state is 'restarting', "
        "not 'running'",
        f"FAIL launchd log {logs}/launchd/so.makefile.baa-codexd.err.log: missing",
    ]

    node.role, node.child_state = "leader", "running"
    node.metric_prefixes = ["codexd", "status_api"]
    proc = run_script("check-node.sh", *args, "--skip-logs", env=sandbox)
    assert proc.returncode == 1
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert failures == [f"FAIL conductor GET {base}/metrics: no conductor_* metrics in the answer"]
    node.metric_prefixes = ["codexd", "conductor", "status_api"]

    node.node_id = "other-main"
    proc = run_script("check-node.sh", *args, "--skip-logs", env=sandbox)
    assert proc.returncode == 1
    assert "codexd node id is 'other-main', expected 'mini-main'" in proc.stdout


def test_check_node_reports_an_unreachable_node(sandbox: dict[str, str]) -> None:
    down = "http://127.0.0.1:9"
    proc = run_script(
        "check-node.sh",
        "--skip-logs",
        "--codexd-api-base",
        down,
        "--conductor-api",
        down,
        "--status-api",
        down,
        "--timeout",
        "2",
        env=sandbox,
    )
    assert proc.returncode == 1
    probes = proc.stdout.splitlines()[1:]
    assert len(probes) == 11  # 8 + /metrics of each daemon
    assert all(line.startswith("FAIL ") and "unreachable" in line for line in probes)


# --------------------------------------------------------------------------- smoke and lint


def test_smoke_dry_run_passes_pytest_arguments(sandbox: dict[str, str]) -> None:
    proc = run_script("codexd-e2e-smoke.sh", "--dry-run", "-k", "turn", "-x", env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(
        "would run: .venv/bin/python -m pytest -q tests/test_e2e_node.py -k turn -x"
    )


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package 'shellcheck')")
    scripts = sorted(str(p) for p in RUNTIME.glob("*.sh"))
    proc = subprocess.run(
        [shellcheck, "-x", *scripts], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_conductor_and_status_api_listen_off_loopback_only_when_allow_listed(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    _, proc = render(tmp_path / "a", "systemd", "--conductor-api", "http://10.0.0.5:4317", expect=2)
    assert proc.stderr.strip().endswith(
        "--conductor-api listens on non-loopback host '10.0.0.5' that is not listed in "
        "--allowed-hosts"
    )
    files, _ = render(
        tmp_path / "b",
        "launchd",
        *dir_flags(node_dirs),
        "--conductor-api",
        "http://10.0.0.5:4317",
        "--allowed-hosts",
        "10.0.0.5",
        "--status-api",
        "http://10.0.0.5:4318",
        "--status-allowed-hosts",
        "10.0.0.5",
    )
    conductor = plistlib.loads(files["conductor"].read_bytes())
    assert conductor["EnvironmentVariables"]["BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS"] == "10.0.0.5"
    proc = run_script(
        "check-launchd.sh", *(a for f in files.values() for a in ("--file", str(f))), env=sandbox
    )
    assert proc.returncode == 0, proc.stdout
    # Dropping the allow-list entry from an installed copy is caught by the static check.
    del conductor["EnvironmentVariables"]["BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS"]
    files["conductor"].write_bytes(plistlib.dumps(conductor))
    proc = run_script("check-launchd.sh", "--file", str(files["conductor"]), env=sandbox)
    assert proc.returncode == 1
    assert "BAA_CONDUCTOR_LOCAL_API listens on non-loopback host '10.0.0.5'" in proc.stdout


def test_setenv_reaches_every_service_but_never_an_inline_token(tmp_path: Path) -> None:
    flags = ["--setenv", "BAA_CODEXD_EVENT_CACHE_SIZE=100"]
    plists, _ = render(tmp_path / "l", "launchd", *flags)
    units, _ = render(tmp_path / "s", "systemd", *flags)
    for service in SERVICES:
        env = plistlib.loads(plists[service].read_bytes())["EnvironmentVariables"]
        assert env["BAA_CODEXD_EVENT_CACHE_SIZE"] == "100"
        assert parse_unit(units[service])[1]["BAA_CODEXD_EVENT_CACHE_SIZE"] == "100"
    _, proc = render(tmp_path / "x", "launchd", "--setenv", "BAA_SHARED_TOKEN=hunter2", expect=2)
    assert "use --shared-token-file" in proc.stderr
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- codexd's token


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_codexd_token_file_reaches_codexd_and_the_conductor(
    manager: str, tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    token_file = node_dirs["codexd_token"]
    files, _ = render(
        tmp_path / "out", manager, *dir_flags(node_dirs), "--codexd-token-file", str(token_file)
    )
    envs = {
        service: (
            plistlib.loads(path.read_bytes())["EnvironmentVariables"]
            if manager == "launchd"
            else parse_unit(path)[1]
        )
        for service, path in files.items()
    }
    # codexd requires the token, the conductor sends it: both read the same file.
    assert envs["codexd"]["BAA_CODEXD_TOKEN_FILE"] == str(token_file)
    assert envs["conductor"]["BAA_CODEXD_TOKEN_FILE"] == str(token_file)
    assert "BAA_CODEXD_TOKEN_FILE" not in envs["status-api"]
    # Each daemon logs to its own file, which it rolls over (nothing rotates the manager's).
    log_files = [envs["codexd"]["BAA_CODEXD_LOG_FILE"],
                 envs["conductor"]["BAA_CONDUCTOR_LOG_FILE"],
                 envs["status-api"]["BAA_STATUS_API_LOG_FILE"]]
    assert len(set(log_files)) == 3
    assert all(Path(f).is_absolute() and f.endswith(".log") for f in log_files)
    for service, path in files.items():
        assert "BAA_CODEXD_TOKEN" not in envs[service]
        assert "c0dexd" not in path.read_text()
    args = [a for f in files.values() for a in ("--file", str(f))]
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 0, proc.stdout

    # Without the flag nothing is rendered, not even an empty key (empty values are left out).
    files, _ = render(tmp_path / "plain", manager, *dir_flags(node_dirs))
    for path in files.values():
        assert "BAA_CODEXD_TOKEN_FILE" not in path.read_text()


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_renderer_refuses_an_inline_codexd_token(tmp_path: Path, manager: str) -> None:
    files, proc = render(tmp_path / "x", manager, "--setenv", "BAA_CODEXD_TOKEN=x", expect=2)
    assert files == {}
    assert proc.stderr.strip().splitlines() == [
        "render.py: refusing to write BAA_CODEXD_TOKEN into a service file; use --codexd-token-file"
    ]
    assert not (tmp_path / "x").exists()


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


def test_check_catches_a_world_readable_codexd_token_and_an_inline_one(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    token_file = node_dirs["codexd_token"]
    files, _ = render(
        tmp_path / "out",
        "systemd",
        *dir_flags(node_dirs),
        "--codexd-token-file",
        str(token_file),
    )
    token_file.chmod(0o644)
    args = [a for f in files.values() for a in ("--file", str(f))]
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"baa-{service}.service: codexd token file is readable by others (chmod 600): {token_file}"
        for service in ("codexd", "conductor")
    ]

    token_file.chmod(0o600)
    unit = files["codexd"]
    unit.write_text(
        unit.read_text().replace("[Service]\n", '[Service]\nEnvironment="BAA_CODEXD_TOKEN=x"\n')
    )
    token_file.write_text("")
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "baa-codexd.service: BAA_CODEXD_TOKEN is written inline; use BAA_CODEXD_TOKEN_FILE instead",
        f"baa-codexd.service: codexd token file is empty: {token_file}",
        f"baa-conductor.service: codexd token file is empty: {token_file}",
    ]

    token_file.unlink()
    proc = run_script("check-launchd.sh", "--file", str(files["conductor"]), env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"baa-conductor.service: codexd token file does not exist: {token_file}"
    ]


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_check_catches_a_conductor_without_codexd_token(
    manager: str, tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    token_file = node_dirs["codexd_token"]
    with_token, _ = render(
        tmp_path / "with",
        manager,
        *dir_flags(node_dirs),
        "--codexd-token-file",
        str(token_file),
    )
    without, _ = render(tmp_path / "without", manager, *dir_flags(node_dirs))
    # codexd wants a token; the conductor beside it was rendered without one.
    shutil.copy(without["conductor"], with_token["conductor"])
    codexd_name, conductor_name = with_token["codexd"].name, with_token["conductor"].name
    expected = (
        f"{conductor_name}: BAA_CODEXD_TOKEN_FILE is not set, but codexd ({codexd_name}) "
        f"requires the token in {token_file}: the conductor could not call codexd "
        "(render both with --codexd-token-file)"
    )
    args = [a for f in with_token.values() for a in ("--file", str(f))]
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [expected]
    # Checking codexd alone still finds the conductor installed beside it.
    proc = run_script("check-launchd.sh", "--file", str(with_token["codexd"]), env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [expected]

    # A different file with the same token works; a different token does not.
    copy = tmp_path / "conductor-copy-of-token"
    shutil.copy(token_file, copy)
    copy.chmod(0o600)
    render(
        tmp_path / "with",
        manager,
        "--service",
        "conductor",
        *dir_flags(node_dirs),
        "--codexd-token-file",
        str(copy),
    )
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 0, proc.stdout
    copy.write_text("another-token\n")
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{conductor_name}: BAA_CODEXD_TOKEN_FILE is {copy}, but codexd ({codexd_name}) reads "
        f"its token from {token_file}: the conductor could not call codexd "
        "(render both with --codexd-token-file)"
    ]


def test_installing_codexd_alone_with_a_token_checks_the_installed_conductor(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    install_dir = tmp_path / "installed"
    render(install_dir, "systemd", "--service", "conductor", *dir_flags(node_dirs))
    flags = [
        "--dry-run",
        "--manager",
        "systemd",
        "--install-dir",
        str(install_dir),
        *dir_flags(node_dirs),
        "--codexd-token-file",
        str(node_dirs["codexd_token"]),
    ]
    proc = run_script("install-launchd.sh", "--service", "codexd", *flags, env=sandbox)
    assert proc.returncode == 1
    assert (
        "baa-conductor.service: BAA_CODEXD_TOKEN_FILE is not set, but codexd "
        "(baa-codexd.service) requires the token in" in proc.stderr
    )
    # Installing both at once is fine: the new conductor carries the token file too.
    proc = run_script("install-launchd.sh", *flags, env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "manager-calls.log").exists()


def test_allowed_origins_are_rendered_checked_and_validated(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    files, _ = render(
        tmp_path / "out",
        "launchd",
        *dir_flags(node_dirs),
        "--codexd-allowed-origins",
        "http://127.0.0.1:8080",
        "--conductor-allowed-origins",
        "http://mini.local:4317, https://ops.example",
        "--status-allowed-origins",
        "http://mini.local:4318",
    )
    envs = {s: plistlib.loads(p.read_bytes())["EnvironmentVariables"] for s, p in files.items()}
    assert envs["codexd"]["BAA_CODEXD_ALLOWED_ORIGINS"] == "http://127.0.0.1:8080"
    assert (
        envs["conductor"]["BAA_CONDUCTOR_ALLOWED_ORIGINS"]
        == "http://mini.local:4317,https://ops.example"
    )
    assert envs["status-api"]["BAA_STATUS_API_ALLOWED_ORIGINS"] == "http://mini.local:4318"
    assert "BAA_CONDUCTOR_ALLOWED_ORIGINS" not in envs["codexd"]
    args = [a for f in files.values() for a in ("--file", str(f))]
    assert run_script("check-launchd.sh", *args, env=sandbox).returncode == 0

    _, proc = render(
        tmp_path / "bad", "systemd", "--codexd-allowed-origins", "http://ok:1,file:///x", expect=2
    )
    assert proc.stderr.strip() == (
        "render.py: --codexd-allowed-origins: 'file:///x' is not an origin like http://host:port"
    )
    # A hand-edited bad origin would stop the daemon from starting: the check names it.
    envs["status-api"]["BAA_STATUS_API_ALLOWED_ORIGINS"] = "http://mini.local:4318/status"
    plist = plistlib.loads(files["status-api"].read_bytes())
    plist["EnvironmentVariables"] = envs["status-api"]
    files["status-api"].write_bytes(plistlib.dumps(plist))
    proc = run_script("check-launchd.sh", "--file", str(files["status-api"]), env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "so.makefile.baa-status-api.plist: BAA_STATUS_API_ALLOWED_ORIGINS: "
        "'http://mini.local:4318/status' is not an origin like http://host:port"
    ]


def _check_node_args(base: str) -> list[str]:
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


def test_check_node_sends_codexd_its_token_and_nobody_else(
    fake_node: tuple[_FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    secret = "c0dexd-token-value"
    node.codexd_token = secret
    token_file = tmp_path / "codexd.token"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o600)
    args = _check_node_args(base)

    proc = run_script("check-node.sh", *args, env=sandbox)
    assert proc.returncode == 1
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1
    assert failures[0].startswith(f"FAIL codexd GET {base}/v1/codexd/status: HTTP 401: ")
    assert failures[0].endswith(
        "(codexd wants its token: set BAA_CODEXD_TOKEN_FILE or pass --codexd-token-file)"
    )

    ways: list[tuple[list[str], dict[str, str], str]] = [
        (["--codexd-token-file", str(token_file)], {}, str(token_file)),
        ([], {"BAA_CODEXD_TOKEN_FILE": str(token_file)}, str(token_file)),
        ([], {"BAA_CODEXD_TOKEN": secret}, "$BAA_CODEXD_TOKEN"),
    ]
    for extra_args, extra_env, source in ways:
        node.authorization.clear()
        proc = run_script("check-node.sh", *args, *extra_args, env={**sandbox, **extra_env})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"child running, token from {source}" in proc.stdout
        assert secret not in proc.stdout + proc.stderr
        assert node.authorization["/v1/codexd/status"] == {f"Bearer {secret}"}
        # The conductor and the status-api never see codexd's token.
        for path in ("/readyz", "/rolez", "/v1/status", "/v1/codex/sessions?limit=1"):
            assert node.authorization[path] == {None}, path

    other = tmp_path / "other.token"
    other.write_text("not-the-token\n")
    other.chmod(0o600)
    proc = run_script("check-node.sh", *args, "--codexd-token-file", str(other), env=sandbox)
    assert proc.returncode == 1
    assert f"(the token from {other} is not codexd's)" in proc.stdout


def test_check_node_sends_the_conductor_its_shared_token_and_nobody_else(
    fake_node: tuple[_FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    # Over a codexd with a token every /v1/codex/* call needs the conductor's shared token
    # (issue 20, item 1): the probe of the conductor's proxy sends it, and only there.
    node, base = fake_node
    secret = "sh4red-token-value"
    node.shared_token = secret
    token_file = tmp_path / "shared.token"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o600)
    args = _check_node_args(base)
    probe = f"conductor GET {base}/v1/codex/sessions?limit=1"

    proc = run_script("check-node.sh", *args, env=sandbox)
    assert proc.returncode == 1
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1, failures
    assert failures[0].startswith(f"FAIL {probe}: HTTP 401: ")
    assert failures[0].endswith(
        "(codexd has a token, so the conductor wants its shared token: set "
        "BAA_SHARED_TOKEN_FILE or pass --shared-token-file)"
    )

    # Where install-launchd.sh puts a systemd user unit for this (sandboxed) HOME.
    unit_dir = tmp_path / "home" / ".config" / "systemd" / "user"
    ways: list[tuple[list[str], dict[str, str], str]] = [
        (["--shared-token-file", str(token_file)], {}, str(token_file)),
        ([], {"BAA_SHARED_TOKEN_FILE": str(token_file)}, str(token_file)),
        ([], {"BAA_SHARED_TOKEN": secret}, "$BAA_SHARED_TOKEN"),
        (["--manager", "systemd"], {}, str(token_file)),
    ]
    for extra_args, extra_env, source in ways:
        if "systemd" in extra_args:
            render(unit_dir, "systemd", "--service", "conductor", "--shared-token-file",
                   str(token_file))
        node.authorization.clear()
        proc = run_script("check-node.sh", *args, *extra_args, env={**sandbox, **extra_env})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"ok   {probe}: codexd answers through the conductor, shared token from " \
            f"{source}\n" in proc.stdout
        assert secret not in proc.stdout + proc.stderr
        assert node.authorization["/v1/codex/sessions?limit=1"] == {f"Bearer {secret}"}
        # codexd, the status-api and the conductor's other probes never see it.
        for path in ("/v1/codexd/status", "/readyz", "/rolez", "/v1/status"):
            assert node.authorization[path] == {None}, path

    other = tmp_path / "other.token"
    other.write_text("not-the-token\n")
    other.chmod(0o600)
    proc = run_script("check-node.sh", *args, "--shared-token-file", str(other), env=sandbox)
    assert proc.returncode == 1
    assert f"(the token from {other} is not the conductor's shared token)" in proc.stdout

    proc = run_script("check-node.sh", *args, "--dry-run", "--shared-token-file",
                      str(token_file), env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert f"{base}/v1/codex/sessions?limit=1 with the token in {token_file}" in proc.stdout


def test_check_node_reads_the_token_file_of_the_installed_codexd(
    fake_node: tuple[_FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    node.codexd_token = "c0dexd-token-value"
    token_file = tmp_path / "codexd.token"
    token_file.write_text("c0dexd-token-value\n")
    token_file.chmod(0o600)
    # Where install-launchd.sh puts a systemd user unit for this (sandboxed) HOME.
    unit_dir = tmp_path / "home" / ".config" / "systemd" / "user"
    render(unit_dir, "systemd", "--service", "codexd", "--codexd-token-file", str(token_file))
    proc = run_script("check-node.sh", *_check_node_args(base), "--manager", "systemd", env=sandbox)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"token from {token_file}" in proc.stdout

    proc = run_script(
        "check-node.sh", *_check_node_args(base), "--manager", "systemd", "--dry-run", env=sandbox
    )
    assert proc.returncode == 0, proc.stderr
    assert f"with the token file named by {unit_dir}/baa-codexd.service, if any" in proc.stdout
    assert "c0dexd" not in proc.stdout


def test_check_node_refuses_a_token_file_others_can_read(
    fake_node: tuple[_FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    _, base = fake_node
    token_file = tmp_path / "codexd.token"
    token_file.write_text("c0dexd-token-value\n")
    token_file.chmod(0o644)
    proc = run_script(
        "check-node.sh",
        *_check_node_args(base),
        env={**sandbox, "BAA_CODEXD_TOKEN_FILE": str(token_file)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"check-node.sh: the codexd token file {token_file} is readable by other users "
        f"(mode 644); run: chmod 600 {token_file}"
    )
    assert "c0dexd" not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- strategy external


class _FakeAppServer:
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


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short folder for unix sockets: a socket path holds at most 103 bytes, which a pytest
    tmp_path can exceed wherever the checkout or TMPDIR is."""
    folder = Path(tempfile.mkdtemp(prefix="baa-rt-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _env_of(path: Path) -> dict[str, str]:
    if path.suffix == ".plist":
        env: dict[str, str] = plistlib.loads(path.read_bytes())["EnvironmentVariables"]
        return env
    return parse_unit(path)[1]


def _program_of(path: Path) -> list[str]:
    if path.suffix == ".plist":
        program: list[str] = plistlib.loads(path.read_bytes())["ProgramArguments"]
        return program
    return shlex.split(parse_unit(path)[0]["ExecStart"])


def _expected_codex_binary() -> Path | None:
    """The native binary codexd would spawn for ``codex`` (the vendored one), when installed."""
    from codexd_trio import codexbin

    vendored = codexbin.vendored_binary(REPO / "vendor" / "codex")
    return vendored if vendored.is_file() else None


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_external_strategy_renders_codexd_env_and_the_app_server_service(
    manager: str,
    tmp_path: Path,
    node_dirs: dict[str, Path],
    sock_dir: Path,
    sandbox: dict[str, str],
) -> None:
    endpoint = f"unix://{sock_dir}/run/app-server.sock"
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    flags = [
        *dir_flags(node_dirs),
        "--server-strategy",
        "external",
        "--server-endpoint",
        endpoint,
        "--codex-home",
        str(codex_home),
    ]
    files, proc = render(tmp_path / "out", manager, *flags, "--external-app-server")
    # The app-server comes first: launchd bootstraps in manifest order.
    assert list(files) == ["codex-app-server", *SERVICES]
    # The socket's folder is one the install creates when missing (codex does not create it).
    assert f"sockdir\t{sock_dir}/run" in proc.stdout.splitlines()
    assert f"dir\t{sock_dir}/run" not in proc.stdout.splitlines()

    codexd = _env_of(files["codexd"])
    assert codexd["BAA_CODEXD_SERVER_STRATEGY"] == "external"
    assert codexd["BAA_CODEXD_SERVER_ENDPOINT"] == endpoint
    # codexd starts nothing with strategy external: no command, arguments, cwd or CODEX_HOME.
    for key in (
        "BAA_CODEXD_SERVER_COMMAND",
        "BAA_CODEXD_SERVER_ARGS",
        "BAA_CODEXD_SERVER_CWD",
        "CODEX_HOME",
    ):
        assert key not in codexd, key

    app = files["codex-app-server"]
    assert app.name == (
        "so.makefile.baa-codex-app-server.plist"
        if manager == "launchd"
        else "baa-codex-app-server.service"
    )
    program = _program_of(app)
    assert program[1:] == ["app-server", "--listen", endpoint]
    assert Path(program[0]).is_absolute()
    expected = _expected_codex_binary()
    if expected is not None:
        assert program[0] == str(expected)  # the native binary, never the npm launcher
    env = _env_of(app)
    assert env["CODEX_HOME"] == str(codex_home)
    assert env["NO_COLOR"] == "1"
    assert env["HOME"] == str(Path.home())
    path = env["PATH"].split(":")
    assert str(REPO / ".venv" / "bin") in path
    resources = Path(program[0]).parent.parent / "codex-resources"
    if resources.is_dir():
        assert path[0] == str(resources)  # codexd puts the bundled bwrap first for its child
    assert not any(k.startswith("BAA_") for k in env)

    if manager == "launchd":
        plist = plistlib.loads(app.read_bytes())
        assert plist["Label"] == "so.makefile.baa-codex-app-server"
        assert plist["WorkingDirectory"] == str(REPO)
        assert plist["RunAtLoad"] is True
        assert plist["KeepAlive"] == {"SuccessfulExit": False}
        assert plist["StandardErrorPath"] == str(
            node_dirs["logs"] / "launchd" / "so.makefile.baa-codex-app-server.err.log"
        )
        assert "@" not in json.dumps(plist).replace("@openai", "")
    else:
        directives, _ = parse_unit(app)
        assert directives["WorkingDirectory"] == str(REPO)
        assert directives["Restart"] == "on-failure"
        assert directives["KillMode"] == "mixed"
        text = files["codexd"].read_text()
        # codexd wants the app-server and starts after it; Wants=, so it outlives its restarts.
        assert "Wants=baa-codex-app-server.service" in text
        assert "After=baa-codex-app-server.service" in text
        assert not any(line.startswith("Requires=") for line in text.splitlines())

    # The checker accepts the rendering; the socket is not there yet (the service is not
    # running), which is a warning on stderr, not a problem.
    (sock_dir / "run").mkdir()
    args = [a for f in files.values() for a in ("--file", str(f))]
    check = run_script("check-launchd.sh", *args, env=sandbox)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok: 4 file(s) checked")
    assert "is installed but not listening" in check.stderr
    # While the app-server listens, there is nothing to say.
    server = _FakeAppServer(sock_dir / "run" / "app-server.sock")
    try:
        check = run_script("check-launchd.sh", *args, env=sandbox)
    finally:
        server.stop()
    assert check.returncode == 0, check.stdout
    assert check.stderr == ""

    # Without --external-app-server only codexd changes: no app-server service is rendered.
    plain, _ = render(tmp_path / "plain", manager, *flags)
    assert list(plain) == list(SERVICES)
    assert _env_of(plain["codexd"])["BAA_CODEXD_SERVER_ENDPOINT"] == endpoint
    assert "codex-app-server" not in plain["codexd"].read_text()


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_spawn_stays_the_default(manager: str, tmp_path: Path) -> None:
    files, _ = render(tmp_path / "out", manager, "--service", "codexd")
    env = _env_of(files["codexd"])
    assert env["BAA_CODEXD_SERVER_STRATEGY"] == "spawn"
    assert env["BAA_CODEXD_SERVER_ENDPOINT"] == "stdio"
    assert env["BAA_CODEXD_SERVER_COMMAND"] == "codex"
    assert "codex-app-server" not in files["codexd"].read_text()
    files, _ = render(
        tmp_path / "named", manager, "--service", "codexd", "--server-endpoint", "stdio://codex"
    )
    assert _env_of(files["codexd"])["BAA_CODEXD_SERVER_ENDPOINT"] == "stdio://codex"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--server-strategy", "attach"], "--server-strategy must be spawn or external"),
        (["--server-strategy", "external"], "strategy external needs --server-endpoint"),
        (
            ["--server-strategy", "external", "--server-endpoint", "unix://relative.sock"],
            "a unix endpoint needs an absolute path",
        ),
        (
            ["--server-strategy", "external", "--server-endpoint", "ws://192.168.1.20:4400"],
            "an external ws:// endpoint must be on loopback",
        ),
        (
            ["--server-strategy", "external", "--server-endpoint", "ws://127.0.0.1"],
            "a ws endpoint needs a host and a port",
        ),
        (
            ["--server-strategy", "external", "--server-endpoint", "http://127.0.0.1:4400"],
            "an external endpoint is unix:///path/to/socket or ws://127.0.0.1:PORT",
        ),
        (
            ["--server-strategy", "external", "--server-endpoint", "unix:///" + "s" * 120],
            "a unix socket path holds at most 103",
        ),
        (
            ["--server-endpoint", "unix:///tmp/app.sock"],
            "is not supported with strategy spawn (use stdio or stdio://NAME, "
            "or --server-strategy external)",
        ),
        (["--external-app-server"], "needs --server-strategy external and --server-endpoint"),
        (
            [
                "--server-strategy",
                "external",
                "--server-endpoint",
                "ws://localhost:4400",
                "--external-app-server",
            ],
            "codex app-server --listen needs ws://IP:PORT, not a host name",
        ),
        (
            [
                "--server-strategy",
                "external",
                "--server-endpoint",
                "unix:///tmp/app.sock",
                "--external-app-server",
                "--server-arg=--listen",
            ],
            "--server-arg must not carry --listen",
        ),
    ],
)
@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_bad_server_strategy_or_endpoint_is_one_line_and_status_2(
    tmp_path: Path, manager: str, flags: list[str], message: str
) -> None:
    files, proc = render(tmp_path / "out", manager, *flags, expect=2)
    assert files == {}
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("render.py: ")
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_install_passes_the_strategy_flags_and_installs_the_app_server_first(
    sandbox: dict[str, str], tmp_path: Path, node_dirs: dict[str, Path], sock_dir: Path
) -> None:
    endpoint = f"unix://{sock_dir}/app-server.sock"
    flags = [*dir_flags(node_dirs), "--server-strategy", "external", "--server-endpoint", endpoint]
    proc = run_script(
        "install-launchd.sh",
        "--dry-run",
        "--manager",
        "systemd",
        *flags,
        "--external-app-server",
        env=sandbox,
    )
    assert proc.returncode == 0, proc.stderr
    units = tmp_path / "home" / ".config" / "systemd" / "user"
    assert f"would write {units}/baa-codex-app-server.service" in proc.stdout
    assert f"--listen {endpoint}" in proc.stdout
    assert (
        "would run: systemctl --user enable baa-codex-app-server.service baa-codexd.service "
        "baa-conductor.service baa-status-api.service" in proc.stdout
    )
    # The install is about to create the socket's folder and start the app-server: no warning.
    assert "warning" not in proc.stderr
    uid = os.getuid()
    proc = run_script(
        "install-launchd.sh",
        "--dry-run",
        "--manager",
        "launchd",
        *flags,
        "--external-app-server",
        env=sandbox,
    )
    assert proc.returncode == 0, proc.stderr
    bootstraps = [line for line in proc.stdout.splitlines() if "launchctl bootstrap" in line]
    assert [line.rsplit("/", 1)[1] for line in bootstraps] == [
        f"so.makefile.baa-{s}.plist" for s in ("codex-app-server", *SERVICES)
    ]
    assert bootstraps[0].startswith(f"would run: launchctl bootstrap gui/{uid} ")
    # --user owns the socket's folder when the install creates it, never a folder that exists.
    for folder, created in ((sock_dir, False), (sock_dir / "new", True)):
        proc = run_script(
            "install-launchd.sh",
            "--dry-run",
            "--manager",
            "systemd",
            "--scope",
            "daemon",
            "--user",
            "baa",
            "--install-dir",
            str(tmp_path / "system"),
            *dir_flags(node_dirs),
            "--server-strategy",
            "external",
            "--server-endpoint",
            f"unix://{folder}/app-server.sock",
            "--external-app-server",
            env=sandbox,
        )
        assert proc.returncode == 0, proc.stderr
        assert (f"would run: chown baa {folder}\n" in proc.stdout) is created
        assert (f"would run: mkdir -p {folder}\n" in proc.stdout) is created
    # A bad endpoint through the script: its own name, one line, status 2.
    proc = run_script(
        "install-launchd.sh",
        "--dry-run",
        "--server-strategy",
        "external",
        "--server-endpoint",
        "ws://10.1.2.3:4400",
        env=sandbox,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "install-launchd.sh: an external ws:// endpoint must be on loopback, "
        "got 'ws://10.1.2.3:4400'"
    )
    assert not (tmp_path / "manager-calls.log").exists()


def test_check_catches_external_endpoints_nothing_serves(
    tmp_path: Path, node_dirs: dict[str, Path], sock_dir: Path, sandbox: dict[str, str]
) -> None:
    endpoint = f"unix://{sock_dir}/app-server.sock"
    flags = [*dir_flags(node_dirs), "--server-strategy", "external", "--server-endpoint", endpoint]
    files, _ = render(tmp_path / "codex-daemon", "launchd", "--service", "codexd", *flags)
    # Codex's own daemon (or a typo): nothing is meant to create the socket here, so a missing
    # one is a problem.
    proc = run_script("check-launchd.sh", "--file", str(files["codexd"]), env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"so.makefile.baa-codexd.plist: nothing listens at {endpoint}: {sock_dir}/app-server.sock "
        "does not exist (start Codex's daemon, 'codex app-server daemon start', and use its "
        "socketPath; or render the app-server service with --external-app-server)"
    ]
    server = _FakeAppServer(sock_dir / "app-server.sock")
    try:
        proc = run_script("check-launchd.sh", "--file", str(files["codexd"]), env=sandbox)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout

    # codexd and the app-server service disagree on the endpoint.
    both, _ = render(tmp_path / "both", "systemd", *flags, "--external-app-server")
    other = f"unix://{sock_dir}/other.sock"
    unit = both["codexd"]
    unit.write_text(unit.read_text().replace(endpoint, other))
    args = [a for f in both.values() for a in ("--file", str(f))]
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert (
        f"baa-codexd.service: codexd attaches to {other}, but baa-codex-app-server.service "
        f"listens on {endpoint}: render both with the same --server-endpoint"
    ) in proc.stdout.splitlines()

    # A hand-edited strategy codexd refuses is named too (codexd would restart-loop on exit 2).
    unit.write_text(unit.read_text().replace("STRATEGY=external", "STRATEGY=attach"))
    proc = run_script("check-launchd.sh", "--file", str(unit), env=sandbox)
    assert proc.returncode == 1
    assert (
        "baa-codexd.service: BAA_CODEXD_SERVER_STRATEGY=attach: server strategy 'attach' is "
        "not supported (use spawn or external)"
    ) in proc.stdout.splitlines()


def test_installed_app_server_joins_the_default_selection(
    tmp_path: Path, node_dirs: dict[str, Path], sock_dir: Path, sandbox: dict[str, str]
) -> None:
    units = tmp_path / "home" / ".config" / "systemd" / "user"
    endpoint = f"unix://{sock_dir}/app-server.sock"
    render(
        units,
        "systemd",
        *dir_flags(node_dirs),
        "--server-strategy",
        "external",
        "--server-endpoint",
        endpoint,
        "--external-app-server",
    )
    proc = run_script("check-launchd.sh", "--manager", "systemd", env=sandbox)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("ok: 4 file(s) checked")
    assert "baa-codex-app-server.service is installed but not listening" in proc.stderr
    proc = run_script("status-launchd.sh", "--manager", "systemd", "--dry-run", env=sandbox)
    assert proc.returncode == 0, proc.stderr
    shown = [line.split()[5] for line in proc.stdout.splitlines()]
    assert shown == [f"baa-{s}.service" for s in ("codex-app-server", *SERVICES)]
    proc = run_script("restart-launchd.sh", "--manager", "systemd", "--dry-run", env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert (
        "would run: systemctl --user restart baa-codex-app-server.service baa-codexd.service"
        in proc.stdout
    )
    # An explicit selection is what it says.
    proc = run_script(
        "status-launchd.sh", "--manager", "systemd", "--dry-run", "--service", "codexd", env=sandbox
    )
    assert "codex-app-server" not in proc.stdout
    # Going back to spawn leaves the service installed: the install says so.
    proc = run_script(
        "install-launchd.sh",
        "--dry-run",
        "--manager",
        "systemd",
        *dir_flags(node_dirs),
        env=sandbox,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"note: {units}/baa-codex-app-server.service is still installed" in proc.stdout
    assert not (tmp_path / "manager-calls.log").exists()


def test_external_units_pass_systemd_analyze_verify(
    tmp_path: Path, node_dirs: dict[str, Path], sock_dir: Path
) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    units, _ = render(
        tmp_path / "units",
        "systemd",
        *dir_flags(node_dirs),
        "--server-strategy",
        "external",
        "--server-endpoint",
        f"unix://{sock_dir}/app-server.sock",
        "--external-app-server",
    )
    proc = subprocess.run(
        [analyze, "verify", *map(str, units.values())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 and "Failed to initialize manager" in output:
        pytest.skip(f"systemd-analyze cannot run here: {output}")
    assert proc.returncode == 0, output
    assert output == ""


def test_check_node_reports_an_external_child(
    fake_node: tuple[_FakeNode, str], tmp_path: Path, sock_dir: Path, sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    sock = sock_dir / "app-server.sock"
    endpoint = f"unix://{sock}"
    node.strategy, node.endpoint = "external", endpoint
    server = _FakeAppServer(sock)
    args = _check_node_args(base)
    try:
        proc = run_script("check-node.sh", *args, env=sandbox)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        probes = proc.stdout.splitlines()[1:]
        assert len(probes) == 12  # one more than with spawn: the endpoint
        assert (
            f"ok   codexd GET {base}/v1/codexd/status: child running (strategy external, "
            f"{endpoint})"
        ) in probes
        assert f"ok   app-server {endpoint}: answers a WebSocket upgrade" in probes
        assert server.upgrades == 1

        # What the operator expects wins over what codexd says.
        proc = run_script(
            "check-node.sh",
            *args,
            "--server-endpoint",
            f"unix://{sock_dir}/other.sock",
            env=sandbox,
        )
        assert proc.returncode == 1
        failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
        assert failures[0] == (
            f"FAIL codexd GET {base}/v1/codexd/status: codexd attaches to {endpoint}, expected "
            f"unix://{sock_dir}/other.sock (--server-endpoint)"
        )
        node.strategy, node.endpoint = "spawn", None
        proc = run_script("check-node.sh", *args, "--server-strategy", "external", env=sandbox)
        assert proc.returncode == 2  # external without an endpoint is bad usage
        assert proc.stderr.strip() == (
            "check-node.sh: strategy external needs --server-endpoint unix:///path/to/socket "
            "or ws://127.0.0.1:PORT"
        )
        proc = run_script("check-node.sh", *args, "--server-endpoint", endpoint, env=sandbox)
        assert proc.returncode == 1
        assert (
            f"FAIL codexd GET {base}/v1/codexd/status: codexd's app-server strategy is 'spawn', "
            "expected 'external' (--server-endpoint)"
        ) in proc.stdout.splitlines()
        # The endpoint is probed even so: the app-server itself is fine.
        assert f"ok   app-server {endpoint}: answers a WebSocket upgrade" in proc.stdout
    finally:
        # A killed app-server leaves its socket behind: nothing accepts connections on it.
        server.stop(unlink=False)

    node.strategy, node.endpoint = "external", endpoint
    node.child_state, node.last_error = "restarting", "ChildSpawnError: cannot connect"
    proc = run_script("check-node.sh", *args, env=sandbox)
    assert proc.returncode == 1
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    hint = "start the app-server ('codex app-server daemon start', or install-launchd.sh "
    assert failures == [
        f"FAIL codexd GET {base}/v1/codexd/status: app-server child state is 'restarting', not "
        f"'running' (strategy external, {endpoint}; last error: ChildSpawnError: cannot connect)",
        f"FAIL app-server {endpoint}: nothing accepts connections (Connection refused); {hint}"
        "--external-app-server)",
    ]

    # The installed files say what to expect, and the missing socket's hint names the service.
    sock.unlink()
    units = tmp_path / "home" / ".config" / "systemd" / "user"
    render(
        units,
        "systemd",
        "--server-strategy",
        "external",
        "--server-endpoint",
        endpoint,
        "--external-app-server",
        "--service",
        "codexd",
    )
    node.strategy, node.endpoint, node.child_state = "spawn", None, "running"
    proc = run_script("check-node.sh", *args, "--manager", "systemd", env=sandbox)
    assert proc.returncode == 1
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert failures == [
        f"FAIL codexd GET {base}/v1/codexd/status: codexd's app-server strategy is 'spawn', "
        f"expected 'external' (from {units}/baa-codexd.service)",
        f"FAIL app-server {endpoint}: {sock} does not exist; the app-server service "
        f"{units}/baa-codex-app-server.service is installed but not listening: is it running? "
        "(scripts/runtime/status-launchd.sh --service codex-app-server; "
        f"{REPO}/var/logs/systemd/baa-codex-app-server.err.log)",
    ]
    # With its logs checked, the app-server's two log files are among them.
    proc = run_script(
        "check-node.sh",
        *[a for a in args if a != "--skip-logs"],
        "--manager",
        "systemd",
        "--logs-dir",
        str(tmp_path / "logs"),
        env=sandbox,
    )
    assert f"FAIL systemd log {tmp_path}/logs/systemd/baa-codex-app-server.err.log: missing" in (
        proc.stdout.splitlines()
    )
    proc = run_script("check-node.sh", *args, "--manager", "systemd", "--dry-run", env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert "would probe: app-server endpoint, if the installed codexd file" in proc.stdout


def test_check_node_probes_a_ws_endpoint(
    fake_node: tuple[_FakeNode, str], sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    server = _FakeAppServer()
    node.strategy, node.endpoint = "external", server.endpoint
    try:
        proc = run_script("check-node.sh", *_check_node_args(base), env=sandbox)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok   app-server {server.endpoint}: answers a WebSocket upgrade" in proc.stdout
    proc = run_script("check-node.sh", *_check_node_args(base), env=sandbox)
    assert proc.returncode == 1
    assert f"FAIL app-server {server.endpoint}: nothing accepts connections" in proc.stdout


def test_an_installed_app_server_left_over_is_a_warning(
    tmp_path: Path, node_dirs: dict[str, Path], sock_dir: Path, sandbox: dict[str, str]
) -> None:
    units = tmp_path / "home" / ".config" / "systemd" / "user"
    render(
        units,
        "systemd",
        "--server-strategy",
        "external",
        "--server-endpoint",
        f"unix://{sock_dir}/ours.sock",
        "--external-app-server",
        "--service",
        "codex-app-server",
    )
    # Now Codex's own daemon, on another socket: the old service is in the way, not wrong.
    server = _FakeAppServer(sock_dir / "daemon.sock")
    try:
        proc = run_script(
            "install-launchd.sh",
            "--dry-run",
            "--manager",
            "systemd",
            *dir_flags(node_dirs),
            "--server-strategy",
            "external",
            "--server-endpoint",
            server.endpoint,
            env=sandbox,
        )
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        f"warning: baa-codex-app-server.service (installed) listens on unix://{sock_dir}/ours.sock,"
        f" but codexd (baa-codexd.service) attaches to {server.endpoint}: remove it if nothing "
        "else uses it"
    ) in proc.stderr.splitlines()
    assert f"note: {units}/baa-codex-app-server.service is still installed" in proc.stdout


def test_render_runs_on_the_standard_library_alone(tmp_path: Path, sock_dir: Path) -> None:
    # The scripts run render.py before .venv exists; it loads codexd_trio/codexbin.py to find
    # the native binary, so both must stay standard library only (-S: no site-packages).
    proc = subprocess.run(
        [
            sys.executable,
            "-S",
            str(RENDER),
            "render",
            "--manager",
            "systemd",
            "--out-dir",
            str(tmp_path / "out"),
            "--server-strategy",
            "external",
            "--server-endpoint",
            f"unix://{sock_dir}/app-server.sock",
            "--external-app-server",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "baa-codex-app-server.service").is_file()
