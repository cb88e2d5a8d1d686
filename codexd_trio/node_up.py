"""Bring a whole node up in the foreground: codexd, conductor and status-api (``scripts/up.sh``).

This is the developer's and newcomer's path; production runs each daemon under launchd or
systemd (``docs/runtime/``). Each daemon is started as its own process, exactly as the service
manager would start it, and found through the JSON "ready" line it prints (no sleeps). With
``--demo`` a scripted model (``python -m codexd_trio.testing``) and a throw-away Codex home are
started first, and one real turn is run through the conductor, so a newcomer sees Codex answer
without an OpenAI login. Ctrl-C (or SIGTERM) stops everything, each process group by its id.

It never harms a node that is already running: before it writes anything it checks that no other
``up`` holds the var dir's lock (``<var>/up.lock``, an ``flock`` held for the node's lifetime) and
that the ports are free, and says in one line (exit 2) how to reach or stop the running node.

At module level this file imports only the standard library: ``scripts/up.sh`` checks its
arguments with :func:`check_arguments` and the system Python before it installs anything. The
daemons' libraries (Trio, httpx) are imported where the node is run.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NoReturn

from codexd_trio.codexbin import REPO_ROOT

if TYPE_CHECKING:
    import trio

LOCK_NAME = "up.lock"


class UsageError(Exception):
    pass


class Refused(Exception):
    """``up`` will not start: one line for the user (exit 2), nothing was changed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass
class Daemon:
    name: str
    process: trio.Process
    url: str


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
    return p


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    opts = _parser().parse_args(list(argv))
    opts.var_dir = Path(opts.var_dir).absolute()
    return opts


def _usage_error(exc: UsageError) -> str:
    usage = " ".join(_parser().format_usage().split())
    return f"up: {exc} — {usage}"


def check_arguments(argv: Sequence[str]) -> int:
    """``scripts/up.sh``'s first step: 0 if ``argv`` is valid; ``--help`` prints the help and
    returns 0; anything else prints one line (the error and the usage) and returns 2."""
    try:
        _parse(argv)
    except UsageError as exc:
        print(_usage_error(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def _say(text: str) -> None:
    print(f"up: {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# Before anything is written: a node already up, ports in use, tokens, a node left paused


def _lock_holder(var: Path) -> dict[str, Any] | None:
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


def _running_message(var: Path, info: dict[str, Any]) -> str:
    pid = info.get("pid", "?")
    where = (f"console {info['console']}, conductor {info.get('conductor')}"
             if info.get("console") else "still starting")
    return (f"a node is already running from {var} (scripts/up.sh pid {pid}; {where}); "
            f"use it, or stop it with Ctrl-C in its terminal or `kill {pid}`")


def _busy_port(opts: argparse.Namespace) -> str | None:
    """One line naming the first port someone already listens on, or ``None``."""
    for name, port in (("codexd", opts.codexd_port), ("conductor", opts.conductor_port),
                       ("status", opts.status_port)):
        if not port:
            continue  # 0: the daemon picks a free one
        with socket.socket() as probe:
            # Like the daemons' own listeners: a port in TIME_WAIT is free, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                return (f"port {port} on 127.0.0.1 (--{name}-port) is in use: is a node already "
                        f"running? (try http://127.0.0.1:{opts.conductor_port}/console); stop "
                        "it, or give free ports with --codexd-port, --conductor-port and "
                        "--status-port")
    return None


@dataclass(frozen=True)
class Tokens:
    shared: str | None
    codexd: str | None


def _tokens(env: dict[str, str]) -> Tokens:
    """The shared token the demo sends and codexd's token, as the daemons will read them.

    Raises:
        Refused: a token file cannot be read, or codexd has a token and the conductor none
            (the conductor then requires a caller credential on ``/v1/codex/*`` that nobody has).
    """
    from codexd_trio.config import ConfigError, resolve_codexd_token
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


def _left_mode(var: Path, env: dict[str, str]) -> tuple[str, str | None]:
    """The mode the node was left in (``running`` when never set) and its reason."""
    from conductor_trio.mode import ModeStore, ModeStoreError

    try:
        record = ModeStore(_mode_path(var, env)).load()
    except ModeStoreError as exc:
        raise Refused(f"{exc}; fix or remove that file") from None
    return record.mode, record.reason


def _resume_hint(conductor_port: int) -> str:
    return (f"add --resume to scripts/up.sh, or on the running node: curl -XPOST "
            f"http://127.0.0.1:{conductor_port}/v1/system/resume "
            "-H 'content-type: application/json' [-H 'Authorization: Bearer $BAA_SHARED_TOKEN']")


def _take_lock(var: Path) -> IO[bytes]:
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
        raise Refused(_running_message(var, info)) from None
    _write_lock(lock, {"pid": os.getpid(), "var": str(var)})
    return lock


def _write_lock(lock: IO[bytes], info: dict[str, Any]) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps(info).encode() + b"\n")
    lock.flush()


# ---------------------------------------------------------------------------------------------
# Running the node


def _open_log(log_dir: Path, name: str) -> BinaryIO:
    log_dir.mkdir(parents=True, exist_ok=True)
    return (log_dir / f"{name}.log").open("ab")


def _demo_home(var: Path, model_url: str) -> Path:
    from codexd_trio.testing import write_codex_home

    home = var / "demo" / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    return write_codex_home(home, model_url)


async def _spawn(
    nursery: trio.Nursery, name: str, argv: list[str], env: dict[str, str], log_dir: Path
) -> Daemon:
    """Start one daemon in its own process group and wait for its ready line."""
    import trio

    from codexd_trio.process import NotReady, follow_ready_line

    stderr = _open_log(log_dir, name)
    try:
        process = await trio.lowlevel.open_process(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
    finally:
        stderr.close()
    try:
        with trio.fail_after(60):
            ready = await nursery.start(follow_ready_line, process)
    except NotReady:
        raise RuntimeError(
            f"{name} exited before it was ready; see {log_dir / (name + '.log')}"
        ) from None
    _say(f"{name} ready at {ready['url']} (pid {process.pid})")
    return Daemon(name, process, str(ready["url"]))


async def _stop(daemons: list[Daemon]) -> None:
    """SIGTERM each daemon (newest first), wait for it, SIGKILL its group if it lingers."""
    import trio

    for daemon in reversed(daemons):
        if daemon.process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(daemon.process.pid, signal.SIGTERM)
        with trio.move_on_after(20):
            code = await daemon.process.wait()
            _say(f"{daemon.name} stopped (exit {code})")
        with suppress(ProcessLookupError):
            os.killpg(daemon.process.pid, signal.SIGKILL)
        await daemon.process.wait()


def _answer(response: Any, what: str) -> dict[str, Any]:
    """The envelope's data, or a one-line RuntimeError naming the error code."""
    try:
        body = response.json()
    except ValueError:
        raise RuntimeError(f"{what}: HTTP {response.status_code}") from None
    if not body.get("ok"):
        error = body.get("error") or {}
        raise RuntimeError(f"{what}: {error.get('code')}: {error.get('message')}")
    data: dict[str, Any] = body["data"]
    return data


async def _resume(conductor: str, tokens: Tokens, was: str, reason: str | None) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {tokens.shared}"} if tokens.shared else {}
    async with httpx.AsyncClient(base_url=conductor, timeout=30, headers=headers) as http:
        _answer(await http.post("/v1/system/resume", json={"reason": "scripts/up.sh --resume"}),
                "resume failed")
    _say(f"resumed the node (it was {was}{': ' + reason if reason else ''})")


async def _demo_turn(conductor: str, codexd: str, tokens: Tokens) -> None:
    """One real turn through the conductor, followed to its end on codexd's event stream."""
    import httpx
    import trio

    from codexd_trio.client import CodexdClient

    # The conductor requires its caller's credential on /v1/codex/* when codexd has a token.
    headers = {"Authorization": f"Bearer {tokens.shared}"} if tokens.shared else {}
    async with httpx.AsyncClient(base_url=conductor, timeout=30, headers=headers) as http:
        created = _answer(await http.post("/v1/codex/sessions", json={"purpose": "smoke"}),
                          "session create failed")
        session_id = created["session"]["sessionId"]
        prompt = "Hello Codex, this is the offline demo."
        turn = _answer(
            await http.post("/v1/codex/turn", json={"sessionId": session_id, "input": prompt}),
            "turn failed")
        turn_id = turn["turnId"]
        _say(f"demo: session {session_id}, turn {turn_id} accepted")
    async with CodexdClient(codexd, token=tokens.codexd) as client:
        with trio.fail_after(60):
            session = await client.wait_for_turn(session_id, turn_id)
    _say(f"demo: you said   {prompt!r}")
    _say(f"demo: codex said {session.lastTurnOutput!r} ({session.lastTurnStatus})")


async def run(opts: argparse.Namespace) -> int:
    """Check, then bring the node up (see the module docstring); the process's exit status."""
    import httpx
    import trio

    from codexd_trio.process import first_leaf

    var: Path = opts.var_dir
    logs, state = var / "logs", var / "state"
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        tokens = _tokens(env)
        if (info := _lock_holder(var)) is not None:
            raise Refused(_running_message(var, info))
        if busy := _busy_port(opts):
            raise Refused(busy)
        mode, reason = _left_mode(var, env)
        if mode != "running" and opts.demo and not opts.resume:
            because = f" ({reason})" if reason else ""
            raise Refused(f"the node in {var} was left {mode}{because}, so the demo turn would "
                          f"be refused; {_resume_hint(opts.conductor_port)}")
        lock = _take_lock(var)
    except Refused as exc:
        print(f"up: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a var dir that cannot be written, a port we may not bind
        print(f"up: cannot start in {var}: {exc}", file=sys.stderr)
        return 2
    py = sys.executable
    daemons: list[Daemon] = []
    try:
        async with trio.open_nursery() as nursery:
            try:
                if opts.demo:
                    model = await _spawn(
                        nursery,
                        "scripted-model",
                        [py, "-m", "codexd_trio.testing"],
                        env,
                        logs / "up",
                    )
                    daemons.append(model)
                    home = _demo_home(var, model.url)
                    env["CODEX_HOME"] = str(home)
                    _say(f"demo: Codex home {home} points at the scripted model")
                codexd = await _spawn(
                    nursery,
                    "codexd",
                    [
                        py,
                        "-m",
                        "codexd_trio",
                        "start",
                        "--local-api-base",
                        f"http://127.0.0.1:{opts.codexd_port}",
                        "--logs-dir",
                        str(logs),
                        "--state-dir",
                        str(state),
                    ],
                    env,
                    logs / "up",
                )
                daemons.append(codexd)
                conductor_env = dict(env)
                conductor_env["BAA_CODEXD_LOCAL_API_BASE"] = codexd.url
                # The state root: the conductor writes its own conductor/ under it (DESIGN, files).
                conductor_env.setdefault("BAA_CONDUCTOR_STATE_DIR", str(state))
                conductor = await _spawn(
                    nursery,
                    "conductor",
                    [
                        py,
                        "-m",
                        "conductor_trio",
                        "start",
                        "--local-api",
                        f"http://127.0.0.1:{opts.conductor_port}",
                    ],
                    conductor_env,
                    logs / "up",
                )
                daemons.append(conductor)
                status_env = dict(env)
                status_env["BAA_CONDUCTOR_LOCAL_API"] = conductor.url
                status_env["BAA_STATUS_API_LOCAL_API"] = f"http://127.0.0.1:{opts.status_port}"
                status = await _spawn(
                    nursery,
                    "status-api",
                    [py, "-m", "conductor_trio.status_api", "start"],
                    status_env,
                    logs / "up",
                )
                daemons.append(status)
                console = f"{conductor.url}/console"
                _write_lock(lock, {"pid": os.getpid(), "var": str(var), "console": console,
                                   "conductor": conductor.url, "codexd": codexd.url,
                                   "status": status.url})
                if mode != "running" and opts.resume:
                    await _resume(conductor.url, tokens, mode, reason)
                elif mode != "running":
                    _say(f"the node is {mode}{' (' + reason + ')' if reason else ''}: new turns "
                         f"are refused until it is resumed; {_resume_hint(opts.conductor_port)}")
                if opts.demo:
                    await _demo_turn(conductor.url, codexd.url, tokens)
                _say(f"console: {console}")
                _say(
                    f"status page: {status.url}/  (conductor {conductor.url}, codexd {codexd.url})"
                )
                if not opts.no_wait:
                    _say("running; Ctrl-C stops the node")
                    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            break
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(daemons)
                nursery.cancel_scope.cancel(reason="node stopped")
    except BaseExceptionGroup as group:
        # The nursery wraps what its body raised; say the first cause in one line.
        leaf = first_leaf(group)
        if not isinstance(leaf, RuntimeError | trio.TooSlowError | httpx.HTTPError):
            raise
        _say(f"failed: {leaf or type(leaf).__name__}")
        return 1
    except (RuntimeError, trio.TooSlowError, httpx.HTTPError) as exc:
        _say(f"failed: {exc or type(exc).__name__}")
        return 1
    finally:
        lock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = _parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(_usage_error(exc), file=sys.stderr)
        return 2
    import trio

    return trio.run(run, opts)


if __name__ == "__main__":
    raise SystemExit(main())
