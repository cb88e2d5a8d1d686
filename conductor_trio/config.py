"""Conductor and status-api configuration: defaults, then environment, then command-line flags.

A bad value raises :class:`ConfigError` with a one-line message; the CLIs print it and exit 2.
The table of settings is in ``docs/conductor.md``.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from codexd_trio.base.addresses import is_loopback
from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.base.settings import (
    ConfigError,
    parse_origins,
    resolve_codexd_token,
    resolve_shared_token,
    split_base,
)
from conductor_trio.sinks import NotifySink, notify_sinks

Role = Literal["primary", "standby"]

__all__ = [
    "ConductorConfig",
    "ConfigError",
    "NotifySink",
    "StatusApiConfig",
    "add_conductor_flags",
    "add_status_api_flags",
    "check_listen",
    "parse_labels",
    "parse_lease_store",
    "resolve_conductor",
    "resolve_shared_token",
    "resolve_status_api",
    "split_base",
]

DEFAULT_CONDUCTOR_API = "http://127.0.0.1:4317"
DEFAULT_STATUS_API = "http://127.0.0.1:4318"
DEFAULT_CODEXD_API = "http://127.0.0.1:4319"
DEFAULT_LEASE_KEY = "/baa-conductor/leader"

@dataclass(frozen=True)
class ConductorConfig:
    node_id: str = "mini-main"
    local_api: str = DEFAULT_CONDUCTOR_API
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    role: Role = "primary"
    host: str = ""
    public_api_base: str | None = None
    codexd_base: str = DEFAULT_CODEXD_API
    state_dir: Path = REPO_ROOT / "var" / "state"
    # Never shown by `config`: only whether a token is configured and where it came from.
    shared_token: str | None = None
    token_source: str = "none"
    # codexd's own bearer token (BAA_CODEXD_TOKEN[_FILE]), passed on every call to codexd.
    codexd_token: str | None = None
    lease_ttl_s: float = 30.0
    lease_renew_s: float = 10.0
    # "file" (one node) or the etcd endpoints ("host:port", ...) of a shared lease.
    lease_store: str = "file"
    lease_endpoints: tuple[str, ...] = ()
    lease_key: str = DEFAULT_LEASE_KEY
    # May a conductor that does not lead forward writes under /v1/codex/*? ("refuse" | "allow")
    standby_writes: str = "refuse"
    heartbeat_s: float = 5.0
    codexd_timeout_s: float = 10.0
    max_body_bytes: int = 1024 * 1024
    shutdown_grace_s: float = 5.0
    # Notifications (issue 25): the sinks, and how many notifications wait at most.
    notify_sinks: tuple[NotifySink, ...] = ()
    notify_outbox_max: int = 1000
    # How long a notification's Accept/Decline links work (at most 900 s).
    action_ttl_s: float = 900.0
    # The fleet (issue 28): where other conductors reach this one (never guessed), this node's
    # labels for placement, and whether it is a fleet node (every node works; not_leader only
    # for leader-only operations) rather than one of a primary/standby pair.
    advertise_url: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    fleet: bool = False

    @property
    def fleet_prefix(self) -> str:
        """The etcd prefix of the fleet's keys: the lease key's parent (``/baa-conductor``)."""
        parent = self.lease_key.rstrip("/").rpartition("/")[0]
        return parent or "/baa-conductor"

    @property
    def listen_host(self) -> str:
        return split_base(self.local_api)[0]

    @property
    def listen_port(self) -> int:
        return split_base(self.local_api)[1]

    @property
    def exposed(self) -> bool:
        """Listening beyond loopback: every write then needs the shared token."""
        return not is_loopback(self.listen_host)

    @property
    def conductor_state(self) -> Path:
        return self.state_dir / "conductor"

    @property
    def holder_id(self) -> str:
        return f"{self.node_id}@{self.host}"

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("shared_token")
        out.pop("codexd_token")
        out["token_configured"] = self.shared_token is not None
        out["codexd_token_configured"] = self.codexd_token is not None
        out["state_dir"] = str(self.state_dir)
        out["allowed_hosts"] = list(self.allowed_hosts)
        out["allowed_origins"] = list(self.allowed_origins)
        out["lease_endpoints"] = list(self.lease_endpoints)
        out["labels"] = dict(self.labels)
        # Sink URLs carry secrets (topics, tokens): only their scheme, id and kinds.
        out["notify_sinks"] = [{"id": s.id, "scheme": s.scheme, "kinds": list(s.kinds)}
                               for s in self.notify_sinks]
        return out


@dataclass(frozen=True)
class StatusApiConfig:
    local_api: str = DEFAULT_STATUS_API
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    conductor_base: str = DEFAULT_CONDUCTOR_API
    conductor_timeout_s: float = 3.0

    @property
    def listen_host(self) -> str:
        return split_base(self.local_api)[0]

    @property
    def listen_port(self) -> int:
        return split_base(self.local_api)[1]

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["allowed_hosts"] = list(self.allowed_hosts)
        out["allowed_origins"] = list(self.allowed_origins)
        return out


def check_listen(base: str, allowed: Sequence[str], *, variable: str) -> None:
    """A non-loopback listen host must be listed in the allow-list."""
    host, _ = split_base(base)
    if not is_loopback(host) and host not in allowed:
        raise ConfigError(
            f"refusing to listen on non-loopback host {host!r}: "
            f"list it in {variable} to allow it"
        )


def _floats(value: str, name: str, *, minimum: float = 0.001) -> float:
    try:
        out = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if out < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value!r}")
    return out


def _whole(value: str, name: str, *, minimum: int) -> int:
    try:
        out = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if out < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value!r}")
    return out


def _hosts(value: str) -> tuple[str, ...]:
    return tuple(h.strip() for h in value.split(",") if h.strip())


def add_conductor_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``conductor start`` / ``conductor config`` (all default to ``None``)."""
    parser.add_argument("--node-id")
    parser.add_argument("--local-api", help="listen base, e.g. http://127.0.0.1:4317")
    parser.add_argument("--allowed-host", action="append", dest="allowed_hosts",
                        help="a non-loopback host the API may listen on (repeatable)")
    parser.add_argument("--allowed-origin", action="append", dest="allowed_origins",
                        help="an origin besides the conductor's own that may call it (repeatable)")
    parser.add_argument("--role", help="primary or standby")
    parser.add_argument("--host", help="host name recorded in the lease")
    parser.add_argument("--public-api-base")
    parser.add_argument("--codexd-base", help="codexd local API base (loopback)")
    parser.add_argument("--state-dir", help="state root; the conductor writes under conductor/")
    parser.add_argument("--log-format", help="text (default) or json; env BAA_LOG_FORMAT")
    parser.add_argument("--log-file", help="log to this file (rolled over at 32 MiB, 3 kept) "
                        "instead of stderr; env BAA_CONDUCTOR_LOG_FILE")
    parser.add_argument("--token-file", help="file holding the shared bearer token")
    parser.add_argument("--lease-store",
                        help="file (default) or etcd://HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--lease-key",
                        help=f"the etcd key of the lease (default {DEFAULT_LEASE_KEY})")
    parser.add_argument("--lease-ttl", help="lease TTL in seconds (default 30; 10 with etcd)")
    parser.add_argument("--lease-renew",
                        help="lease renew interval in seconds (default 10; TTL/3 with etcd)")
    parser.add_argument("--standby-writes",
                        help="refuse (default with etcd) or allow: POST /v1/codex/* off the leader")
    parser.add_argument("--heartbeat", help="heartbeat interval in seconds (default 5)")
    parser.add_argument("--codexd-token-file",
                        help="file (mode 600) holding codexd's bearer token, sent to codexd")
    parser.add_argument("--codexd-timeout",
                        help="seconds one call to codexd may take (default 10)")
    parser.add_argument("--max-body-bytes", help="request body limit in bytes (default 1048576)")
    parser.add_argument("--shutdown-grace",
                        help="seconds in-flight requests get on SIGTERM (default 5)")
    parser.add_argument("--notify-url", action="append", dest="notify_urls",
                        help="an Apprise URL to notify, optionally [kind,...]URL (repeatable; "
                        "env BAA_NOTIFY_URLS)")
    parser.add_argument("--notify-urls-file",
                        help="file (mode 600) with one notification URL per line; env "
                        "BAA_NOTIFY_URLS_FILE")
    parser.add_argument("--notify-outbox-max",
                        help="notifications kept waiting at most (default 1000)")
    parser.add_argument("--action-ttl",
                        help="seconds a notification's Accept/Decline links work (max 900)")
    parser.add_argument("--advertise-url",
                        help="the API base other conductors of the fleet reach this one at; "
                        "env BAA_CONDUCTOR_ADVERTISE_URL")
    parser.add_argument("--label", action="append", dest="labels",
                        help="a placement label of this node, NAME or NAME=VALUE (repeatable; "
                        "env BAA_CONDUCTOR_LABELS, comma-separated)")
    parser.add_argument("--fleet", action="store_true", default=None,
                        help="a fleet node: every node works, not_leader refuses only "
                        "leader-only operations (needs etcd and --advertise-url); env "
                        "BAA_CONDUCTOR_FLEET=1")


def resolve_conductor(args: argparse.Namespace, env: Mapping[str, str] | None = None
                      ) -> ConductorConfig:
    """Defaults ← environment ← flags.

    Raises:
        ConfigError: a value that cannot be used.
    """
    env = os.environ if env is None else env

    def pick(flag: Any, *names: str) -> str | None:
        if flag is not None:
            return str(flag)
        for name in names:
            value = env.get(name)
            if value:
                return value
        return None

    d = ConductorConfig()
    node_id = pick(args.node_id, "BAA_NODE_ID") or d.node_id
    local_api = pick(args.local_api, "BAA_CONDUCTOR_LOCAL_API") or d.local_api
    allowed = tuple(args.allowed_hosts or ()) or _hosts(
        env.get("BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS", ""))
    role = pick(args.role, "BAA_CONDUCTOR_ROLE") or d.role
    if role not in ("primary", "standby"):
        raise ConfigError(f"BAA_CONDUCTOR_ROLE must be primary or standby, got {role!r}")
    host = pick(args.host, "BAA_CONDUCTOR_HOST") or socket.gethostname()
    public = pick(args.public_api_base, "BAA_CONDUCTOR_PUBLIC_API_BASE", "BAA_CONTROL_API_BASE")
    codexd = (pick(args.codexd_base, "BAA_CODEXD_LOCAL_API_BASE") or d.codexd_base).rstrip("/")
    codexd_host, _ = split_base(codexd)
    if not is_loopback(codexd_host):
        raise ConfigError(f"BAA_CODEXD_LOCAL_API_BASE must be a loopback address, got {codexd!r}")
    state_dir = Path(pick(args.state_dir, "BAA_CONDUCTOR_STATE_DIR") or d.state_dir)
    token, source = resolve_shared_token(env, token_file=args.token_file)
    codexd_token, _ = resolve_codexd_token(env, token_file=args.codexd_token_file)
    origins = parse_origins(
        args.allowed_origins or [env.get("BAA_CONDUCTOR_ALLOWED_ORIGINS", "")],
        variable="BAA_CONDUCTOR_ALLOWED_ORIGINS",
    )
    store = pick(args.lease_store, "BAA_CONDUCTOR_LEASE_STORE") or "file"
    endpoints = parse_lease_store(store)
    key = pick(args.lease_key, "BAA_CONDUCTOR_LEASE_KEY") or DEFAULT_LEASE_KEY
    if not key.strip() or any(c.isspace() for c in key):
        raise ConfigError(f"BAA_CONDUCTOR_LEASE_KEY must be a key without spaces, got {key!r}")
    ttl_text = pick(args.lease_ttl, "BAA_CONDUCTOR_LEASE_TTL_S")
    ttl = _floats(ttl_text or ("10" if endpoints else "30"), "lease TTL")
    if endpoints:
        # etcd leases have whole-second TTLs and a floor (about 1.5 × the election timeout,
        # 2 s by default) below which etcd silently lengthens them: refuse rather than surprise.
        if ttl != int(ttl) or ttl < 2:
            raise ConfigError(
                f"BAA_CONDUCTOR_LEASE_TTL_S must be a whole number of seconds >= 2 with etcd, "
                f"got {ttl_text!r}")
        renew = ttl / 3
    else:
        renew = _floats(pick(args.lease_renew, "BAA_CONDUCTOR_LEASE_RENEW_S") or "10",
                        "lease renew")
        if renew >= ttl:
            raise ConfigError(f"lease renew interval ({renew} s) must be below the TTL ({ttl} s)")
    # A standby refuses writes with not_leader (CONTRACT), whichever store holds the lease.
    writes = pick(args.standby_writes, "BAA_CONDUCTOR_STANDBY_WRITES") or "refuse"
    if writes not in ("refuse", "allow"):
        raise ConfigError(f"BAA_CONDUCTOR_STANDBY_WRITES must be refuse or allow, got {writes!r}")
    heartbeat = _floats(pick(args.heartbeat, "BAA_CONDUCTOR_HEARTBEAT_S") or "5", "heartbeat")
    codexd_timeout = _floats(
        pick(args.codexd_timeout, "BAA_CONDUCTOR_CODEXD_TIMEOUT_S") or str(d.codexd_timeout_s),
        "BAA_CONDUCTOR_CODEXD_TIMEOUT_S")
    max_body = _whole(pick(args.max_body_bytes, "BAA_CONDUCTOR_MAX_BODY_BYTES")
                      or str(d.max_body_bytes), "BAA_CONDUCTOR_MAX_BODY_BYTES", minimum=1024)
    # 0 is allowed: stop at once, in-flight requests cut.
    grace = _floats(pick(args.shutdown_grace, "BAA_CONDUCTOR_SHUTDOWN_GRACE_S")
                    or str(d.shutdown_grace_s), "BAA_CONDUCTOR_SHUTDOWN_GRACE_S", minimum=0)
    sinks = notify_sinks(getattr(args, "notify_urls", None),
                          getattr(args, "notify_urls_file", None), env)
    outbox_max = _whole(pick(getattr(args, "notify_outbox_max", None),
                             "BAA_NOTIFY_OUTBOX_MAX") or str(d.notify_outbox_max),
                        "BAA_NOTIFY_OUTBOX_MAX", minimum=1)
    action_ttl = _floats(pick(getattr(args, "action_ttl", None), "BAA_ACTION_TTL_S")
                         or str(d.action_ttl_s), "BAA_ACTION_TTL_S", minimum=1)
    if action_ttl > 900:
        raise ConfigError(f"BAA_ACTION_TTL_S must be at most 900 (15 minutes), got {action_ttl}")
    advertise = pick(getattr(args, "advertise_url", None), "BAA_CONDUCTOR_ADVERTISE_URL")
    if advertise is not None:
        advertise = advertise.rstrip("/")
        split_base(advertise)
    labels = parse_labels(getattr(args, "labels", None)
                          or _hosts(env.get("BAA_CONDUCTOR_LABELS", "")))
    fleet_flag = getattr(args, "fleet", None)
    fleet = bool(fleet_flag) if fleet_flag is not None else (
        env.get("BAA_CONDUCTOR_FLEET", "") in ("1", "true", "yes"))
    if fleet and not endpoints:
        raise ConfigError("a fleet node needs an etcd lease store (--lease-store etcd://...)")
    if fleet and advertise is None and public is None:
        raise ConfigError("a fleet node needs --advertise-url (BAA_CONDUCTOR_ADVERTISE_URL): "
                          "the address other conductors reach it at")
    config = ConductorConfig(
        advertise_url=advertise, labels=labels, fleet=fleet,
        notify_sinks=sinks, notify_outbox_max=outbox_max, action_ttl_s=action_ttl,
        node_id=node_id, local_api=local_api.rstrip("/"), allowed_hosts=allowed,
        allowed_origins=origins, codexd_token=codexd_token,
        role=role,  # type: ignore[arg-type]  # checked above
        host=host, public_api_base=public, codexd_base=codexd, state_dir=state_dir,
        shared_token=token, token_source=source, lease_ttl_s=ttl, lease_renew_s=renew,
        heartbeat_s=heartbeat, lease_store="etcd" if endpoints else "file",
        lease_endpoints=endpoints, lease_key=key, standby_writes=writes,
        codexd_timeout_s=codexd_timeout, max_body_bytes=max_body, shutdown_grace_s=grace,
    )
    check_listen(config.local_api, allowed, variable="BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS")
    return config


def parse_labels(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["gpu", "repo=baa"]`` → ``(("gpu", ""), ("repo", "baa"))``.

    Raises:
        ConfigError: an empty name or one with spaces.
    """
    out: dict[str, str] = {}
    for raw in values:
        name, _, value = raw.strip().partition("=")
        name = name.strip()
        if not name or any(c.isspace() for c in name):
            raise ConfigError(f"a label is NAME or NAME=VALUE without spaces, got {raw!r}")
        out[name] = value.strip()
    return tuple(sorted(out.items()))


def parse_lease_store(value: str) -> tuple[str, ...]:
    """``file`` → ``()``; ``etcd://HOST:PORT[,HOST:PORT...]`` → the ``host:port`` endpoints.

    Raises:
        ConfigError: anything else.
    """
    if value == "file":
        return ()
    prefix = "etcd://"
    if not value.startswith(prefix):
        raise ConfigError(
            f"BAA_CONDUCTOR_LEASE_STORE must be file or etcd://HOST:PORT[,HOST:PORT...], "
            f"got {value!r}")
    endpoints: list[str] = []
    for part in value[len(prefix):].rstrip("/").split(","):
        host, sep, port = part.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(
                c in host for c in "/@?# "):
            raise ConfigError(
                f"BAA_CONDUCTOR_LEASE_STORE: {part.strip()!r} is not HOST:PORT in {value!r}")
        endpoints.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return tuple(endpoints)


def add_status_api_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``status-api start`` / ``status-api config``."""
    parser.add_argument("--local-api", help="listen base, e.g. http://127.0.0.1:4318")
    parser.add_argument("--allowed-host", action="append", dest="allowed_hosts")
    parser.add_argument("--allowed-origin", action="append", dest="allowed_origins")
    parser.add_argument("--conductor-base", help="the conductor to read, e.g. http://127.0.0.1:4317")
    parser.add_argument("--conductor-timeout",
                        help="seconds one read of the conductor may take (default 3)")
    parser.add_argument("--log-format", help="text (default) or json; env BAA_LOG_FORMAT")
    parser.add_argument("--log-file", help="log to this file (rolled over at 32 MiB, 3 kept) "
                        "instead of stderr; env BAA_STATUS_API_LOG_FILE")


def resolve_status_api(args: argparse.Namespace, env: Mapping[str, str] | None = None
                       ) -> StatusApiConfig:
    """Defaults ← environment ← flags for the status-api."""
    env = os.environ if env is None else env
    d = StatusApiConfig()
    local_api = args.local_api or env.get("BAA_STATUS_API_LOCAL_API") or d.local_api
    allowed = tuple(args.allowed_hosts or ()) or _hosts(
        env.get("BAA_STATUS_API_ALLOWED_HOSTS", ""))
    conductor = (args.conductor_base or env.get("BAA_CONDUCTOR_LOCAL_API")
                 or d.conductor_base).rstrip("/")
    split_base(conductor)
    timeout = _floats(args.conductor_timeout or env.get("BAA_STATUS_API_CONDUCTOR_TIMEOUT_S")
                      or str(d.conductor_timeout_s), "BAA_STATUS_API_CONDUCTOR_TIMEOUT_S")
    origins = parse_origins(
        args.allowed_origins or [env.get("BAA_STATUS_API_ALLOWED_ORIGINS", "")],
        variable="BAA_STATUS_API_ALLOWED_ORIGINS",
    )
    config = StatusApiConfig(local_api=local_api.rstrip("/"), allowed_hosts=allowed,
                             allowed_origins=origins, conductor_base=conductor,
                             conductor_timeout_s=timeout)
    check_listen(config.local_api, allowed, variable="BAA_STATUS_API_ALLOWED_HOSTS")
    return config
