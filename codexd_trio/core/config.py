"""codexd configuration: defaults, then environment, then command-line flags.

Every setting has all three (CONTRACT.md, "Configuration"). A bad value raises
:class:`ConfigError` whose message is one human line; the CLI prints it and exits 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from codexd_trio.base.addresses import is_loopback
from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.base.settings import (
    ConfigError,
    parse_hosts,
    parse_origins,
    resolve_codexd_token,
    split_base,
)

DEFAULT_API_BASE = "http://127.0.0.1:4319"
DEFAULT_EVENT_STREAM_PATH = "/v1/codexd/events"


@dataclass(frozen=True)
class CodexdConfig:
    node_id: str = "mini-main"
    local_api_base: str = DEFAULT_API_BASE
    repo_root: Path = REPO_ROOT
    logs_dir: Path = REPO_ROOT / "var" / "logs"
    state_dir: Path = REPO_ROOT / "var" / "state"
    event_stream_path: str = DEFAULT_EVENT_STREAM_PATH
    server_endpoint: str = "stdio"
    server_strategy: str = "spawn"
    server_command: str = "codex"
    server_args: tuple[str, ...] = ("app-server",)
    server_cwd: Path | None = None
    shutdown_grace_s: float = 10.0
    event_cache_size: int = 50
    max_body_bytes: int = 1024 * 1024
    request_timeout_s: float = 30.0
    # How long a `clients` approval waits for a decision before codexd declines it.
    approval_timeout_s: float = 300.0
    subscriber_queue: int = 1024
    # Child restart delay: starts here, doubles per consecutive failure, capped (with jitter).
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    # events.jsonl retention: segments of this size, this many sealed ones kept (~1 GiB).
    event_log_segment_mb: int = 64
    event_log_segments: int = 16
    # Conversation records (transcripts): segments of this size, this many kept (~4 GiB); they
    # hold no deltas, so they outlive the event log's segments by far (docs/design-notes.md).
    conversation_segment_mb: int = 64
    conversation_segments: int = 64
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Who may call (CONTRACT.md): origins besides codexd's own, and the optional bearer token.
    allowed_origins: tuple[str, ...] = ()
    # Host names callers may use besides loopback and the listen host (a name that resolves to
    # 127.0.0.1 here, or the Host a local reverse proxy forwards); codexd still listens on
    # loopback only.
    allowed_hosts: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    token_source: str = "none"
    # stderr logs: "text" (a terminal) or "json" (launchd/systemd; one object per line).
    log_format: str = "text"
    # Log to this file instead of stderr, rolled over by size (the service templates set it).
    log_file: Path | None = None

    @property
    def host(self) -> str:
        return split_base(self.local_api_base)[0]

    @property
    def port(self) -> int:
        return split_base(self.local_api_base)[1]

    @property
    def codexd_logs(self) -> Path:
        return self.logs_dir / "codexd"

    @property
    def codexd_state(self) -> Path:
        return self.state_dir / "codexd"

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        out["extra_env"] = sorted(self.extra_env)
        # Never the token itself: only whether there is one and where it came from.
        out.pop("token")
        out["token_configured"] = self.token is not None
        return out


def _check_external_endpoint(endpoint: str) -> None:
    """``external`` attaches to a local app-server: a unix socket, or ws:// on loopback."""
    from codexd_trio.protocol.transport import parse_endpoint

    if not endpoint:
        raise ConfigError(
            "strategy external needs --server-endpoint unix:///path/to/socket "
            "or ws://127.0.0.1:PORT"
        )
    try:
        kind, host, _ = parse_endpoint(endpoint)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if kind == "ws" and not is_loopback(host):
        raise ConfigError(f"an external ws:// endpoint must be on loopback, got {endpoint!r}")


class _FlagParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line for the CLI (exit 2), never argparse's usage block and SystemExit.
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    # No abbreviations: the commands' own options (``--state``, ``--all``, ``--last``) pass
    # through to their parsers instead of being taken for a prefix of a configuration flag.
    p = _FlagParser(add_help=False, allow_abbrev=False)
    p.add_argument("--node-id")
    p.add_argument("--local-api-base")
    p.add_argument("--repo-root")
    p.add_argument("--logs-dir")
    p.add_argument("--state-dir")
    p.add_argument("--event-stream-path")
    p.add_argument("--server-endpoint")
    p.add_argument("--server-strategy")
    p.add_argument("--server-command")
    p.add_argument("--server-arg", action="append", dest="server_args")
    p.add_argument("--server-cwd")
    p.add_argument("--shutdown-grace", dest="shutdown_grace")
    p.add_argument("--event-cache-size")
    p.add_argument("--max-body-bytes")
    p.add_argument("--request-timeout")
    p.add_argument("--approval-timeout")
    p.add_argument("--subscriber-queue")
    p.add_argument("--restart-backoff")
    p.add_argument("--restart-backoff-max")
    p.add_argument("--event-log-segment-mb")
    p.add_argument("--event-log-segments")
    p.add_argument("--conversation-segment-mb")
    p.add_argument("--conversation-segments")
    p.add_argument("--allowed-origin", action="append", dest="allowed_origins")
    p.add_argument("--allowed-host", action="append", dest="allowed_hosts")
    p.add_argument("--token-file")
    p.add_argument("--log-format")
    p.add_argument("--log-file")
    return p


CONFIG_FLAGS_HELP = """\
configuration (flag / environment variable / default):
  --node-id             BAA_NODE_ID                      mini-main
  --local-api-base      BAA_CODEXD_LOCAL_API_BASE        http://127.0.0.1:4319 (loopback; port 0 ok)
  --repo-root           BAA_CODEXD_REPO_ROOT             this checkout
  --logs-dir            BAA_CODEXD_LOGS_DIR              <repo>/var/logs (then codexd/)
  --state-dir           BAA_CODEXD_STATE_DIR             <repo>/var/state (then codexd/)
  --event-stream-path   BAA_CODEXD_EVENT_STREAM_PATH     /v1/codexd/events
  --server-endpoint     BAA_CODEXD_SERVER_ENDPOINT       stdio (external: unix:///path, ws://127.0.0.1:P)
  --server-strategy     BAA_CODEXD_SERVER_STRATEGY       spawn (or external: attach, never spawn)
  --server-command      BAA_CODEXD_SERVER_COMMAND        codex (the project's pinned native binary)
  --server-arg ARG      BAA_CODEXD_SERVER_ARGS           app-server (repeatable; env: spaces)
  --server-cwd          BAA_CODEXD_SERVER_CWD            the repo root
  --shutdown-grace S    BAA_CODEXD_SHUTDOWN_GRACE_S      10
  --event-cache-size N  BAA_CODEXD_EVENT_CACHE_SIZE      50
  --max-body-bytes N    BAA_CODEXD_MAX_BODY_BYTES        1048576
  --request-timeout S   BAA_CODEXD_REQUEST_TIMEOUT_S     30 (one JSON-RPC request to the child)
  --approval-timeout S  BAA_CODEXD_APPROVAL_TIMEOUT_S    300
  --subscriber-queue N  BAA_CODEXD_SUBSCRIBER_QUEUE      1024 (events a websocket may lag)
  --restart-backoff S   BAA_CODEXD_RESTART_BACKOFF_S     0.5 (first child restart delay)
  --restart-backoff-max S BAA_CODEXD_RESTART_BACKOFF_MAX_S 30
  --event-log-segment-mb N BAA_CODEXD_EVENT_LOG_SEGMENT_MB 64 (events.jsonl is sealed at this size)
  --event-log-segments N BAA_CODEXD_EVENT_LOG_SEGMENTS     16 (sealed segments kept)
  --conversation-segment-mb N BAA_CODEXD_CONVERSATION_SEGMENT_MB 64 (transcript records)
  --conversation-segments N BAA_CODEXD_CONVERSATION_SEGMENTS  64 (record segments kept)
  --allowed-origin O    BAA_CODEXD_ALLOWED_ORIGINS       none (repeatable; env: comma-separated)
  --allowed-host H      BAA_CODEXD_ALLOWED_HOSTS         none (a further Host name; repeatable;
                                                         env: comma-separated)
  --token-file PATH     BAA_CODEXD_TOKEN_FILE            none (mode 600; or BAA_CODEXD_TOKEN)
  --log-format F        BAA_LOG_FORMAT                   text (or json: one object per line)
  --log-file PATH       BAA_CODEXD_LOG_FILE              none: stderr (a file rolls over at
                                                         32 MiB, 3 older files kept)
"""

_ENV = {
    "node_id": "BAA_NODE_ID",
    "local_api_base": "BAA_CODEXD_LOCAL_API_BASE",
    "repo_root": "BAA_CODEXD_REPO_ROOT",
    "logs_dir": "BAA_CODEXD_LOGS_DIR",
    "state_dir": "BAA_CODEXD_STATE_DIR",
    "event_stream_path": "BAA_CODEXD_EVENT_STREAM_PATH",
    "server_endpoint": "BAA_CODEXD_SERVER_ENDPOINT",
    "server_strategy": "BAA_CODEXD_SERVER_STRATEGY",
    "server_command": "BAA_CODEXD_SERVER_COMMAND",
    "server_args": "BAA_CODEXD_SERVER_ARGS",
    "server_cwd": "BAA_CODEXD_SERVER_CWD",
    "shutdown_grace": "BAA_CODEXD_SHUTDOWN_GRACE_S",
    "event_cache_size": "BAA_CODEXD_EVENT_CACHE_SIZE",
    "max_body_bytes": "BAA_CODEXD_MAX_BODY_BYTES",
    "request_timeout": "BAA_CODEXD_REQUEST_TIMEOUT_S",
    "approval_timeout": "BAA_CODEXD_APPROVAL_TIMEOUT_S",
    "subscriber_queue": "BAA_CODEXD_SUBSCRIBER_QUEUE",
    "restart_backoff": "BAA_CODEXD_RESTART_BACKOFF_S",
    "restart_backoff_max": "BAA_CODEXD_RESTART_BACKOFF_MAX_S",
    "event_log_segment_mb": "BAA_CODEXD_EVENT_LOG_SEGMENT_MB",
    "event_log_segments": "BAA_CODEXD_EVENT_LOG_SEGMENTS",
    "conversation_segment_mb": "BAA_CODEXD_CONVERSATION_SEGMENT_MB",
    "conversation_segments": "BAA_CODEXD_CONVERSATION_SEGMENTS",
    "allowed_origins": "BAA_CODEXD_ALLOWED_ORIGINS",
    "allowed_hosts": "BAA_CODEXD_ALLOWED_HOSTS",
    "log_format": "BAA_LOG_FORMAT",
    "log_file": "BAA_CODEXD_LOG_FILE",
}


# flag key -> (config field, label for errors, minimum, whole number?)
_NUMBERS: dict[str, tuple[str, str, float, bool]] = {
    "shutdown_grace": ("shutdown_grace_s", "shutdown grace", 0, False),
    "event_cache_size": ("event_cache_size", "event cache size", 1, True),
    "max_body_bytes": ("max_body_bytes", "max body bytes", 1024, True),
    "request_timeout": ("request_timeout_s", "request timeout", 0.001, False),
    "approval_timeout": ("approval_timeout_s", "approval timeout", 0, False),
    "subscriber_queue": ("subscriber_queue", "subscriber queue", 1, True),
    "restart_backoff": ("restart_backoff_s", "restart backoff", 0.001, False),
    "restart_backoff_max": ("restart_backoff_max_s", "restart backoff max", 0.001, False),
    "event_log_segment_mb": ("event_log_segment_mb", "event log segment size (MiB)", 1, True),
    "event_log_segments": ("event_log_segments", "event log segments kept", 1, True),
    "conversation_segment_mb": ("conversation_segment_mb",
                                "conversation segment size (MiB)", 1, True),
    "conversation_segments": ("conversation_segments", "conversation segments kept", 1, True),
}


def _log_format(raw: str | None) -> str:
    value = (raw or "text").strip().lower()
    if value not in ("json", "text"):
        raise ConfigError(f"log format must be json or text, got {raw!r}")
    return value


def _number(name: str, raw: str, *, minimum: float, integer: bool = False) -> float:
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "whole number" if integer else "number"
        raise ConfigError(f"{name} must be a {kind}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def resolve_config(
    argv: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> tuple[CodexdConfig, list[str]]:
    """Resolve defaults ← environment ← flags.

    Returns the config and the arguments that are not configuration flags (for the caller's own
    parser). Raises :class:`ConfigError` with a one-line message for any bad value.
    """
    environ = os.environ if env is None else env
    flags, rest = _parser().parse_known_args(list(argv))
    raw: dict[str, Any] = {}
    for key, var in _ENV.items():
        value = getattr(flags, key, None)
        if value is None and environ.get(var, "") != "":
            value = environ[var].split() if key == "server_args" else environ[var]
            if key in ("allowed_origins", "allowed_hosts"):
                value = [value]
        if value is not None:
            raw[key] = value

    base = CodexdConfig()
    repo_root = Path(raw.get("repo_root", base.repo_root)).expanduser().resolve()
    logs_default = repo_root / "var" / "logs"
    state_default = repo_root / "var" / "state"
    local_api_base = str(raw.get("local_api_base", base.local_api_base)).rstrip("/")
    host, _port = split_base(local_api_base)
    if not is_loopback(host):
        raise ConfigError(
            f"codexd only listens on loopback (127.0.0.0/8, ::1, localhost); got host {host!r}"
        )
    stream_path = str(raw.get("event_stream_path", base.event_stream_path))
    if not stream_path.startswith("/") or " " in stream_path:
        raise ConfigError(f"event stream path must start with '/', got {stream_path!r}")
    strategy = str(raw.get("server_strategy", "spawn"))
    if strategy == "spawn":
        endpoint = str(raw.get("server_endpoint", "stdio"))
        # The seed spells it stdio://codex-app-server; anything after stdio:// is only a label.
        if endpoint != "stdio" and not endpoint.startswith("stdio://"):
            raise ConfigError(
                f"server endpoint {endpoint!r} is not supported with strategy spawn "
                "(use stdio or stdio://NAME)"
            )
    elif strategy == "external":
        endpoint = str(raw.get("server_endpoint", ""))
        _check_external_endpoint(endpoint)
    else:
        raise ConfigError(
            f"server strategy {strategy!r} is not supported (use spawn or external)"
        )
    server_args = tuple(raw.get("server_args", base.server_args))
    cwd_raw = raw.get("server_cwd")
    numbers: dict[str, Any] = {}
    for key, (field_name, label, minimum, integer) in _NUMBERS.items():
        value = _number(
            label, str(raw.get(key, getattr(base, field_name))), minimum=minimum, integer=integer
        )
        numbers[field_name] = int(value) if integer else value
    token, token_source = resolve_codexd_token(environ, token_file=flags.token_file)
    config = CodexdConfig(
        node_id=str(raw.get("node_id", base.node_id)),
        local_api_base=local_api_base,
        repo_root=repo_root,
        logs_dir=Path(raw.get("logs_dir", logs_default)).expanduser().absolute(),
        state_dir=Path(raw.get("state_dir", state_default)).expanduser().absolute(),
        event_stream_path=stream_path,
        server_endpoint=endpoint,
        server_strategy=strategy,
        server_command=str(raw.get("server_command", base.server_command)),
        server_args=server_args,
        server_cwd=Path(cwd_raw).expanduser().absolute() if cwd_raw else repo_root,
        allowed_origins=parse_origins(
            raw.get("allowed_origins", ()), variable="BAA_CODEXD_ALLOWED_ORIGINS"
        ),
        allowed_hosts=parse_hosts(
            raw.get("allowed_hosts", ()), variable="BAA_CODEXD_ALLOWED_HOSTS"
        ),
        token=token,
        token_source=token_source,
        log_format=_log_format(raw.get("log_format")),
        log_file=(Path(str(raw["log_file"])).expanduser().absolute()
                  if raw.get("log_file") else None),
        **numbers,
    )
    if not config.node_id.strip():
        raise ConfigError("node id must not be empty")
    return config, rest
