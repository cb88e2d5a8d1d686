"""Probes of a running node (check-node.sh; baa_runtime.probe): health, tokens sent to whom,
an external app-server child and its websocket endpoint.
"""

from __future__ import annotations

from pathlib import Path

from tests.runtime.support import (
    REPO,
    SERVICES,
    FakeAppServer,
    FakeNode,
    check_node_args,
    dir_flags,
    render,
    run_script,
)


def test_check_node_passes_on_a_healthy_node_and_names_each_failure(
    fake_node: tuple[FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
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


def test_check_node_sends_codexd_its_token_and_nobody_else(
    fake_node: tuple[FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    secret = "c0dexd-token-value"
    node.codexd_token = secret
    token_file = tmp_path / "codexd.token"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o600)
    args = check_node_args(base)

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
    fake_node: tuple[FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    # Over a codexd with a token every /v1/codex/* call needs the conductor's shared token
    # (issue 20, item 1): the probe of the conductor's proxy sends it, and only there.
    node, base = fake_node
    secret = "sh4red-token-value"
    node.shared_token = secret
    token_file = tmp_path / "shared.token"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o600)
    args = check_node_args(base)
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
    fake_node: tuple[FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    node.codexd_token = "c0dexd-token-value"
    token_file = tmp_path / "codexd.token"
    token_file.write_text("c0dexd-token-value\n")
    token_file.chmod(0o600)
    # Where install-launchd.sh puts a systemd user unit for this (sandboxed) HOME.
    unit_dir = tmp_path / "home" / ".config" / "systemd" / "user"
    render(unit_dir, "systemd", "--service", "codexd", "--codexd-token-file", str(token_file))
    proc = run_script("check-node.sh", *check_node_args(base), "--manager", "systemd", env=sandbox)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"token from {token_file}" in proc.stdout

    proc = run_script(
        "check-node.sh", *check_node_args(base), "--manager", "systemd", "--dry-run", env=sandbox
    )
    assert proc.returncode == 0, proc.stderr
    assert f"with the token file named by {unit_dir}/baa-codexd.service, if any" in proc.stdout
    assert "c0dexd" not in proc.stdout


def test_check_node_refuses_a_token_file_others_can_read(
    fake_node: tuple[FakeNode, str], tmp_path: Path, sandbox: dict[str, str]
) -> None:
    _, base = fake_node
    token_file = tmp_path / "codexd.token"
    token_file.write_text("c0dexd-token-value\n")
    token_file.chmod(0o644)
    proc = run_script(
        "check-node.sh",
        *check_node_args(base),
        env={**sandbox, "BAA_CODEXD_TOKEN_FILE": str(token_file)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"check-node.sh: the codexd token file {token_file} is readable by other users "
        f"(mode 644); run: chmod 600 {token_file}"
    )
    assert "c0dexd" not in proc.stdout + proc.stderr


def test_check_node_reports_an_external_child(
    fake_node: tuple[FakeNode, str], tmp_path: Path, sock_dir: Path, sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    sock = sock_dir / "app-server.sock"
    endpoint = f"unix://{sock}"
    node.strategy, node.endpoint = "external", endpoint
    server = FakeAppServer(sock)
    args = check_node_args(base)
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
    fake_node: tuple[FakeNode, str], sandbox: dict[str, str]
) -> None:
    node, base = fake_node
    server = FakeAppServer()
    node.strategy, node.endpoint = "external", server.endpoint
    try:
        proc = run_script("check-node.sh", *check_node_args(base), env=sandbox)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok   app-server {server.endpoint}: answers a WebSocket upgrade" in proc.stdout
    proc = run_script("check-node.sh", *check_node_args(base), env=sandbox)
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
    server = FakeAppServer(sock_dir / "daemon.sock")
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
