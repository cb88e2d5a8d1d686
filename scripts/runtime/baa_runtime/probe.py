"""Runtime probes of a running node over HTTP, and of an external app-server endpoint with a
websocket handshake of its own (standard library only).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baa_runtime.check_peers import _load
from baa_runtime.common import (
    APP_SERVER,
    SERVICES,
    STRATEGIES,
    UsageError,
    _checkout_module,
    check_spawn_endpoint,
    is_loopback,
    label,
    parse_external_endpoint,
    split_base,
)

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
    """The token in ``path``, held to codexd's own rule
    (``codexd_trio/base/tokenfile.py``, loaded on its own); raises :class:`UsageError` with one
    line, never the token."""
    module = _checkout_module("_baa_runtime_tokenfile", "codexd_trio/base/tokenfile.py")
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
