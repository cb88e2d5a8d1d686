"""``codexd smoke``: a throw-away codexd with the real child and the scripted model.

Starts the scripted model, a temporary Codex home and a codexd on a free loopback port (in this
process), runs a session and a turn through the HTTP API, checks the answer and the files under
``logs/codexd`` and ``state/codexd``, then stops everything. Exit 0 when every check passed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec
import trio

from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.base.contracts import SessionRegistry, event_decoder
from codexd_trio.core.config import CodexdConfig


class _Checks:
    def __init__(self) -> None:
        self.failed = 0

    def check(self, label: str, ok: bool, detail: str = "") -> None:
        mark = "ok  " if ok else "FAIL"
        print(f"[{mark}] {label}{(': ' + detail) if detail else ''}", flush=True)
        if not ok:
            self.failed += 1


async def run_smoke(*, keep: bool = False, root: Path | None = None) -> int:
    from codexd_trio.core.service import Daemon
    from codexd_trio.testing import open_scripted_model, temporary_codex_home
    from codexd_trio.web.routes import serve_api

    base_root = root or REPO_ROOT / "var" / "smoke"
    base_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="smoke-", dir=base_root))
    checks = _Checks()
    prompt = "smoke test: say hello"
    try:
        with trio.fail_after(120):
            async with open_scripted_model() as model:
                with temporary_codex_home(model.base_url) as home:
                    config = CodexdConfig(
                        node_id="smoke",
                        local_api_base="http://127.0.0.1:0",
                        logs_dir=work / "logs",
                        state_dir=work / "state",
                        server_cwd=work,
                        extra_env={"CODEX_HOME": str(home)},
                    )
                    daemon = Daemon(config)
                    async with trio.open_nursery() as nursery:
                        await nursery.start(
                            lambda task_status: daemon.run(serve=serve_api, task_status=task_status)
                        )
                        try:
                            assert daemon.resolved_base_url is not None
                            await _exercise(
                                daemon.resolved_base_url, checks, prompt, model.requests
                            )
                        finally:
                            daemon.request_stop()
                    _check_files(config, checks)
    except Exception as exc:  # report, never a traceback
        checks.check("smoke run", False, f"{type(exc).__name__}: {exc}")
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("smoke: " + ("passed" if checks.failed == 0 else f"{checks.failed} check(s) failed"))
    return 0 if checks.failed == 0 else 1


async def _exercise(base: str, checks: _Checks, prompt: str, requests: Sequence[object]) -> None:
    from codexd_trio.client import CodexdClient

    print(f"codexd listening on {base}", flush=True)
    async with CodexdClient(base) as client:
        status = await client.status()
        child = status["snapshot"]["daemon"]["child"]
        checks.check("status: child running", child["status"] == "running", child["status"])
        session = await client.create_session(purpose="smoke")
        checks.check("session created", session.sessionId.startswith("session-"), session.sessionId)
        listed = await client.list_sessions()
        checks.check("session listed", any(s.sessionId == session.sessionId for s in listed))
        accepted = await client.start_turn(session.sessionId, prompt)
        turn_id = accepted["turnId"]
        checks.check("turn accepted", bool(turn_id), turn_id)
        done = await client.wait_for_turn(session.sessionId, turn_id)
        checks.check("turn completed", done.lastTurnStatus == "completed", str(done.lastTurnStatus))
        expected = "echo: " + prompt
        checks.check("lastTurnOutput", done.lastTurnOutput == expected, repr(done.lastTurnOutput))
        read, recent = await client.get_session(session.sessionId)
        checks.check("session read back", read.lastTurnId == turn_id)
        types = {e.type for e in recent}
        checks.check(
            "recentEvents has the turn",
            "app-server.turn.completed" in types,
            f"{len(recent)} events",
        )
        checks.check("model received the prompt", len(requests) >= 1, f"{len(requests)} request(s)")


def _check_files(config: CodexdConfig, checks: _Checks) -> None:
    state, logs = config.codexd_state, config.codexd_logs
    for name in (
        "identity.json",
        "daemon-state.json",
        "session-registry.json",
        "recent-events.json",
    ):
        checks.check(f"state/codexd/{name}", (state / name).is_file())
    registry = msgspec.json.decode(
        (state / "session-registry.json").read_bytes(), type=SessionRegistry
    )
    checks.check("registry has the session", len(registry.sessions) == 1)
    lines = (logs / "events.jsonl").read_bytes().splitlines()
    events = [event_decoder.decode(line) for line in lines]
    seqs = [e.seq for e in events]
    checks.check(
        "logs/codexd/events.jsonl seq strictly increasing",
        seqs == sorted(set(seqs)),
        f"{len(seqs)} events",
    )
    types = {e.type for e in events}
    for needed in (
        "daemon.started",
        "session.created",
        "turn.accepted",
        "app-server.turn.completed",
        "daemon.stopping",
    ):
        checks.check(f"events.jsonl has {needed}", needed in types)
    checks.check("logs/codexd/stderr.log", (logs / "stderr.log").exists())


if __name__ == "__main__":
    sys.exit(trio.run(run_smoke))
