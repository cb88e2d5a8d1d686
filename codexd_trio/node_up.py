"""Bring a whole node up in the foreground: codexd, conductor and status-api (``scripts/up.sh``).

This is the developer's and newcomer's path; production runs each daemon under launchd or
systemd (``docs/runtime/``). Each daemon is started as its own process, exactly as the service
manager would start it, and found through the JSON "ready" line it prints (no sleeps). With
``--demo`` a scripted model (``python -m codexd_trio.testing``) and a throw-away Codex home are
started first, and one real turn is run through the conductor, so a newcomer sees Codex answer
without an OpenAI login. Ctrl-C (or SIGTERM) stops everything, each process group by its id.
"""

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
from typing import BinaryIO, NoReturn

import httpx
import trio

from codexd_trio.codexbin import REPO_ROOT
from codexd_trio.process import NotReady, follow_ready_line


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass
class Daemon:
    name: str
    process: trio.Process
    url: str


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = _Parser(
        prog="scripts/up.sh",
        description="Bring the node up: codexd, conductor, status-api (Ctrl-C stops them).",
    )
    p.add_argument("--demo", action="store_true", help="offline: scripted model + one real turn")
    p.add_argument("--var-dir", default=str(REPO_ROOT / "var"), help="logs/ and state/ go here")
    p.add_argument("--codexd-port", type=int, default=4319)
    p.add_argument("--conductor-port", type=int, default=4317)
    p.add_argument("--status-port", type=int, default=4318)
    p.add_argument("--no-wait", action="store_true", help="stop right after the demo turn")
    opts = p.parse_args(list(argv))
    opts.var_dir = Path(opts.var_dir).absolute()
    return opts


def _say(text: str) -> None:
    print(f"up: {text}", flush=True)


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


async def _demo_turn(conductor: str, codexd: str) -> None:
    """One real turn through the conductor, followed to its end on codexd's event stream."""
    from codexd_trio.client import CodexdClient
    from codexd_trio.config import resolve_codexd_token

    async with httpx.AsyncClient(base_url=conductor, timeout=30) as http:
        created = (await http.post("/v1/codex/sessions", json={"purpose": "smoke"})).json()
        if not created.get("ok"):
            raise RuntimeError(f"session create failed: {created}")
        session_id = created["data"]["session"]["sessionId"]
        prompt = "Hello Codex, this is the offline demo."
        turn = (
            await http.post("/v1/codex/turn", json={"sessionId": session_id, "input": prompt})
        ).json()
        if not turn.get("ok"):
            raise RuntimeError(f"turn failed: {turn}")
        turn_id = turn["data"]["turnId"]
        _say(f"demo: session {session_id}, turn {turn_id} accepted")
    # The same token codexd and the conductor read from this environment, if one is set.
    token, _ = resolve_codexd_token()
    async with CodexdClient(codexd, token=token) as client:
        with trio.fail_after(60):
            session = await client.wait_for_turn(session_id, turn_id)
    _say(f"demo: you said   {prompt!r}")
    _say(f"demo: codex said {session.lastTurnOutput!r} ({session.lastTurnStatus})")


async def run(opts: argparse.Namespace) -> int:
    var: Path = opts.var_dir
    logs, state = var / "logs", var / "state"
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
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
                if opts.demo:
                    await _demo_turn(conductor.url, codexd.url)
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
    except (RuntimeError, trio.TooSlowError, httpx.HTTPError) as exc:
        _say(f"failed: {exc}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = _parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"up: {exc}", file=sys.stderr)
        return 2
    return trio.run(run, opts)


if __name__ == "__main__":
    raise SystemExit(main())
