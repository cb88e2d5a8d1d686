#!/usr/bin/env python3
"""Render, check and probe the node's service-manager files (launchd plists, systemd units).

Shared by the shell scripts in ``scripts/runtime/``. Standard library only, so it runs with any
Python 3.11+ before the project's ``.venv`` exists (the scripts prefer ``.venv/bin/python``).

Subcommands:

``render``  fill the templates in ``launchd/`` or ``systemd/`` from one configuration and write
            the installed copies into ``--out-dir`` (or print them with ``--stdout``). Prints a
            manifest on stdout: ``file<TAB>service<TAB>path`` and ``dir<TAB>path`` lines (the
            directories an install must create), and ``sockdir<TAB>path`` with the codex
            app-server service (the folder of its socket, to create when missing).
``check``   static checks of rendered files; one line per problem on stdout, exit 1 if any.
``probe``   runtime probes of a running node over HTTP; one ``ok``/``FAIL`` line per probe.
            codexd is called with its bearer token when the node has one; the token is never
            printed and never passed on a command line.

The codex app-server service (``codex-app-server``) is rendered only on request
(``--server-strategy external --external-app-server``): one long-lived ``codex app-server --listen
<endpoint>`` that codexd attaches to instead of spawning its own child.

Exit status: 0 fine, 1 problems found, 2 bad usage or bad configuration (one line on stderr).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import ipaddress
import json
import os
import plistlib
import re
import shlex
import socket
import stat
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

SCRIPT_REPO = Path(__file__).resolve().parent.parent.parent
SERVICES = ("codexd", "conductor", "status-api")
# The optional service: one long-lived ``codex app-server --listen <endpoint>`` for codexd's
# strategy external. Never part of "all services"; rendered with --external-app-server.
APP_SERVER = "codex-app-server"
# Every service this file knows, in start order (the app-server before codexd attaches to it).
KNOWN_SERVICES = (APP_SERVER, *SERVICES)
STRATEGIES = ("spawn", "external")
# sun_path holds 104 bytes on macOS (108 on Linux), with the terminating NUL: codexd could not
# connect to a longer socket path.
MAX_SOCKET_PATH = 103
LABEL_PREFIX = "so.makefile.baa-"
MODULES = {
    "codexd": "codexd_trio",
    "conductor": "conductor_trio",
    "status-api": "conductor_trio.status_api",
}
DEFAULT_CODEXD_BASE = "http://127.0.0.1:4319"
DEFAULT_CONDUCTOR_API = "http://127.0.0.1:4317"
DEFAULT_STATUS_API = "http://127.0.0.1:4318"
DEFAULT_EVENT_STREAM_PATH = "/v1/codexd/events"
DEFAULT_GRACE_S = 10
DEFAULT_THROTTLE_S = 10
MIN_EXIT_TIMEOUT_S = 20
SYSTEM_PATH = "/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin"
SECRET_WORDS = ("token", "secret", "password", "apikey", "api-key", "api_key")
# Secrets that only ever reach a service through a file (mode 600) named by ``<VAR>_FILE``:
# variable -> (what it is, the render flag that names the file).
TOKEN_VARS = {
    "BAA_SHARED_TOKEN": ("shared token", "--shared-token-file"),
    "BAA_CODEXD_TOKEN": ("codexd token", "--codexd-token-file"),
}
# Each daemon's allow-list of browser origins (comma-separated ``http://host:port``).
ORIGIN_VARS = {
    "codexd": "BAA_CODEXD_ALLOWED_ORIGINS",
    "conductor": "BAA_CONDUCTOR_ALLOWED_ORIGINS",
    "status-api": "BAA_STATUS_API_ALLOWED_ORIGINS",
}
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


class UsageError(Exception):
    """Bad flags or a configuration value that cannot be rendered; the message is one line."""


def label(service: str) -> str:
    return LABEL_PREFIX + service


def unit_name(service: str) -> str:
    return f"baa-{service}.service"


def service_of_label(name: str) -> str | None:
    if name.startswith(LABEL_PREFIX) and name[len(LABEL_PREFIX) :] in KNOWN_SERVICES:
        return name[len(LABEL_PREFIX) :]
    return None


def is_loopback(host: str) -> bool:
    """codexd's own rule (``codexd_trio/web/addresses.py``, loaded on its own)."""
    return bool(_checkout_module("_baa_runtime_addresses", "codexd_trio/web/addresses.py")
                .is_loopback(host))


def split_base(name: str, base: str) -> tuple[str, int]:
    """Validate an ``http://host:port`` base URL; raises :class:`UsageError` naming ``name``."""
    parts = urlsplit(base)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"{name} must look like http://127.0.0.1:4319, got {base!r}")
    if parts.path not in ("", "/") or parts.query:
        raise UsageError(f"{name} must not have a path or query, got {base!r}")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{name} has an invalid port: {base!r}") from None
    if port is None:
        raise UsageError(f"{name} needs an explicit port, got {base!r}")
    return parts.hostname, port


def hosts_list(raw: str) -> list[str]:
    return [h.strip() for h in raw.split(",") if h.strip()]


def is_origin(value: str) -> bool:
    """Whether ``value`` is an origin (``http(s)://host[:port]``) a daemon accepts in its
    ``BAA_*_ALLOWED_ORIGINS``.

    Mirrors ``codexd_trio.web.callers.normalize_origin``, which the daemons use (and refuses
    whitespace, which no origin has); this file cannot import the project because it runs before
    ``.venv`` exists.
    """
    if any(c.isspace() for c in value):
        return False
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return False
    try:
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return False
    return True


def bad_origins(raw: str) -> list[str]:
    return [item for item in hosts_list(raw) if not is_origin(item)]


def origins_value(name: str, raw: str) -> str:
    """A comma-separated origin list, validated (raises :class:`UsageError` naming ``name``)."""
    for item in bad_origins(raw):
        raise UsageError(f"{name}: {item!r} is not an origin like http://host:port")
    return ",".join(hosts_list(raw))


def listen_problem(name: str, base: str, allowed_var: str, allowed: str) -> str | None:
    """Why a daemon would refuse to listen on ``base`` (non-loopback and not allow-listed)."""
    host, _ = split_base(name, base)
    if is_loopback(host) or host in hosts_list(allowed):
        return None
    return f"{name} listens on non-loopback host {host!r} that is not listed in {allowed_var}"


def parse_external_endpoint(endpoint: str) -> tuple[str, str, int]:
    """``("unix", path, 0)`` or ``("ws", host, port)``; raises :class:`UsageError` (one line).

    Mirrors what codexd accepts for ``--server-strategy external``
    (``codexd_trio.protocol.transport.parse_endpoint`` and the loopback rule of
    ``codexd_trio.config``), which this file cannot import; and refuses two endpoints codexd
    would accept but never reach: ``ws://…:0`` and a socket path longer than ``sun_path``.
    """
    if not endpoint:
        raise UsageError(
            "strategy external needs --server-endpoint unix:///path/to/socket "
            "or ws://127.0.0.1:PORT"
        )
    parts = urlsplit(endpoint)
    if parts.scheme == "unix":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path.startswith("/"):
            raise UsageError(f"a unix endpoint needs an absolute path (unix:///path): {endpoint!r}")
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise UsageError(
                f"the socket path of {endpoint!r} is {len(path.encode())} bytes; a unix socket "
                f"path holds at most {MAX_SOCKET_PATH}: choose a shorter one"
            )
        return "unix", path, 0
    if parts.scheme == "ws":
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"a ws endpoint has an invalid port: {endpoint!r}") from None
        if not parts.hostname or port is None:
            raise UsageError(f"a ws endpoint needs a host and a port, got {endpoint!r}")
        if port == 0:
            raise UsageError(f"a ws endpoint needs a fixed port, not 0: {endpoint!r}")
        if not is_loopback(parts.hostname):
            raise UsageError(f"an external ws:// endpoint must be on loopback, got {endpoint!r}")
        return "ws", parts.hostname, port
    raise UsageError(
        f"an external endpoint is unix:///path/to/socket or ws://127.0.0.1:PORT: {endpoint!r}"
    )


def check_spawn_endpoint(endpoint: str) -> None:
    """Strategy spawn talks to its child over stdio (``stdio``, or ``stdio://NAME``: a label)."""
    if endpoint != "stdio" and not endpoint.startswith("stdio://"):
        raise UsageError(
            f"server endpoint {endpoint!r} is not supported with strategy spawn "
            "(use stdio or stdio://NAME, or --server-strategy external)"
        )


def check_listen_endpoint(endpoint: str) -> None:
    """What ``codex app-server --listen`` accepts beyond codexd's rules: ``ws://IP:PORT`` (an IP,
    not a host name: it refuses ``ws://localhost:PORT``)."""
    kind, host, _ = parse_external_endpoint(endpoint)
    if kind == "ws":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(
                f"codex app-server --listen needs ws://IP:PORT, not a host name: {endpoint!r} "
                "(use ws://127.0.0.1:PORT)"
            ) from None


def endpoint_problem(strategy: str, endpoint: str) -> str | None:
    """Why codexd would refuse this strategy/endpoint pair (its exit 2), or None."""
    try:
        if strategy == "spawn":
            check_spawn_endpoint(endpoint or "stdio")
        elif strategy == "external":
            parse_external_endpoint(endpoint)
        else:
            return f"server strategy {strategy!r} is not supported (use spawn or external)"
    except UsageError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- the codex binary


def _codexbin() -> Any:
    """``codexd_trio/codexbin.py`` of this checkout: how codexd finds the native binary."""
    return _checkout_module("_baa_runtime_codexbin", "codexd_trio/codexbin.py")


def _checkout_module(name: str, relative: str) -> Any:
    """A standard-library-only module of this checkout, loaded on its own (importing the
    package would need ``.venv``), so the scripts and the daemons share one rule."""
    if name in sys.modules:
        return sys.modules[name]
    path = SCRIPT_REPO / relative
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise UsageError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def app_server_binary(
    command: str, repo: Path, service_path: str, extra_env: Mapping[str, str]
) -> Path:
    """The native Codex binary the app-server service runs, resolved as codexd resolves its
    ``--server-command`` (``codexbin.resolve_server_command``) but for the service's environment:

    * ``codex``: ``BAA_CODEX_BIN`` given with ``--setenv``, else the vendored binary under
      ``<repo>/vendor/codex``, else ``codex`` on the service PATH, else the vendored path all the
      same (``check`` then says to run ``scripts/setup.sh``);
    * a path: that file; any other name: looked up on the service PATH.

    An npm launcher (``bin/codex.js`` or a link or shim to it) becomes the native binary it runs.
    """
    codexbin = _codexbin()
    found: Path | None
    try:
        if command == "codex":
            override = extra_env.get("BAA_CODEX_BIN", "")
            vendored = Path(codexbin.vendored_binary(repo / "vendor" / "codex"))
            if override:
                found = _abs(override)
            elif vendored.is_file():
                found = vendored
            else:
                found = _which("codex", service_path) or vendored
        elif "/" in command or command.startswith("~"):
            found = _abs(command)
        else:
            found = _which(command, service_path)
            if found is None:
                raise UsageError(
                    f"app-server command {command!r} is not on the service PATH "
                    f"({service_path}); pass its absolute path with --server-command"
                )
        return Path(codexbin.native_binary(found)) if found.is_file() else found
    except codexbin.CodexBinaryNotFound as exc:
        raise UsageError(str(exc)) from None


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


def _abs(raw: str) -> Path:
    return Path(os.path.expanduser(raw)).absolute()


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


# --------------------------------------------------------------------------- rendering


def _fill_plist(node: Any, values: Mapping[str, TemplateValue], env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    if isinstance(node, list):
        items: list[Any] = []
        for item in node:
            filled = _fill_plist(item, values, env)
            if isinstance(item, str) and isinstance(filled, list):
                items.extend(filled)  # a list placeholder (ProgramArguments) becomes its words
            else:
                items.append(filled)
        return items
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, item in node.items():
            if key == "EnvironmentVariables":
                # The template names the variables; the renderer owns their values so that
                # launchd and systemd get exactly the same environment.
                out[key] = dict(env)
                continue
            filled = _fill_plist(item, values, env)
            if filled != "":
                out[key] = filled
        return out
    return node


def render_plist(config: RuntimeConfig, service: str, template_dir: Path) -> bytes:
    template = template_dir / f"{label(service)}.plist.in"
    with template.open("rb") as f:
        data = plistlib.load(f)
    env = service_environment(config, service)
    unknown = sorted(
        set(env) - set(data.get("EnvironmentVariables", {})) - {k for k, _ in config.extra_env}
    )
    if unknown:
        raise UsageError(f"{template} does not list environment variables {', '.join(unknown)}")
    rendered = _fill_plist(data, template_values(config, service), env)
    return plistlib.dumps(rendered, fmt=plistlib.FMT_XML, sort_keys=False)


def _systemd_escape(value: str) -> str:
    return value.replace("%", "%%")


def _systemd_word(value: str) -> str:
    """One ExecStart word: specifiers and ``$`` escaped, quoted when it has spaces."""
    value = _systemd_escape(value).replace("$", "$$")
    if re.search(r"[\s\"'\\;]", value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _systemd_env_line(key: str, value: str) -> str:
    quoted = _systemd_escape(f"{key}={value}").replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{quoted}"'


def render_unit(config: RuntimeConfig, service: str, template_dir: Path) -> bytes:
    template = (template_dir / f"baa-{service}.service.in").read_text()
    values = template_values(config, service)
    escaped: dict[str, str] = {
        k: _systemd_escape(str(v)) for k, v in values.items() if not isinstance(v, list)
    }
    escaped["PYTHON"] = _systemd_word(str(config.python))
    escaped["EXEC_START"] = " ".join(
        _systemd_word(word) for word in (config.app_server_argv if service == APP_SERVER else [])
    )
    if config.scope != "daemon":
        escaped["USER_NAME"] = ""
    env_lines = [_systemd_env_line(k, v) for k, v in service_environment(config, service).items()]
    out = [
        f"# Rendered by scripts/runtime/render.py from systemd/baa-{service}.service.in;",
        "# edit the template or the flags and re-run scripts/runtime/install-launchd.sh.",
    ]
    lines = template.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)  # the template's own header talks about placeholders
    for line in lines:
        if line.startswith("#"):
            out.append(line)
            continue
        if line.strip() == "@ENVIRONMENT@":
            out.extend(env_lines)
            continue
        names = _PLACEHOLDER.findall(line)
        if any(escaped[name] == "" for name in names):
            # An optional setting that is not configured: drop the whole directive.
            continue
        out.append(_PLACEHOLDER.sub(lambda m: escaped[m.group(1)], line))
    return ("\n".join(out) + "\n").encode()


def rendered_name(config: RuntimeConfig, service: str) -> str:
    return f"{label(service)}.plist" if config.manager == "launchd" else unit_name(service)


def render_all(config: RuntimeConfig, template_root: Path) -> dict[str, tuple[str, bytes]]:
    """Render every selected service; returns ``{service: (file name, bytes)}``."""
    out: dict[str, tuple[str, bytes]] = {}
    for service in config.services:
        if config.manager == "launchd":
            body = render_plist(config, service, template_root / "launchd")
        else:
            body = render_unit(config, service, template_root / "systemd")
        out[service] = (rendered_name(config, service), body)
    return out


def dirs_to_create(config: RuntimeConfig) -> list[Path]:
    return [config.logs_dir, config.manager_logs_dir, config.state_dir]


# --------------------------------------------------------------------------- static checks


@dataclass
class Loaded:
    """A rendered plist or unit, normalised to the fields the checks look at."""

    path: Path
    service: str
    kind: str  # "plist" | "unit"
    program: list[str]
    working_dir: str
    env: dict[str, str]
    stdout_path: str
    stderr_path: str
    stop_timeout: int | None
    restart_ok: bool
    restart_detail: str
    extra: dict[str, str]


def _load_plist(path: Path, problems: list[str]) -> Loaded | None:
    try:
        with path.open("rb") as f:
            data = plistlib.load(f)
    except (OSError, plistlib.InvalidFileException, ValueError) as exc:
        problems.append(f"{path}: not a readable plist ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: plist top level is not a dictionary")
        return None
    service = service_of_label(str(data.get("Label", "")))
    if service is None:
        problems.append(f"{path}: Label {data.get('Label')!r} is not a baa service label")
        return None
    keep = data.get("KeepAlive")
    restart_ok = keep == {"SuccessfulExit": False} and data.get("RunAtLoad") is True
    exit_timeout = data.get("ExitTimeOut")
    program = data.get("ProgramArguments")
    env = data.get("EnvironmentVariables")
    return Loaded(
        path=path,
        service=service,
        kind="plist",
        program=[str(a) for a in program] if isinstance(program, list) else [],
        working_dir=str(data.get("WorkingDirectory", "")),
        env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        stdout_path=str(data.get("StandardOutPath", "")),
        stderr_path=str(data.get("StandardErrorPath", "")),
        stop_timeout=exit_timeout if isinstance(exit_timeout, int) else None,
        restart_ok=restart_ok,
        restart_detail=(
            "RunAtLoad must be true and KeepAlive must be {SuccessfulExit: false} "
            f"(got RunAtLoad={data.get('RunAtLoad')!r}, KeepAlive={keep!r})"
        ),
        extra={"ThrottleInterval": str(data.get("ThrottleInterval", ""))},
    )


def _unit_directives(text: str) -> Iterator[tuple[str, str, str]]:
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        yield section, key.strip(), value.strip()


def _unescape(value: str) -> str:
    return value.replace("%%", "%")


def _load_unit(path: Path, problems: list[str]) -> Loaded | None:
    try:
        text = path.read_text()
    except OSError as exc:
        problems.append(f"{path}: not readable ({exc})")
        return None
    name = path.name
    service = name[len("baa-") : -len(".service")] if name.startswith("baa-") else ""
    if service not in KNOWN_SERVICES or not name.endswith(".service"):
        problems.append(f"{path}: not a baa unit (expected baa-<service>.service)")
        return None
    svc: dict[str, str] = {}
    env: dict[str, str] = {}
    for section, key, value in _unit_directives(text):
        if section != "Service":
            continue
        if key == "Environment":
            for word in shlex.split(value):
                k, _, v = _unescape(word).partition("=")
                env[k] = v
        else:
            svc[key] = value
    program = [_unescape(w).replace("$$", "$") for w in shlex.split(svc.get("ExecStart", ""))]

    def append_target(key: str) -> str:
        value = _unescape(svc.get(key, ""))
        return value[len("append:") :] if value.startswith("append:") else ""

    try:
        stop_timeout: int | None = int(svc.get("TimeoutStopSec", ""))
    except ValueError:
        stop_timeout = None
    restart_ok = svc.get("Restart") == "on-failure"
    return Loaded(
        path=path,
        service=service,
        kind="unit",
        program=program,
        working_dir=_unescape(svc.get("WorkingDirectory", "")),
        env=env,
        stdout_path=append_target("StandardOutput"),
        stderr_path=append_target("StandardError"),
        stop_timeout=stop_timeout,
        restart_ok=restart_ok,
        restart_detail=f"Restart must be on-failure (got {svc.get('Restart')!r})",
        extra={
            "KillMode": svc.get("KillMode", ""),
            "KillSignal": svc.get("KillSignal", ""),
        },
    )


def _vendored_codex(repo: Path) -> list[Path]:
    return sorted(
        p
        for p in (repo / "vendor" / "codex" / "node_modules" / "@openai").glob(
            "codex-*/vendor/*/bin/codex"
        )
        if p.is_file()
    )


def _which(name: str, path_env: str) -> Path | None:
    for folder in path_env.split(":"):
        candidate = Path(folder) / name
        if folder and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def spawn_command_problems(item: Loaded, need_dir: Callable[[str, str], None]) -> list[str]:
    """codexd's strategy spawn: the command it spawns resolves, with 'app-server' among its
    arguments, and the child's working directory exists."""
    problems: list[str] = []
    where, env = item.path.name, item.env
    repo = Path(env.get("BAA_CODEXD_REPO_ROOT") or item.working_dir or ".")
    command = env.get("BAA_CODEXD_SERVER_COMMAND", "codex")
    if command == "codex":
        if not _vendored_codex(repo) and not env.get("BAA_CODEX_BIN"):
            problems.append(
                f"{where}: app-server command 'codex' needs the vendored binary under "
                f"{repo}/vendor/codex (run scripts/setup.sh)"
            )
    elif "/" in command:
        if not (Path(command).is_file() and os.access(command, os.X_OK)):
            problems.append(f"{where}: app-server command is not executable: {command}")
    elif _which(command, env.get("PATH", SYSTEM_PATH)) is None:
        problems.append(f"{where}: app-server command {command!r} is not on the service PATH")
    args = env.get("BAA_CODEXD_SERVER_ARGS", "app-server").split()
    if "app-server" not in args:
        problems.append(
            f"{where}: app-server arguments must include 'app-server', got {' '.join(args)!r}"
        )
    cwd = env.get("BAA_CODEXD_SERVER_CWD", "")
    if cwd:
        need_dir("app-server cwd (BAA_CODEXD_SERVER_CWD)", cwd)
    return problems


def listen_endpoint(item: Loaded) -> str | None:
    """The endpoint an app-server service listens on (its ``--listen`` argument)."""
    program = item.program
    if len(program) >= 2 and program[-2] == "--listen":
        return program[-1]
    return None


def app_server_problems(item: Loaded, pending_dirs: Sequence[Path] = ()) -> list[str]:
    """The app-server service's program: ``<native codex> … app-server … --listen <endpoint>``,
    the binary exists, the endpoint is one codexd and codex accept, the socket's folder exists."""
    where, program = item.path.name, item.program
    endpoint = listen_endpoint(item)
    if endpoint is None or "app-server" not in program[1:-2]:
        return [
            f"{where}: program must be '<codex> app-server --listen <endpoint>', "
            f"got {' '.join(program)!r}"
        ]
    problems: list[str] = []
    binary = Path(program[0])
    if not binary.is_absolute():
        problems.append(f"{where}: the codex binary must be an absolute path, got {program[0]!r}")
    elif not (binary.is_file() and os.access(binary, os.X_OK)):
        problems.append(
            f"{where}: codex binary {binary} does not exist or is not executable "
            "(run scripts/setup.sh, or render with --server-command)"
        )
    elif binary.name == "codex.js":
        problems.append(
            f"{where}: {binary} is the npm launcher; run the native binary it starts "
            "(killing the launcher orphans the app-server)"
        )
    try:
        check_listen_endpoint(endpoint)
        kind, path, _ = parse_external_endpoint(endpoint)
    except UsageError as exc:
        problems.append(f"{where}: --listen {endpoint}: {exc}")
        return problems
    folder = Path(path).parent
    if kind == "unix" and folder not in pending_dirs and not folder.is_dir():
        problems.append(
            f"{where}: the folder of the app-server socket does not exist: {folder} "
            "(install-launchd.sh creates it)"
        )
    return problems


def check_loaded(item: Loaded, pending_dirs: Sequence[Path] = ()) -> list[str]:
    """Static checks of one rendered file; returns one line per problem.

    ``pending_dirs`` are directories an install is about to create; their absence is not a
    problem (used by ``check-launchd.sh --dry-run``).
    """
    problems: list[str] = []
    where = f"{item.path.name}"
    pending = {str(p) for p in pending_dirs}

    def need_dir(what: str, raw: str) -> None:
        if not raw:
            problems.append(f"{where}: {what} is not set")
        elif not Path(raw).is_absolute():
            problems.append(f"{where}: {what} must be an absolute path, got {raw}")
        elif raw in pending:
            return
        elif not Path(raw).is_dir():
            problems.append(f"{where}: {what} does not exist: {raw}")

    if item.service == APP_SERVER:
        problems.extend(app_server_problems(item, pending_dirs))
    else:
        module = MODULES[item.service]
        if item.program[1:] != ["-m", module, "start"] or not item.program:
            problems.append(
                f"{where}: program must be '<python> -m {module} start', "
                f"got {' '.join(item.program)!r}"
            )
        elif not (Path(item.program[0]).is_file() and os.access(item.program[0], os.X_OK)):
            problems.append(
                f"{where}: python {item.program[0]} does not exist "
                "(run scripts/setup.sh in the repo)"
            )
    for arg in item.program:
        if any(word in arg.lower() for word in SECRET_WORDS):
            problems.append(f"{where}: program arguments carry a secret-looking value: {arg!r}")
    need_dir("WorkingDirectory", item.working_dir)
    if not item.restart_ok:
        problems.append(f"{where}: {item.restart_detail}")

    grace_raw = item.env.get("BAA_CODEXD_SHUTDOWN_GRACE_S", str(DEFAULT_GRACE_S))
    try:
        grace = float(grace_raw)
    except ValueError:
        problems.append(f"{where}: BAA_CODEXD_SHUTDOWN_GRACE_S is not a number: {grace_raw!r}")
        grace = DEFAULT_GRACE_S
    stop_key = "ExitTimeOut" if item.kind == "plist" else "TimeoutStopSec"
    if item.stop_timeout is None:
        problems.append(f"{where}: {stop_key} is not set")
    elif item.stop_timeout <= grace:
        problems.append(
            f"{where}: {stop_key} ({item.stop_timeout}s) must be longer than codexd's shutdown "
            f"grace ({grace:g}s)"
        )
    if item.kind == "plist":
        try:
            if int(item.extra["ThrottleInterval"]) < 1:
                raise ValueError
        except ValueError:
            problems.append(f"{where}: ThrottleInterval must be a positive whole number")
    else:
        if item.extra["KillMode"] not in ("mixed", "control-group"):
            problems.append(
                f"{where}: KillMode must be mixed or control-group, got {item.extra['KillMode']!r}"
            )
        if item.extra["KillSignal"] not in ("SIGTERM", "TERM", "15"):
            signal = item.extra["KillSignal"]
            problems.append(f"{where}: KillSignal must be SIGTERM, got {signal!r}")

    for what, raw in (("stdout log", item.stdout_path), ("stderr log", item.stderr_path)):
        if not raw:
            problems.append(f"{where}: {what} path is not set")
            continue
        need_dir(f"{what} dir", str(Path(raw).parent))

    env = item.env
    for var, (what, _flag) in TOKEN_VARS.items():
        if var in env:
            problems.append(f"{where}: {var} is written inline; use {var}_FILE instead")
        token_file = env.get(f"{var}_FILE", "")
        if token_file:
            token_path = Path(token_file)
            if not token_path.is_file():
                problems.append(f"{where}: {what} file does not exist: {token_file}")
            elif token_path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                problems.append(
                    f"{where}: {what} file is readable by others (chmod 600): {token_file}"
                )
            elif (
                os.access(token_path, os.R_OK)
                and not token_path.read_text(errors="replace").strip()
            ):
                problems.append(f"{where}: {what} file is empty: {token_file}")
    for var in ORIGIN_VARS.values():
        for origin in bad_origins(env.get(var, "")):
            # The daemon refuses to start on it (exit 2), so launchd/systemd would restart-loop.
            problems.append(f"{where}: {var}: {origin!r} is not an origin like http://host:port")

    def need_loopback(var: str) -> None:
        base = env.get(var, DEFAULT_CODEXD_BASE)
        try:
            host, _ = split_base(var, base)
        except UsageError as exc:
            problems.append(f"{where}: {exc}")
            return
        if not is_loopback(host):
            problems.append(
                f"{where}: codexd listen address is not loopback: {host} ({var}={base})"
            )

    def need_url(var: str, default: str, allowed_var: str = "") -> None:
        # With allowed_var, var is a listen address: non-loopback needs the allow-list entry.
        base = env.get(var, default)
        try:
            split_base(var, base)
            problem = (
                listen_problem(var, base, allowed_var, env.get(allowed_var, ""))
                if allowed_var
                else None
            )
        except UsageError as exc:
            problem = str(exc)
        if problem:
            problems.append(f"{where}: {problem}")

    if item.service == "codexd":
        need_loopback("BAA_CODEXD_LOCAL_API_BASE")
        stream = env.get("BAA_CODEXD_EVENT_STREAM_PATH", DEFAULT_EVENT_STREAM_PATH)
        if not stream.startswith("/") or any(c.isspace() for c in stream) or "?" in stream:
            problems.append(f"{where}: event stream path must start with '/', got {stream!r}")
        need_dir("logs dir (BAA_CODEXD_LOGS_DIR)", env.get("BAA_CODEXD_LOGS_DIR", ""))
        need_dir("state dir (BAA_CODEXD_STATE_DIR)", env.get("BAA_CODEXD_STATE_DIR", ""))
        strategy = env.get("BAA_CODEXD_SERVER_STRATEGY", "spawn")
        problem = endpoint_problem(strategy, env.get("BAA_CODEXD_SERVER_ENDPOINT", ""))
        if problem:
            # codexd would refuse to start (exit 2) and the service manager would restart-loop.
            problems.append(f"{where}: BAA_CODEXD_SERVER_STRATEGY={strategy}: {problem}")
        if strategy != "external":
            problems.extend(spawn_command_problems(item, need_dir))
        if env.get("CODEX_HOME"):
            need_dir("CODEX_HOME", env["CODEX_HOME"])
    elif item.service == APP_SERVER:
        if env.get("CODEX_HOME"):
            need_dir("CODEX_HOME", env["CODEX_HOME"])
    elif item.service == "conductor":
        need_loopback("BAA_CODEXD_LOCAL_API_BASE")
        need_url(
            "BAA_CONDUCTOR_LOCAL_API",
            DEFAULT_CONDUCTOR_API,
            "BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS",
        )
        role = env.get("BAA_CONDUCTOR_ROLE", "primary")
        if role not in ("primary", "standby"):
            problems.append(f"{where}: BAA_CONDUCTOR_ROLE must be primary or standby, got {role!r}")
        need_dir("state dir (BAA_CONDUCTOR_STATE_DIR)", env.get("BAA_CONDUCTOR_STATE_DIR", ""))
        need_dir("logs dir (BAA_CONDUCTOR_LOGS_DIR)", env.get("BAA_CONDUCTOR_LOGS_DIR", ""))
    else:
        need_url("BAA_STATUS_API_LOCAL_API", DEFAULT_STATUS_API, "BAA_STATUS_API_ALLOWED_HOSTS")
        need_url("BAA_CONDUCTOR_LOCAL_API", DEFAULT_CONDUCTOR_API)
    return problems


def _load(path: Path, problems: list[str]) -> Loaded | None:
    loader = _load_plist if path.suffix == ".plist" else _load_unit
    return loader(path, problems)


def _peer(item: Loaded, service: str, peer_dirs: Sequence[Path]) -> Loaded | None:
    """The other service's file of the same kind, beside ``item`` or in one of ``peer_dirs``."""
    name = f"{label(service)}.plist" if item.kind == "plist" else unit_name(service)
    for folder in (item.path.parent, *peer_dirs):
        candidate = folder / name
        if candidate.is_file():
            # Its own problems are reported when it is checked itself, not here.
            return _load(candidate, [])
    return None


def _token_text(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip() or None
    except OSError:
        return None


def codexd_token_problem(codexd: Loaded, conductor: Loaded) -> str | None:
    """Why the conductor could not call codexd: codexd wants a token the conductor does not have.

    The same file is what ``--codexd-token-file`` renders; two different files holding the same
    token work too, so they are compared by content when both are readable.
    """
    wanted = codexd.env.get("BAA_CODEXD_TOKEN_FILE", "")
    if not wanted:
        return None
    given = conductor.env.get("BAA_CODEXD_TOKEN_FILE", "")
    where = conductor.path.name
    if not given:
        return (
            f"{where}: BAA_CODEXD_TOKEN_FILE is not set, but codexd ({codexd.path.name}) requires "
            f"the token in {wanted}: the conductor could not call codexd "
            "(render both with --codexd-token-file)"
        )
    if given == wanted:
        return None
    token = _token_text(given)
    if token is not None and token == _token_text(wanted):
        return None
    return (
        f"{where}: BAA_CODEXD_TOKEN_FILE is {given}, but codexd ({codexd.path.name}) reads its "
        f"token from {wanted}: the conductor could not call codexd "
        "(render both with --codexd-token-file)"
    )


def external_problems(
    codexd: Loaded, app: Loaded | None, pending_dirs: Sequence[Path], app_checked: bool = True
) -> tuple[list[str], list[str]]:
    """(problems, warnings) of codexd's strategy external against what should listen there.

    A unix socket that does not exist is a problem when nothing is meant to create it (a typo,
    or Codex's own daemon is not started), and only a warning when the app-server service is
    installed (it is not running, or not yet): codexd retries the endpoint with backoff.
    Nothing is said while an install is about to create the socket's folder and start the
    service (``pending_dirs``). ``app_checked`` is false when the app-server service is not among
    the files checked but an installed copy beside them: one listening elsewhere is then left
    over from an earlier setup (a warning), not a pair rendered wrong (a problem).
    """
    problems: list[str] = []
    warnings: list[str] = []
    where = codexd.path.name
    strategy = codexd.env.get("BAA_CODEXD_SERVER_STRATEGY", "spawn")
    if strategy != "external":
        if app is not None:
            warnings.append(
                f"{app.path.name}: codexd ({where}) uses strategy {strategy!r}: it spawns its own "
                "app-server and never attaches to this one (remove the service, or render codexd "
                "with --server-strategy external)"
            )
        return problems, warnings
    endpoint = codexd.env.get("BAA_CODEXD_SERVER_ENDPOINT", "")
    try:
        kind, path, _ = parse_external_endpoint(endpoint)
    except UsageError:
        return problems, warnings  # check_loaded reported it
    if app is not None and listen_endpoint(app) != endpoint:
        if app_checked:
            problems.append(
                f"{where}: codexd attaches to {endpoint}, but {app.path.name} listens on "
                f"{listen_endpoint(app)}: render both with the same --server-endpoint"
            )
            return problems, warnings
        warnings.append(
            f"{app.path.name} (installed) listens on {listen_endpoint(app)}, but codexd "
            f"({where}) attaches to {endpoint}: remove it if nothing else uses it"
        )
        app = None
    if kind != "unix":
        return problems, warnings
    socket_path = Path(path)
    if socket_path.exists():  # follows links (codex links PATH to its real socket)
        if not socket_path.is_socket():
            problems.append(f"{where}: {endpoint}: {path} exists but is not a socket")
    elif app is None:
        problems.append(
            f"{where}: nothing listens at {endpoint}: {path} does not exist (start Codex's "
            "daemon, 'codex app-server daemon start', and use its socketPath; or render the "
            "app-server service with --external-app-server)"
        )
    elif socket_path.parent not in pending_dirs:
        warnings.append(
            f"{where}: {path} does not exist: the app-server service {app.path.name} is "
            "installed but not listening (is it running? scripts/runtime/status-launchd.sh "
            f"--service {APP_SERVER}); codexd retries until it is"
        )
    return problems, warnings


def check_files(
    paths: Sequence[Path],
    pending_dirs: Sequence[Path] = (),
    peer_dirs: Sequence[Path] = (),
    warnings: list[str] | None = None,
) -> list[str]:
    """Check each file, then the codexd/conductor pair and the codexd/app-server pair: with one
    of a pair among ``paths``, the other is looked for beside it and in ``peer_dirs`` (the
    installed copies). Warnings (nothing that stops a service from working) go to ``warnings``."""
    problems: list[str] = []
    loaded: dict[str, Loaded] = {}
    for path in paths:
        item = _load(path, problems)
        if item is not None:
            problems.extend(check_loaded(item, pending_dirs))
            loaded.setdefault(item.service, item)
    if "codexd" in loaded or "conductor" in loaded:
        codexd = loaded.get("codexd") or _peer(loaded["conductor"], "codexd", peer_dirs)
        conductor = loaded.get("conductor") or _peer(loaded["codexd"], "conductor", peer_dirs)
        if codexd is not None and conductor is not None:
            problem = codexd_token_problem(codexd, conductor)
            if problem:
                problems.append(problem)
    if "codexd" in loaded or APP_SERVER in loaded:
        codexd = loaded.get("codexd") or _peer(loaded[APP_SERVER], "codexd", peer_dirs)
        if codexd is not None:
            app = loaded.get(APP_SERVER) or _peer(codexd, APP_SERVER, peer_dirs)
            more, said = external_problems(codexd, app, pending_dirs, APP_SERVER in loaded)
            problems.extend(more)
            if warnings is not None:
                warnings.extend(said)
    return problems


# --------------------------------------------------------------------------- runtime probes


@dataclass
class Probe:
    ok: bool
    what: str
    detail: str = ""


def _get(url: str, timeout: float, headers: Mapping[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _probe_http(
    name: str, base: str, path: str, timeout: float, headers: Mapping[str, str] | None = None
) -> tuple[Probe, bytes | None]:
    what = f"{name} GET {base}{path}"
    try:
        status, body = _get(base + path, timeout, headers or {})
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Probe(False, what, f"unreachable ({reason})"), None
    if status != 200:
        snippet = body[:200].decode("utf-8", "replace").strip().replace("\n", " ")
        return Probe(False, what, f"HTTP {status}: {snippet}"), body
    return Probe(True, what), body


def _probe_metrics(
    name: str, base: str, prefix: str, timeout: float, headers: Mapping[str, str] | None = None
) -> Probe:
    """``GET /metrics`` answers Prometheus text with the daemon's own ``<prefix>_*`` families."""
    probe, body = _probe_http(name, base, "/metrics", timeout, headers)
    if not probe.ok:
        return probe
    families = set()
    for line in (body or b"").decode("utf-8", "replace").splitlines():
        words = line.split()
        if len(words) >= 4 and words[:2] == ["#", "TYPE"] and words[2].startswith(prefix + "_"):
            families.add(words[2])
    if not families:
        return Probe(False, probe.what, f"no {prefix}_* metrics in the answer")
    probe.detail = f"{len(families)} {prefix}_* metric families"
    return probe


def read_token_file(path: str, what: str) -> str:
    """The token in ``path``, held to codexd's own rule (``codexd_trio/tokenfile.py``, loaded on
    its own); raises :class:`UsageError` with one line, never the token."""
    module = _checkout_module("_baa_runtime_tokenfile", "codexd_trio/tokenfile.py")
    try:
        return str(module.read_token_file(path, what=what))
    except module.TokenFileError as exc:
        raise UsageError(str(exc)) from None


def probe_codexd_token(ns: argparse.Namespace) -> tuple[str | None, str]:
    """codexd's bearer token for the probes, and where it came from (said in the output).

    The order codexd, the conductor and the CLI use (``--codexd-token-file``, else
    ``$BAA_CODEXD_TOKEN_FILE``, else ``$BAA_CODEXD_TOKEN``), then, so that a plain
    ``check-node.sh`` works on an installed node, the ``BAA_CODEXD_TOKEN_FILE`` of the installed
    codexd service file (``--installed-codexd``).
    """
    path = ns.codexd_token_file or os.environ.get("BAA_CODEXD_TOKEN_FILE", "")
    if path:
        return read_token_file(path, "codexd token"), path
    token = os.environ.get("BAA_CODEXD_TOKEN", "").strip()
    if token:
        return token, "$BAA_CODEXD_TOKEN"
    installed = Path(ns.installed_codexd) if ns.installed_codexd else None
    if installed is not None and installed.is_file():
        item = _load(installed, [])
        path = item.env.get("BAA_CODEXD_TOKEN_FILE", "") if item is not None else ""
        if path:
            return read_token_file(path, f"codexd token (named by {installed})"), path
    return None, ""


def probe_shared_token(ns: argparse.Namespace) -> tuple[str | None, str]:
    """The conductor's shared token for the ``/v1/codex/*`` probe, and where it came from.

    The order the conductor reads it in (``--shared-token-file``, else
    ``$BAA_SHARED_TOKEN_FILE``, else ``$BAA_SHARED_TOKEN``), then the ``BAA_SHARED_TOKEN_FILE``
    of the installed conductor service file (``--installed-conductor``).
    """
    path = ns.shared_token_file or os.environ.get("BAA_SHARED_TOKEN_FILE", "")
    if path:
        return read_token_file(path, "shared token"), path
    token = os.environ.get("BAA_SHARED_TOKEN", "").strip()
    if token:
        return token, "$BAA_SHARED_TOKEN"
    installed = Path(ns.installed_conductor) if ns.installed_conductor else None
    if installed is not None and installed.is_file():
        item = _load(installed, [])
        path = item.env.get("BAA_SHARED_TOKEN_FILE", "") if item is not None else ""
        if path:
            return read_token_file(path, f"shared token (named by {installed})"), path
    return None, ""


def probe_conductor_proxy(ns: argparse.Namespace, timeout: float) -> Probe:
    """``GET /v1/codex/sessions?limit=1`` on the conductor: it reaches codexd through its proxy
    (with codexd's token, if codexd has one), and takes the shared token when codexd has a
    token (then every ``/v1/codex/*`` call needs the caller's own credential)."""
    token, source = probe_shared_token(ns)
    auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
    probe, body = _probe_http(
        "conductor", ns.conductor_api, "/v1/codex/sessions?limit=1", timeout, auth
    )
    if not probe.ok:
        if probe.detail.startswith("HTTP 401"):
            probe.detail += (
                f" (the token from {source} is not the conductor's shared token)"
                if token is not None
                else " (codexd has a token, so the conductor wants its shared token: set "
                "BAA_SHARED_TOKEN_FILE or pass --shared-token-file)"
            )
        return probe
    if _json_data(body) is None:
        return Probe(False, probe.what, "not a JSON envelope with ok=true")
    probe.detail = "codexd answers through the conductor" + (
        f", shared token from {source}" if token is not None else ""
    )
    return probe


def _json_data(body: bytes | None) -> dict[str, Any] | None:
    try:
        doc = json.loads(body or b"")
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("ok") is True and isinstance(doc.get("data"), dict):
        data: dict[str, Any] = doc["data"]
        return data
    return None


def expected_server(ns: argparse.Namespace) -> tuple[str, str, str]:
    """(strategy, endpoint, where that came from) codexd should run with; all empty when not
    known: the flags (``--server-endpoint`` alone means external), else the installed codexd
    service file (``--installed-codexd``)."""
    if ns.server_strategy or ns.server_endpoint:
        strategy = ns.server_strategy or (
            "spawn" if ns.server_endpoint.startswith("stdio") else "external"
        )
        if strategy not in STRATEGIES:
            raise UsageError(f"--server-strategy must be spawn or external, got {strategy!r}")
        endpoint = ns.server_endpoint or ("stdio" if strategy == "spawn" else "")
        if strategy == "spawn":
            check_spawn_endpoint(endpoint)
            return strategy, endpoint, "--server-strategy"
        parse_external_endpoint(endpoint)
        return strategy, endpoint, "--server-endpoint"
    installed = Path(ns.installed_codexd) if ns.installed_codexd else None
    if installed is not None and installed.is_file():
        item = _load(installed, [])
        if item is not None:
            strategy = item.env.get("BAA_CODEXD_SERVER_STRATEGY", "spawn")
            return strategy, item.env.get("BAA_CODEXD_SERVER_ENDPOINT", ""), f"from {installed}"
    return "", "", ""


def installed_app_server(ns: argparse.Namespace) -> Path | None:
    path = Path(ns.installed_app_server) if ns.installed_app_server else None
    return path if path is not None and path.is_file() else None


def _websocket_upgrade(sock: socket.socket, host: str) -> str:
    """Ask for a WebSocket upgrade (what codexd does first), return the status line, then close
    the WebSocket again with a (masked, client) close frame 1000."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode("latin-1").strip()
    if status.split()[1:2] == ["101"]:
        mask = os.urandom(4)
        code = (1000).to_bytes(2, "big")
        with contextlib.suppress(OSError):
            sock.sendall(
                bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(code))
            )
    return status


def probe_endpoint(ns: argparse.Namespace, endpoint: str, timeout: float) -> Probe:
    """Whether something at codexd's external endpoint answers a WebSocket upgrade, as a codex
    app-server does (on a unix socket too); the socket must exist first."""
    what = f"app-server {endpoint}"
    try:
        kind, where, port = parse_external_endpoint(endpoint)
    except UsageError as exc:
        return Probe(False, what, f"not an endpoint codexd accepts: {exc}")
    installed = installed_app_server(ns)
    if installed is not None:
        stem = label(APP_SERVER) if ns.manager == "launchd" else f"baa-{APP_SERVER}"
        log = Path(ns.logs_dir) / ns.manager / f"{stem}.err.log"
        hint = (
            f"; the app-server service {installed} is installed but not listening: is it "
            f"running? (scripts/runtime/status-launchd.sh --service {APP_SERVER}; {log})"
        )
    else:
        hint = (
            "; start the app-server ('codex app-server daemon start', or install-launchd.sh "
            "--external-app-server)"
        )
    try:
        if kind == "unix":
            path = Path(where)
            if not path.exists():  # follows links: codex links PATH to its real socket
                gone = (
                    "is a link to a socket that is gone" if path.is_symlink() else "does not exist"
                )
                return Probe(False, what, f"{where} {gone}{hint}")
            if not path.is_socket():
                return Probe(False, what, f"{where} exists but is not a socket")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(where)
            except OSError:
                sock.close()
                raise
            host = "localhost"
        else:
            sock = socket.create_connection((where, port), timeout=timeout)
            host = f"[{where}]:{port}" if ":" in where else f"{where}:{port}"
        with sock:
            status = _websocket_upgrade(sock, host)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return Probe(False, what, f"nothing accepts connections ({reason}){hint}")
    if status.split()[1:2] != ["101"]:
        return Probe(
            False,
            what,
            f"answered {status or 'nothing'!r}, not a WebSocket upgrade (not an app-server?)",
        )
    return Probe(True, what, "answers a WebSocket upgrade")


def probe_node(ns: argparse.Namespace) -> list[Probe]:
    """Runtime probes of a running node (what ``check-node.sh`` reports)."""
    timeout = float(ns.timeout)
    out: list[Probe] = []
    conductor, codexd, status_api = ns.conductor_api, ns.codexd_api_base, ns.status_api
    token, token_source = probe_codexd_token(ns)
    if token is not None and not is_loopback(split_base("--codexd-api-base", codexd)[0]):
        # codexd only listens on loopback; anything else is not codexd and gets no secret.
        raise UsageError(f"refusing to send codexd's token to a non-loopback address: {codexd}")
    # Only codexd gets its token. /healthz is exempt from it, but sending it on every codexd
    # call keeps the probes the same as the conductor's and the CLI's calls.
    auth = {"Authorization": f"Bearer {token}"} if token is not None else {}

    for path in ("/healthz", "/readyz"):
        out.append(_probe_http("conductor", conductor, path, timeout)[0])
    probe, body = _probe_http("conductor", conductor, "/rolez", timeout)
    role = (body or b"").decode("utf-8", "replace").strip()
    if probe.ok and role != ns.expect_role:
        probe = Probe(False, probe.what, f"role is {role!r}, expected {ns.expect_role!r}")
    elif probe.ok:
        probe.detail = role
    out.append(probe)
    out.append(_probe_metrics("conductor", conductor, "conductor", timeout))
    out.append(probe_conductor_proxy(ns, timeout))

    out.append(_probe_http("codexd", codexd, "/healthz", timeout, auth)[0])
    probe, body = _probe_http("codexd", codexd, "/v1/codexd/status", timeout, auth)
    if not probe.ok and probe.detail.startswith("HTTP 401"):
        probe.detail += (
            f" (the token from {token_source} is not codexd's)"
            if token is not None
            else " (codexd wants its token: set BAA_CODEXD_TOKEN_FILE or pass --codexd-token-file)"
        )
    want_strategy, want_endpoint, want_source = expected_server(ns)
    seen_endpoint: str | None = None
    seen_external = False
    if probe.ok:
        data = _json_data(body)
        snapshot = (data or {}).get("snapshot") or {}
        child = ((snapshot.get("daemon") or {}).get("child")) or {}
        if not isinstance(child, dict):
            child = {}
        state = child.get("status")
        # A codexd from before strategy external reports no strategy: it spawns.
        seen_strategy = child.get("strategy") or "spawn"
        seen_endpoint = child.get("endpoint")
        seen_external = seen_strategy == "external"
        external = f"strategy external, {seen_endpoint}"
        if data is None:
            probe = Probe(False, probe.what, "not a JSON envelope with ok=true")
        elif want_strategy and seen_strategy != want_strategy:
            probe = Probe(
                False,
                probe.what,
                f"codexd's app-server strategy is {seen_strategy!r}, expected "
                f"{want_strategy!r} ({want_source})",
            )
        elif want_strategy == "external" and seen_endpoint != want_endpoint:
            probe = Probe(
                False,
                probe.what,
                f"codexd attaches to {seen_endpoint}, expected {want_endpoint} ({want_source})",
            )
        elif state != "running":
            detail = f"app-server child state is {state!r}, not 'running'"
            if seen_external:
                error = child.get("lastError")
                detail += f" ({external}" + (f"; last error: {error}" if error else "") + ")"
            probe = Probe(False, probe.what, detail)
        else:
            probe.detail = (
                "child running"
                + (f" ({external})" if seen_external else "")
                + (f", token from {token_source}" if token else "")
            )
            node_id = (snapshot.get("identity") or {}).get("nodeId")
            if ns.node_id and node_id is not None and node_id != ns.node_id:
                probe = Probe(
                    False, probe.what, f"codexd node id is {node_id!r}, expected {ns.node_id!r}"
                )
    out.append(probe)
    # Strategy external: is anything listening where codexd attaches (also when codexd is down)?
    endpoint = want_endpoint if want_strategy == "external" else seen_endpoint
    if (want_strategy == "external" or seen_external) and endpoint:
        out.append(probe_endpoint(ns, endpoint, timeout))
    out.append(_probe_metrics("codexd", codexd, "codexd", timeout, auth))

    out.append(_probe_http("status-api", status_api, "/healthz", timeout)[0])
    probe, body = _probe_http("status-api", status_api, "/v1/status", timeout)
    if probe.ok and _json_data(body) is None:
        probe = Probe(False, probe.what, "not a JSON envelope with ok=true")
    out.append(probe)
    out.append(_probe_metrics("status-api", status_api, "status_api", timeout))

    if not ns.skip_logs:
        logs = Path(ns.logs_dir) / ns.manager
        installed_app = installed_app_server(ns)
        for service in (APP_SERVER, *SERVICES) if installed_app else SERVICES:
            stem = label(service) if ns.manager == "launchd" else f"baa-{service}"
            for stream in ("out", "err"):
                path = logs / f"{stem}.{stream}.log"
                out.append(
                    Probe(
                        path.is_file(),
                        f"{ns.manager} log {path}",
                        "" if path.is_file() else "missing",
                    )
                )
    return out


# --------------------------------------------------------------------------- command line


def _prog() -> str:
    # The shell scripts export their own name so that errors read as theirs.
    return os.environ.get("BAA_RUNTIME_PROG") or "render.py"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, exit 2: the shell scripts relay it as is.
        print(f"{_prog()}: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="render.py", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("render", help="render plists or units")
    add_config_flags(r)
    r.add_argument("--templates", default=str(SCRIPT_REPO), help="folder holding launchd/ systemd/")
    group = r.add_mutually_exclusive_group(required=True)
    group.add_argument("--out-dir")
    group.add_argument("--stdout", action="store_true")

    c = sub.add_parser("check", help="static checks of rendered files")
    c.add_argument("files", nargs="+")
    c.add_argument(
        "--pending-dir",
        action="append",
        default=[],
        help="a directory the install will create (its absence is not a problem)",
    )
    c.add_argument(
        "--peer-dir",
        action="append",
        default=[],
        help="where to find the installed codexd/conductor file that is not among FILES",
    )

    pr = sub.add_parser("probe", help="runtime probes of a running node")
    pr.add_argument("--manager", choices=("launchd", "systemd"), default=default_manager())
    pr.add_argument("--codexd-api-base", default=DEFAULT_CODEXD_BASE)
    pr.add_argument("--conductor-api", default=DEFAULT_CONDUCTOR_API)
    pr.add_argument("--status-api", default=DEFAULT_STATUS_API)
    pr.add_argument("--expect-role", default="leader", choices=("leader", "standby", "degraded"))
    pr.add_argument("--node-id", default="")
    pr.add_argument("--codexd-token-file", default="", help="codexd's token (mode 600)")
    pr.add_argument(
        "--installed-codexd",
        default="",
        help="installed codexd plist/unit whose BAA_CODEXD_TOKEN_FILE to use when none is given",
    )
    pr.add_argument("--shared-token-file", default="", help="the conductor's shared token")
    pr.add_argument(
        "--installed-conductor",
        default="",
        help="installed conductor plist/unit whose BAA_SHARED_TOKEN_FILE to use when none is "
        "given",
    )
    pr.add_argument(
        "--installed-app-server",
        default="",
        help="installed codex-app-server plist/unit (its logs; a hint when it does not listen)",
    )
    pr.add_argument("--server-strategy", default="", help="expect codexd to run this strategy")
    pr.add_argument(
        "--server-endpoint", default="", help="expect codexd to attach here (implies external)"
    )
    pr.add_argument("--logs-dir", default=str(SCRIPT_REPO / "var" / "logs"))
    pr.add_argument("--skip-logs", action="store_true")
    pr.add_argument("--timeout", default="5")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        if ns.command == "render":
            config = resolve_config(ns)
            rendered = render_all(config, Path(ns.templates))
            if ns.stdout:
                for _service, (_name, body) in rendered.items():
                    sys.stdout.write(body.decode())
                return 0
            out_dir = Path(ns.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            for service, (name, body) in rendered.items():
                target = out_dir / name
                target.write_bytes(body)
                print(f"file\t{service}\t{target}")
            for folder in dirs_to_create(config):
                print(f"dir\t{folder}")
            if config.socket_dir is not None:
                # codex app-server --listen unix://PATH does not create the folder of PATH. Not
                # a "dir": that may be any folder (/tmp, ~/.codex), which an install must not
                # chown to --user unless it creates it.
                print(f"sockdir\t{config.socket_dir}")
            return 0
        if ns.command == "check":
            warnings: list[str] = []
            problems = check_files(
                [Path(f) for f in ns.files],
                [Path(d) for d in ns.pending_dir],
                [Path(d) for d in ns.peer_dir],
                warnings,
            )
            for line in warnings:
                # On stderr: the scripts read problems from stdout, and a warning is not one.
                print(f"warning: {line}", file=sys.stderr)
            for line in problems:
                print(line)
            return 1 if problems else 0
        for key in ("codexd_api_base", "conductor_api", "status_api"):
            split_base("--" + key.replace("_", "-"), getattr(ns, key))
        try:
            float(ns.timeout)
        except ValueError:
            raise UsageError(f"--timeout must be a number of seconds, got {ns.timeout!r}") from None
        probes = probe_node(ns)
        for item in probes:
            tag = "ok  " if item.ok else "FAIL"
            print(f"{tag} {item.what}" + (f": {item.detail}" if item.detail else ""))
        return 0 if all(item.ok for item in probes) else 1
    except UsageError as exc:
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{_prog()}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
