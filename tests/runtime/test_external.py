"""Strategy external: codexd attaching to one long-lived codex app-server service, rendered,
installed and checked beside the three daemons.
"""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.runtime.support import (
    REPO,
    SERVICES,
    FakeAppServer,
    dir_flags,
    env_of,
    expected_codex_binary,
    parse_unit,
    program_of,
    render,
    run_script,
)


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

    codexd = env_of(files["codexd"])
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
    program = program_of(app)
    assert program[1:] == ["app-server", "--listen", endpoint]
    assert Path(program[0]).is_absolute()
    expected = expected_codex_binary()
    if expected is not None:
        assert program[0] == str(expected)  # the native binary, never the npm launcher
    env = env_of(app)
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
    server = FakeAppServer(sock_dir / "run" / "app-server.sock")
    try:
        check = run_script("check-launchd.sh", *args, env=sandbox)
    finally:
        server.stop()
    assert check.returncode == 0, check.stdout
    assert check.stderr == ""

    # Without --external-app-server only codexd changes: no app-server service is rendered.
    plain, _ = render(tmp_path / "plain", manager, *flags)
    assert list(plain) == list(SERVICES)
    assert env_of(plain["codexd"])["BAA_CODEXD_SERVER_ENDPOINT"] == endpoint
    assert "codex-app-server" not in plain["codexd"].read_text()


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_spawn_stays_the_default(manager: str, tmp_path: Path) -> None:
    files, _ = render(tmp_path / "out", manager, "--service", "codexd")
    env = env_of(files["codexd"])
    assert env["BAA_CODEXD_SERVER_STRATEGY"] == "spawn"
    assert env["BAA_CODEXD_SERVER_ENDPOINT"] == "stdio"
    assert env["BAA_CODEXD_SERVER_COMMAND"] == "codex"
    assert "codex-app-server" not in files["codexd"].read_text()
    files, _ = render(
        tmp_path / "named", manager, "--service", "codexd", "--server-endpoint", "stdio://codex"
    )
    assert env_of(files["codexd"])["BAA_CODEXD_SERVER_ENDPOINT"] == "stdio://codex"


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
    server = FakeAppServer(sock_dir / "app-server.sock")
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
