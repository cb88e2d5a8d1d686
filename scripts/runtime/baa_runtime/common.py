"""The vocabulary every job shares: service names and labels, the address, origin and endpoint
rules, and the standard-library-only modules of the checkout this package loads by path
(``codexd_trio/base/codexbin.py``, ``addresses.py``, ``tokenfile.py``).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# scripts/runtime/baa_runtime/common.py -> the checkout.
SCRIPT_REPO = Path(__file__).resolve().parents[3]
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
    """codexd's own rule (``codexd_trio/base/addresses.py``, loaded on its own)."""
    return bool(_checkout_module("_baa_runtime_addresses", "codexd_trio/base/addresses.py")
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

    Mirrors ``codexd_trio.base.addresses.normalize_origin``, which the daemons use (and refuses
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
    ``codexd_trio.core.config``), which this file cannot import; and refuses two endpoints codexd
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
    """``codexd_trio/base/codexbin.py`` of this checkout: how codexd finds the native binary."""
    return _checkout_module("_baa_runtime_codexbin", "codexd_trio/base/codexbin.py")


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


def _abs(raw: str) -> Path:
    return Path(os.path.expanduser(raw)).absolute()


def _which(name: str, path_env: str) -> Path | None:
    for folder in path_env.split(":"):
        candidate = Path(folder) / name
        if folder and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
