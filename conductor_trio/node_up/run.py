"""Bring the node up and keep it up until Ctrl-C (see :mod:`conductor_trio.node_up`)."""


from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from codexd_trio.base.codexbin import REPO_ROOT

if TYPE_CHECKING:
    import trio

from conductor_trio.node_up.preflight import (
    Refused,
    Tokens,
    UsageError,
    busy_port,
    conductor_listen_args,
    left_mode,
    lock_holder,
    parse,
    read_tokens,
    resume_hint,
    running_message,
    say,
    take_lock,
    usage_error,
    write_lock,
)


@dataclass
class Daemon:
    name: str
    process: trio.Process
    url: str


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

    from codexd_trio.base.process import NotReady, follow_ready_line

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
    say(f"{name} ready at {ready['url']} (pid {process.pid})")
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
            say(f"{daemon.name} stopped (exit {code})")
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
    say(f"resumed the node (it was {was}{': ' + reason if reason else ''})")


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
        say(f"demo: session {session_id}, turn {turn_id} accepted")
    async with CodexdClient(codexd, token=tokens.codexd) as client:
        with trio.fail_after(60):
            session = await client.wait_for_turn(session_id, turn_id)
    say(f"demo: you said   {prompt!r}")
    say(f"demo: codex said {session.lastTurnOutput!r} ({session.lastTurnStatus})")


async def run(opts: argparse.Namespace) -> int:
    """Check, then bring the node up (see the module docstring); the process's exit status."""
    import httpx
    import trio

    from codexd_trio.base.process import first_leaf

    var: Path = opts.var_dir
    logs, state = var / "logs", var / "state"
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        tokens = read_tokens(env)
        if (info := lock_holder(var)) is not None:
            raise Refused(running_message(var, info))
        if busy := busy_port(opts):
            raise Refused(busy)
        mode, reason = left_mode(var, env)
        if mode != "running" and opts.demo and not opts.resume:
            because = f" ({reason})" if reason else ""
            raise Refused(f"the node in {var} was left {mode}{because}, so the demo turn would "
                          f"be refused; {resume_hint(opts.conductor_port)}")
        lock = take_lock(var)
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
                    say(f"demo: Codex home {home} points at the scripted model")
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
                        *conductor_listen_args(opts),
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
                write_lock(lock, {"pid": os.getpid(), "var": str(var), "console": console,
                                   "conductor": conductor.url, "codexd": codexd.url,
                                   "status": status.url})
                if mode != "running" and opts.resume:
                    await _resume(conductor.url, tokens, mode, reason)
                elif mode != "running":
                    say(f"the node is {mode}{' (' + reason + ')' if reason else ''}: new turns "
                         f"are refused until it is resumed; {resume_hint(opts.conductor_port)}")
                if opts.demo:
                    await _demo_turn(conductor.url, codexd.url, tokens)
                say(f"console: {console}")
                say(
                    f"status page: {status.url}/  (conductor {conductor.url}, codexd {codexd.url})"
                )
                if not opts.no_wait:
                    say("running; Ctrl-C stops the node")
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
        say(f"failed: {leaf or type(leaf).__name__}")
        return 1
    except (RuntimeError, trio.TooSlowError, httpx.HTTPError) as exc:
        say(f"failed: {exc or type(exc).__name__}")
        return 1
    finally:
        lock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(usage_error(exc), file=sys.stderr)
        return 2
    import trio

    return trio.run(run, opts)

