"""What ``scripts/up.sh`` checks before anything is started or written: the arguments, a node
already up (the var dir's lock), ports in use, the tokens, a node left paused.

Standard library only at module level: ``scripts/up.sh`` runs :func:`check_arguments` with the
system Python before anything is installed.
"""


from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from codexd_trio.base.codexbin import REPO_ROOT

if TYPE_CHECKING:
    pass

LOCK_NAME = "up.lock"


class UsageError(Exception):
    pass


class Refused(Exception):
    """``up`` will not start: one line for the user (exit 2), nothing was changed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> _Parser:
    p = _Parser(
        prog="scripts/up.sh",
        description="Bring the node up: codexd, conductor, status-api (Ctrl-C stops them). "
        "Installs what is missing first (scripts/setup.sh).",
    )
    p.add_argument("--demo", action="store_true", help="offline: scripted model + one real turn")
    p.add_argument("--var-dir", default=str(REPO_ROOT / "var"), help="logs/ and state/ go here")
    p.add_argument("--codexd-port", type=int, default=4319)
    p.add_argument("--conductor-port", type=int, default=4317)
    p.add_argument("--status-port", type=int, default=4318)
    p.add_argument("--no-wait", action="store_true", help="stop right after the demo turn")
    p.add_argument("--resume", action="store_true",
                   help="resume the node if it was left paused or draining")
    # Serving beyond loopback (issue 25, docs/phone.md).
    p.add_argument("--listen", default="127.0.0.1", metavar="ADDRESS",
                   help="the conductor's listen address (default 127.0.0.1; a tailnet address "
                   "to reach it from a phone: every write then needs a credential)")
    p.add_argument("--allowed-host", action="append", default=[], dest="allowed_hosts",
                   metavar="NAME", help="a further Host name the conductor answers to, e.g. "
                   "the machine's tailnet name (repeatable)")
    p.add_argument("--public-url", metavar="URL",
                   help="where phones reach the conductor (https://mini.tail1234.ts.net behind "
                   "`tailscale serve`): pairing and notification links use it, and its host "
                   "and origin are allowed")
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    opts = _parser().parse_args(list(argv))
    opts.var_dir = Path(opts.var_dir).absolute()
    if opts.public_url is not None:
        scheme, sep, rest = opts.public_url.partition("://")
        if scheme not in ("http", "https") or not sep or not rest.split("/")[0]:
            raise UsageError(f"--public-url must be an http(s) URL, got {opts.public_url!r}")
    if not opts.listen or any(c in opts.listen for c in "/ @"):
        raise UsageError(f"--listen must be an address, got {opts.listen!r}")
    return opts


def conductor_listen_args(opts: argparse.Namespace) -> list[str]:
    """The conductor's flags for ``--listen``, ``--allowed-host`` and ``--public-url``: its
    listen base, every host it answers to (the listen address itself when it is not
    loopback: the conductor refuses to listen where it is not allowed), and the public URL's
    host, origin and base (pairing and notification links)."""
    listen = opts.listen
    host = f"[{listen}]" if ":" in listen and not listen.startswith("[") else listen
    args = ["--local-api", f"http://{host}:{opts.conductor_port}"]
    hosts = list(opts.allowed_hosts)
    if listen.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
        hosts.append(listen.strip("[]"))
    if opts.public_url:
        base = opts.public_url.rstrip("/")
        scheme, _, rest = base.partition("://")
        authority = rest.split("/")[0]
        hosts.append(authority.rsplit(":", 1)[0] if not authority.endswith("]")
                     else authority.strip("[]"))
        args += ["--public-api-base", base, "--allowed-origin", f"{scheme}://{authority}"]
    for name in dict.fromkeys(hosts):
        args += ["--allowed-host", name]
    return args


def usage_error(exc: UsageError) -> str:
    usage = " ".join(_parser().format_usage().split())
    return f"up: {exc} — {usage}"


def check_arguments(argv: Sequence[str]) -> int:
    """``scripts/up.sh``'s first step: 0 if ``argv`` is valid; ``--help`` prints the help and
    returns 0; anything else prints one line (the error and the usage) and returns 2."""
    try:
        parse(argv)
    except UsageError as exc:
        print(usage_error(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def say(text: str) -> None:
    print(f"up: {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# Before anything is written: a node already up, ports in use, tokens, a node left paused


def lock_holder(var: Path) -> dict[str, Any] | None:
    """What the ``up`` holding ``var``'s lock wrote about its node, or ``None`` if none holds it.

    Opens the lock only if it exists, and never writes it.
    """
    try:
        fd = os.open(var / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as lock:
        try:
            # A shared lock conflicts only with the running up's exclusive one.
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _lock_info(lock.read())
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None


def _lock_info(raw: bytes) -> dict[str, Any]:
    with suppress(ValueError):
        info = json.loads(raw)
        if isinstance(info, dict):
            return info
    return {}


def running_message(var: Path, info: dict[str, Any]) -> str:
    pid = info.get("pid", "?")
    where = (f"console {info['console']}, conductor {info.get('conductor')}"
             if info.get("console") else "still starting")
    return (f"a node is already running from {var} (scripts/up.sh pid {pid}; {where}); "
            f"use it, or stop it with Ctrl-C in its terminal or `kill {pid}`")


def busy_port(opts: argparse.Namespace) -> str | None:
    """One line naming the first port someone already listens on, or ``None``."""
    for name, port in (("codexd", opts.codexd_port), ("conductor", opts.conductor_port),
                       ("status", opts.status_port)):
        if not port:
            continue  # 0: the daemon picks a free one
        with socket.socket() as probe:
            # Like the daemons' own listeners: a port in TIME_WAIT is free, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            address = opts.listen if name == "conductor" else "127.0.0.1"
            try:
                probe.bind((address.strip("[]"), port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                return (f"port {port} on {address} (--{name}-port) is in use: is a node already "
                        f"running? (try http://127.0.0.1:{opts.conductor_port}/console); stop "
                        "it, or give free ports with --codexd-port, --conductor-port and "
                        "--status-port")
    return None


@dataclass(frozen=True)
class Tokens:
    shared: str | None
    codexd: str | None


def read_tokens(env: dict[str, str]) -> Tokens:
    """The shared token the demo sends and codexd's token, as the daemons will read them.

    Raises:
        Refused: a token file cannot be read, or codexd has a token and the conductor none
            (the conductor then requires a caller credential on ``/v1/codex/*`` that nobody has).
    """
    from codexd_trio.base.settings import ConfigError, resolve_codexd_token
    from conductor_trio.config import resolve_shared_token

    try:
        shared, _ = resolve_shared_token(env)
        codexd, codexd_source = resolve_codexd_token(env)
    except ConfigError as exc:
        raise Refused(str(exc)) from None
    if codexd is not None and shared is None:
        where = "BAA_CODEXD_TOKEN_FILE" if codexd_source == "file" else "BAA_CODEXD_TOKEN"
        raise Refused(
            f"codexd has a token ({where}) but the conductor has no shared token, so nothing "
            "could call /v1/codex/*; set BAA_SHARED_TOKEN_FILE (or BAA_SHARED_TOKEN) as well")
    return Tokens(shared, codexd)


def _mode_path(var: Path, env: dict[str, str]) -> Path:
    # Where the conductor started by run() keeps its mode (BAA_CONDUCTOR_STATE_DIR wins there).
    return Path(env.get("BAA_CONDUCTOR_STATE_DIR") or var / "state") / "conductor" / "mode.json"


def left_mode(var: Path, env: dict[str, str]) -> tuple[str, str | None]:
    """The mode the node was left in (``running`` when never set) and its reason."""
    from conductor_trio.mode import ModeStore, ModeStoreError

    try:
        record = ModeStore(_mode_path(var, env)).load()
    except ModeStoreError as exc:
        raise Refused(f"{exc}; fix or remove that file") from None
    return record.mode, record.reason


def resume_hint(conductor_port: int) -> str:
    return (f"add --resume to scripts/up.sh, or on the running node: curl -XPOST "
            f"http://127.0.0.1:{conductor_port}/v1/system/resume "
            "-H 'content-type: application/json' [-H 'Authorization: Bearer $BAA_SHARED_TOKEN']")


def take_lock(var: Path) -> IO[bytes]:
    """Hold ``var``'s lock for the node's lifetime (released when the process ends).

    Raises:
        Refused: another ``up`` holds it.
    """
    var.mkdir(parents=True, exist_ok=True)
    lock = os.fdopen(os.open(var / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644), "r+b")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _lock_info(lock.read())
        lock.close()
        raise Refused(running_message(var, info)) from None
    write_lock(lock, {"pid": os.getpid(), "var": str(var)})
    return lock


def write_lock(lock: IO[bytes], info: dict[str, Any]) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps(info).encode() + b"\n")
    lock.flush()
