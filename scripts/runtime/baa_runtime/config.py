"""The one configuration the runtime files are rendered from: the flags, their checks, and each
service's environment and template values.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from baa_runtime.common import (
    APP_SERVER,
    DEFAULT_CODEXD_BASE,
    DEFAULT_CONDUCTOR_API,
    DEFAULT_EVENT_STREAM_PATH,
    DEFAULT_GRACE_S,
    DEFAULT_STATUS_API,
    DEFAULT_THROTTLE_S,
    KNOWN_SERVICES,
    MIN_EXIT_TIMEOUT_S,
    SCRIPT_REPO,
    SERVICES,
    STRATEGIES,
    SYSTEM_PATH,
    TOKEN_VARS,
    UsageError,
    _abs,
    app_server_binary,
    check_listen_endpoint,
    check_spawn_endpoint,
    is_loopback,
    label,
    listen_problem,
    origins_value,
    parse_external_endpoint,
    split_base,
    unit_name,
)

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything a rendered plist or unit depends on, resolved and validated."""

    manager: str
    scope: str
    repo_dir: Path
    home_dir: Path
    python: Path
    node_id: str
    conductor_host: str
    logs_dir: Path
    state_dir: Path
    codexd_api_base: str
    conductor_api: str
    status_api: str
    conductor_role: str
    allowed_hosts: str
    status_allowed_hosts: str
    public_api_base: str
    shared_token_file: str
    codexd_token_file: str
    # Issue 25: the conductor's notification sinks (one Apprise URL a line; mode 600).
    notify_urls_file: str
    codexd_allowed_origins: str
    conductor_allowed_origins: str
    status_allowed_origins: str
    event_stream_path: str
    server_strategy: str
    server_endpoint: str
    server_command: str
    server_args: tuple[str, ...]
    server_cwd: str
    codex_home: str
    shutdown_grace_s: int
    exit_timeout_s: int
    throttle_interval_s: int
    user: str
    env_file: str
    extra_env: tuple[tuple[str, str], ...]
    services: tuple[str, ...] = field(default=SERVICES)
    # --external-app-server: render the codex-app-server service too (strategy external only).
    external_app_server: bool = False
    # That service's binary (resolved like codexd's --server-command) and the folder of its
    # bundled helpers (bwrap), which codexd puts first on its child's PATH; empty otherwise.
    app_server_binary: str = ""
    app_server_resources: str = ""

    @property
    def manager_logs_dir(self) -> Path:
        return self.logs_dir / self.manager

    @property
    def app_server_argv(self) -> list[str]:
        """``<codex> <server args> --listen <endpoint>``: what codexd would spawn, listening."""
        return [self.app_server_binary, *self.server_args, "--listen", self.server_endpoint]

    @property
    def socket_dir(self) -> Path | None:
        """The folder of the app-server's unix socket, when this render creates the service."""
        if not self.external_app_server:
            return None
        kind, path, _ = parse_external_endpoint(self.server_endpoint)
        return Path(path).parent if kind == "unix" else None




def _int(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be a whole number of seconds, got {raw!r}") from None
    if value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value}")
    return value


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manager", choices=("launchd", "systemd"), default=None)
    p.add_argument("--scope", choices=("agent", "daemon"), default="agent")
    p.add_argument("--service", action="append", dest="services", choices=KNOWN_SERVICES)
    p.add_argument("--all-services", action="store_true")
    p.add_argument("--repo-dir")
    p.add_argument("--home-dir")
    p.add_argument("--python")
    p.add_argument("--node")
    p.add_argument("--node-id")
    p.add_argument("--conductor-host")
    p.add_argument("--logs-dir")
    p.add_argument("--state-dir")
    p.add_argument("--codexd-api-base")
    p.add_argument("--conductor-api")
    p.add_argument("--status-api")
    p.add_argument("--conductor-role")
    p.add_argument("--allowed-hosts")
    p.add_argument("--status-allowed-hosts")
    p.add_argument("--public-api-base")
    p.add_argument("--shared-token-file")
    p.add_argument("--notify-urls-file")
    p.add_argument("--codexd-token-file")
    p.add_argument("--codexd-allowed-origins")
    p.add_argument("--conductor-allowed-origins")
    p.add_argument("--status-allowed-origins")
    p.add_argument("--event-stream-path")
    p.add_argument("--server-strategy")
    p.add_argument("--server-endpoint")
    p.add_argument("--external-app-server", action="store_true")
    p.add_argument("--server-command")
    p.add_argument("--server-arg", action="append", dest="server_args")
    p.add_argument("--server-cwd")
    p.add_argument("--codex-home")
    p.add_argument("--shutdown-grace")
    p.add_argument("--exit-timeout")
    p.add_argument("--throttle-interval")
    p.add_argument("--user")
    p.add_argument("--env-file")
    p.add_argument("--setenv", action="append", default=[], metavar="KEY=VALUE")


def default_manager() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def resolve_config(ns: argparse.Namespace) -> RuntimeConfig:
    """Turn parsed flags into a validated :class:`RuntimeConfig` (raises :class:`UsageError`)."""
    repo = _abs(ns.repo_dir) if ns.repo_dir else SCRIPT_REPO
    home = _abs(ns.home_dir) if ns.home_dir else Path(os.path.expanduser("~"))
    node = ns.node or ""
    node_id = ns.node_id or (f"{node}-main" if node else "mini-main")
    if not node_id.strip() or any(c.isspace() for c in node_id):
        raise UsageError(f"node id must be one word, got {node_id!r}")
    host = ns.conductor_host or node
    codexd_base = (ns.codexd_api_base or DEFAULT_CODEXD_BASE).rstrip("/")
    codexd_host, _ = split_base("--codexd-api-base", codexd_base)
    if not is_loopback(codexd_host):
        raise UsageError(
            f"codexd only listens on loopback (127.0.0.0/8, ::1, localhost); "
            f"--codexd-api-base host is {codexd_host!r}"
        )
    conductor_api = (ns.conductor_api or DEFAULT_CONDUCTOR_API).rstrip("/")
    status_api = (ns.status_api or DEFAULT_STATUS_API).rstrip("/")
    for problem in (
        listen_problem("--conductor-api", conductor_api, "--allowed-hosts", ns.allowed_hosts or ""),
        listen_problem(
            "--status-api", status_api, "--status-allowed-hosts", ns.status_allowed_hosts or ""
        ),
    ):
        if problem:
            raise UsageError(problem)
    public = (ns.public_api_base or "").rstrip("/")
    if public and urlsplit(public).scheme not in ("http", "https"):
        raise UsageError(f"--public-api-base must be an http(s) URL, got {public!r}")
    role = ns.conductor_role or "primary"
    if role not in ("primary", "standby"):
        raise UsageError(f"--conductor-role must be primary or standby, got {role!r}")
    stream = ns.event_stream_path or DEFAULT_EVENT_STREAM_PATH
    if not stream.startswith("/") or any(c.isspace() for c in stream) or "?" in stream:
        raise UsageError(f"--event-stream-path must be a path starting with '/', got {stream!r}")
    server_args = tuple(ns.server_args or ("app-server",))
    for arg in server_args:
        # codexd reads BAA_CODEXD_SERVER_ARGS split on whitespace.
        if not arg or any(c.isspace() for c in arg):
            raise UsageError(f"--server-arg values must be single words, got {arg!r}")
    strategy = ns.server_strategy or "spawn"
    if strategy not in STRATEGIES:
        raise UsageError(f"--server-strategy must be spawn or external, got {strategy!r}")
    if strategy == "spawn":
        endpoint = ns.server_endpoint or "stdio"
        check_spawn_endpoint(endpoint)
    else:
        endpoint = ns.server_endpoint or ""
        parse_external_endpoint(endpoint)
    external_app_server = bool(ns.external_app_server) or APP_SERVER in (ns.services or ())
    if external_app_server:
        if strategy != "external":
            raise UsageError(
                f"the {APP_SERVER} service (--external-app-server) needs --server-strategy "
                "external and --server-endpoint (it listens where codexd attaches)"
            )
        check_listen_endpoint(endpoint)
        if any(arg == "--listen" or arg.startswith("--listen=") for arg in server_args):
            raise UsageError(
                "--server-arg must not carry --listen: the app-server listens on --server-endpoint"
            )
        if "app-server" not in server_args:
            raise UsageError(
                f"--server-arg values must include 'app-server', got {' '.join(server_args)!r}"
            )
    grace = _int("--shutdown-grace", ns.shutdown_grace or str(DEFAULT_GRACE_S), 0)
    exit_timeout = _int(
        "--exit-timeout", ns.exit_timeout or str(max(MIN_EXIT_TIMEOUT_S, 2 * grace)), 1
    )
    if exit_timeout <= grace:
        raise UsageError(
            f"--exit-timeout ({exit_timeout}s) must be longer than codexd's shutdown grace "
            f"({grace}s), or the service manager kills codexd mid-shutdown"
        )
    throttle = _int("--throttle-interval", ns.throttle_interval or str(DEFAULT_THROTTLE_S), 1)
    if ns.user and ns.scope != "daemon":
        raise UsageError("--user only applies to --scope daemon (agents run as their user)")
    extra: list[tuple[str, str]] = []
    for item in ns.setenv:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(f"--setenv needs KEY=VALUE, got {item!r}")
        if key in TOKEN_VARS:
            # Service files are world-readable (launchd wants 644); a token in one is no secret.
            raise UsageError(
                f"refusing to write {key} into a service file; use {TOKEN_VARS[key][1]}"
            )
        extra.append((key, value))
    services = (
        SERVICES
        if ns.all_services or not ns.services
        else tuple(s for s in SERVICES if s in ns.services)
    )
    if external_app_server:
        services = (APP_SERVER, *services)
    venv_path = f"{repo / '.venv' / 'bin'}:{SYSTEM_PATH}"
    binary = resources = ""
    if external_app_server:
        found = app_server_binary(ns.server_command or "codex", repo, venv_path, dict(extra))
        binary = str(found)
        bundled = found.parent.parent / "codex-resources"  # codexbin.bundled_resource_dir
        resources = str(bundled) if bundled.is_dir() else ""
    config = RuntimeConfig(
        manager=ns.manager or default_manager(),
        scope=ns.scope,
        repo_dir=repo,
        home_dir=home,
        python=_abs(ns.python) if ns.python else repo / ".venv" / "bin" / "python",
        node_id=node_id,
        conductor_host=host,
        logs_dir=_abs(ns.logs_dir) if ns.logs_dir else repo / "var" / "logs",
        state_dir=_abs(ns.state_dir) if ns.state_dir else repo / "var" / "state",
        codexd_api_base=codexd_base,
        conductor_api=conductor_api,
        status_api=status_api,
        conductor_role=role,
        allowed_hosts=ns.allowed_hosts or "",
        status_allowed_hosts=ns.status_allowed_hosts or "",
        public_api_base=public,
        shared_token_file=str(_abs(ns.shared_token_file)) if ns.shared_token_file else "",
        codexd_token_file=str(_abs(ns.codexd_token_file)) if ns.codexd_token_file else "",
        notify_urls_file=str(_abs(ns.notify_urls_file)) if ns.notify_urls_file else "",
        codexd_allowed_origins=origins_value(
            "--codexd-allowed-origins", ns.codexd_allowed_origins or ""
        ),
        conductor_allowed_origins=origins_value(
            "--conductor-allowed-origins", ns.conductor_allowed_origins or ""
        ),
        status_allowed_origins=origins_value(
            "--status-allowed-origins", ns.status_allowed_origins or ""
        ),
        event_stream_path=stream,
        server_strategy=strategy,
        server_endpoint=endpoint,
        server_command=ns.server_command or "codex",
        server_args=server_args,
        server_cwd=str(_abs(ns.server_cwd)) if ns.server_cwd else "",
        codex_home=str(_abs(ns.codex_home)) if ns.codex_home else "",
        shutdown_grace_s=grace,
        exit_timeout_s=exit_timeout,
        throttle_interval_s=throttle,
        user=ns.user or "",
        env_file=str(_abs(ns.env_file)) if ns.env_file else "",
        extra_env=tuple(extra),
        services=services,
        external_app_server=external_app_server,
        app_server_binary=binary,
        app_server_resources=resources,
    )
    values: list[tuple[str, object]] = list(template_values(config, "codexd").items())
    for service in config.services:
        values.extend(service_environment(config, service).items())
    if external_app_server:
        values.extend(("app-server argument", arg) for arg in config.app_server_argv)
    for key, value in values:
        if isinstance(value, str) and ("\n" in value or "\r" in value):
            raise UsageError(f"configuration value {key} must not contain a newline")
    return config


def service_environment(config: RuntimeConfig, service: str) -> dict[str, str]:
    """The environment one service is started with; empty values are left out."""
    path = f"{config.repo_dir / '.venv' / 'bin'}:{SYSTEM_PATH}"
    common = {
        "HOME": str(config.home_dir),
        "PATH": path,
        "BAA_NODE_ID": config.node_id,
        # Under a service manager stderr is a file: one JSON object per line (jq-able).
        "BAA_LOG_FORMAT": "json",
    }
    env: dict[str, str]
    if service == APP_SERVER:
        # What codexd's spawned child gets (supervisor.child_spec): codexd's HOME, PATH and
        # CODEX_HOME, NO_COLOR, and the binary's bundled helpers (bwrap) first on PATH.
        resources = config.app_server_resources
        common = {
            "HOME": str(config.home_dir),
            "PATH": f"{resources}:{path}" if resources else path,
        }
        env = {"CODEX_HOME": config.codex_home, "NO_COLOR": "1"}
    elif service == "codexd":
        env = {
            "BAA_CODEXD_LOCAL_API_BASE": config.codexd_api_base,
            "BAA_CODEXD_REPO_ROOT": str(config.repo_dir),
            "BAA_CODEXD_LOGS_DIR": str(config.logs_dir),
            "BAA_CODEXD_STATE_DIR": str(config.state_dir),
            "BAA_CODEXD_EVENT_STREAM_PATH": config.event_stream_path,
            "BAA_CODEXD_SERVER_STRATEGY": config.server_strategy,
            "BAA_CODEXD_SERVER_ENDPOINT": config.server_endpoint,
        }
        if config.server_strategy == "spawn":
            # How codexd starts its own child; with strategy external it starts nothing (the
            # app-server service, or Codex's own daemon, has the command and CODEX_HOME).
            env.update(
                {
                    "BAA_CODEXD_SERVER_COMMAND": config.server_command,
                    "BAA_CODEXD_SERVER_ARGS": " ".join(config.server_args),
                    "BAA_CODEXD_SERVER_CWD": config.server_cwd,
                }
            )
        env.update(
            {
                "BAA_CODEXD_SHUTDOWN_GRACE_S": str(config.shutdown_grace_s),
                "BAA_CODEXD_TOKEN_FILE": config.codexd_token_file,
                "BAA_CODEXD_ALLOWED_ORIGINS": config.codexd_allowed_origins,
                "CODEX_HOME": config.codex_home if config.server_strategy == "spawn" else "",
            }
        )
    elif service == "conductor":
        env = {
            "BAA_CONDUCTOR_LOCAL_API": config.conductor_api,
            "BAA_CONDUCTOR_ROLE": config.conductor_role,
            "BAA_CONDUCTOR_HOST": config.conductor_host,
            "BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS": config.allowed_hosts,
            "BAA_SHARED_TOKEN_FILE": config.shared_token_file,
            "BAA_CONDUCTOR_ALLOWED_ORIGINS": config.conductor_allowed_origins,
            "BAA_CODEXD_LOCAL_API_BASE": config.codexd_api_base,
            # The conductor calls codexd, so it needs codexd's token (the same file).
            "BAA_CODEXD_TOKEN_FILE": config.codexd_token_file,
            "BAA_CONDUCTOR_PUBLIC_API_BASE": config.public_api_base,
            "BAA_NOTIFY_URLS_FILE": config.notify_urls_file,
            "BAA_CONDUCTOR_STATE_DIR": str(config.state_dir),
            "BAA_CONDUCTOR_LOGS_DIR": str(config.logs_dir),
        }
    else:
        env = {
            "BAA_STATUS_API_LOCAL_API": config.status_api,
            "BAA_STATUS_API_ALLOWED_HOSTS": config.status_allowed_hosts,
            "BAA_STATUS_API_ALLOWED_ORIGINS": config.status_allowed_origins,
            "BAA_CONDUCTOR_LOCAL_API": config.conductor_api,
        }
    if service != APP_SERVER:
        # The daemon logs to a file it rolls over by size: nothing rotates the service
        # manager's own stdout/stderr files, which keep only what escapes logging (a crash).
        variable = {"codexd": "BAA_CODEXD_LOG_FILE", "conductor": "BAA_CONDUCTOR_LOG_FILE"}.get(
            service, "BAA_STATUS_API_LOG_FILE")
        env[variable] = str(config.logs_dir / service / f"{service}.log")
    # --setenv applies to every service and wins over the rendered defaults.
    return {k: v for k, v in {**common, **env, **dict(config.extra_env)}.items() if v != ""}


TemplateValue = str | int | list[str]


def template_values(config: RuntimeConfig, service: str) -> dict[str, TemplateValue]:
    logs = config.manager_logs_dir
    stem = label(service) if config.manager == "launchd" else f"baa-{service}"
    with_app_server = config.external_app_server and service == "codexd"
    return {
        "LABEL": label(service),
        "PYTHON": str(config.python),
        "REPO_DIR": str(config.repo_dir),
        # The app-server runs where codexd would run its child: --server-cwd, else the repo.
        "WORKING_DIR": config.server_cwd or str(config.repo_dir),
        "PROGRAM_ARGUMENTS": config.app_server_argv if service == APP_SERVER else [],
        # systemd: codexd wants the app-server and starts after it (launchd has no ordering).
        "APP_SERVER_UNIT": unit_name(APP_SERVER) if with_app_server else "",
        "HOME_DIR": str(config.home_dir),
        "USER_NAME": config.user if config.scope == "daemon" else "",
        "EXIT_TIMEOUT": config.exit_timeout_s,
        "THROTTLE_INTERVAL": config.throttle_interval_s,
        "STDOUT_PATH": str(logs / f"{stem}.out.log"),
        "STDERR_PATH": str(logs / f"{stem}.err.log"),
        "ENV_FILE": config.env_file,
        "WANTED_BY": "multi-user.target" if config.scope == "daemon" else "default.target",
        "SHUTDOWN_GRACE": config.shutdown_grace_s,
    }
