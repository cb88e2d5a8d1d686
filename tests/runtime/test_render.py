"""Rendering: launchd plists and systemd units from one configuration (baa_runtime.config and
baa_runtime.render), each daemon's environment, tokens by file only, allowed origins.
"""

from __future__ import annotations

import json
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.support import (
    MODULES,
    RENDER,
    REPO,
    SERVICES,
    dir_flags,
    parse_unit,
    render,
    run_script,
)


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


def test_render_runs_on_the_standard_library_alone(tmp_path: Path, sock_dir: Path) -> None:
    # The scripts run render.py before .venv exists; it loads codexd_trio/base/codexbin.py to find
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


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_the_notification_urls_file_reaches_the_conductor_only(
    manager: str, tmp_path: Path, node_dirs: dict[str, Path]
) -> None:
    # Issue 25: the sinks' URLs hold secrets, so they travel as a file (mode 600), like tokens.
    urls = tmp_path / "notify-urls"
    urls.write_text("ntfys://ntfy.sh/a-secret-topic\n")
    urls.chmod(0o600)
    files, _ = render(tmp_path / "out", manager, *dir_flags(node_dirs), "--notify-urls-file",
                      str(urls), "--public-api-base", "https://mini.tail1234.ts.net")
    for service, path in files.items():
        env = (plistlib.loads(path.read_bytes())["EnvironmentVariables"]
               if manager == "launchd" else parse_unit(path)[1])
        assert ("BAA_NOTIFY_URLS_FILE" in env) == (service == "conductor"), service
        assert "a-secret-topic" not in path.read_text()
    conductor = files["conductor"]
    env = (plistlib.loads(conductor.read_bytes())["EnvironmentVariables"]
           if manager == "launchd" else parse_unit(conductor)[1])
    assert env["BAA_NOTIFY_URLS_FILE"] == str(urls)
    assert env["BAA_CONDUCTOR_PUBLIC_API_BASE"] == "https://mini.tail1234.ts.net"
