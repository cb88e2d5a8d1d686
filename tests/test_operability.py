"""The operating surface on live daemons: request ids end to end, JSON logs, /metrics.

codexd is the real daemon (real Codex child, scripted model) started with ``--log-format
json``; the conductor runs in this test's nursery in front of it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from codexd_trio.base.context import accept_request_id
from codexd_trio.base.logsetup import setup_logging
from codexd_trio.base.metrics import AppMetrics
from codexd_trio.client import CodexdClient, open_websocket
from codexd_trio.testing import ScriptedModel, Streamed
from codexd_trio.testing.daemon import read_events, running_codexd
from codexd_trio.web.envelope import error
from tests.fake_codexd import open_conductor, open_fake_codexd, spawn_daemon, terminate

pytestmark = pytest.mark.real_codex

REQUEST_ID = "trace-14.turn-a1b2"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def test_request_id_follows_a_turn_and_metrics_count_it(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(120):
        async with (
            running_codexd(tmp_path / "codexd", codex_home, "--log-format", "json") as cx,
            open_conductor(cx.url, tmp_path / "conductor") as c,
            CodexdClient(cx.url) as direct,
            httpx.AsyncClient(base_url=cx.url) as http,
        ):
            headers = {"X-Request-Id": REQUEST_ID}
            created = await c.http.post("/v1/codex/sessions", json={}, headers=headers)
            assert created.status_code == 201, created.text
            assert created.headers["x-request-id"] == REQUEST_ID
            session_id = created.json()["data"]["session"]["sessionId"]

            scripted_model.script(Streamed(["traced ", "turn"]))
            turn = await c.http.post("/v1/codex/turn", headers=headers,
                                     json={"sessionId": session_id, "input": "hi"})
            assert turn.status_code == 202, turn.text
            assert turn.headers["x-request-id"] == REQUEST_ID
            turn_id = turn.json()["data"]["turnId"]
            done = await direct.wait_for_turn(session_id, turn_id)
            assert done.lastTurnStatus == "completed"

            # The relay's upstream websocket carries the caller's id to codexd too.
            relay = c.url.replace("http://", "ws://") + "/v1/codex/events?after=0"
            async with open_websocket(relay, headers=headers) as ws:
                assert json.loads(await ws.get_message())["type"] == "hello"

            # Every answer carries an id: a generated one when the caller sent none, or
            # sent one that is not short and printable.
            plain = await c.http.get("/healthz")
            assert plain.headers["x-request-id"].startswith("req-")
            bad = await c.http.get("/healthz", headers={"X-Request-Id": "x" * 300})
            assert bad.headers["x-request-id"].startswith("req-")

            # The status snapshot says both metrics endpoints answer.
            health = (await c.http.get("/v1/status")).json()["data"]["metrics"]
            assert health["conductor"]["ok"] is True
            assert health["codexd"]["ok"] is True
            assert health["codexd"]["families"] >= 10
            codexd_metrics = await http.get("/metrics")
            conductor_metrics = await c.http.get("/metrics")

        # The events the requests caused carry the id (journal on disk).
        events = read_events(cx.codexd_logs / "events.jsonl")
        caused = [e for e in events if e.detail.get("requestId") == REQUEST_ID]
        types = {e.type for e in caused}
        assert "session.created" in types
        assert "turn.accepted" in types
        # Also the turn's later events, which come from the app-server, not the request.
        assert "app-server.turn.completed" in types
        assert all(e.sessionId == session_id for e in caused)

        # codexd's stderr: every line is one JSON object; the forwarded id is in it.
        lines = cx.stderr_path.read_text().splitlines()
        assert lines
        records: list[dict[str, Any]] = [json.loads(line) for line in lines]
        for record in records:
            assert {"ts", "level", "logger", "msg", "requestId"} <= set(record)
        traced = [r for r in records if r["requestId"] == REQUEST_ID]
        assert any(r["logger"] == "codexd.access" and r["path"] == "/v1/codexd/turn"
                   and r["status"] == 202 for r in traced)
        assert any(r.get("turnId") == turn_id and r.get("sessionId") == session_id
                   for r in traced)
        assert any(r["logger"] == "codexd.access" and r["method"] == "WS"
                   and r["path"] == "/v1/codexd/events" for r in traced)

        # Metrics moved: parsed with prometheus_client's own parser.
        assert codexd_metrics.status_code == 200
        assert codexd_metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        cm = _samples(codexd_metrics.text)
        assert _value(cm, "codexd_http_requests_total", route="/v1/codexd/turn",
                      method="POST", status="202") == 1
        assert _value(cm, "codexd_http_request_duration_seconds_count",
                      route="/v1/codexd/sessions", method="POST") == 1
        assert _value(cm, "codexd_turns_total", status="completed") == 1
        assert _value(cm, "codexd_turn_duration_seconds_count", status="completed") == 1
        assert _value(cm, "codexd_events_appended_total") >= len(caused)
        assert _value(cm, "codexd_event_log_sync_seconds_count") >= 1
        assert _value(cm, "codexd_child_up") == 1
        assert _value(cm, "codexd_sessions", status="active") == 1
        dm = _samples(conductor_metrics.text)
        assert _value(dm, "conductor_http_requests_total", route="/v1/codex/turn",
                      method="POST", status="202") == 1
        assert _value(dm, "conductor_codexd_request_duration_seconds_count",
                      method="POST", status="202") >= 1
        assert _value(dm, "conductor_lease_role", role="leader") == 1
        assert _value(dm, "conductor_mode", mode="running") == 1


async def test_a_replayed_keyed_post_says_so_through_the_conductor(
    tmp_path: Path, codex_home: Path
) -> None:
    with trio.fail_after(60):
        async with (
            running_codexd(tmp_path / "codexd", codex_home) as cx,
            open_conductor(cx.url, tmp_path / "conductor") as c,
        ):
            keyed = {"Idempotency-Key": "op-create-1"}
            first = await c.http.post("/v1/codex/sessions", json={}, headers=keyed)
            again = await c.http.post("/v1/codex/sessions", json={}, headers=keyed)
    assert first.status_code == 201, first.text
    assert "idempotency-replayed" not in first.headers
    # codexd's header used to stop at the conductor: a client could not tell a replay.
    assert again.headers["idempotency-replayed"] == "true"
    assert again.json() == first.json()


async def test_turn_input_the_app_server_refuses_is_a_400(
    tmp_path: Path, codex_home: Path
) -> None:
    # Found by Schemathesis: this was a 502 app_server_error (a server error for bad input).
    with trio.fail_after(120):
        async with running_codexd(tmp_path / "codexd", codex_home) as cx, \
                CodexdClient(cx.url) as client:
            session = await client.create_session()
            async with httpx.AsyncClient(base_url=cx.url) as http:
                answer = await http.post("/v1/codexd/turn",
                                         json={"sessionId": session.sessionId, "input": [{}]})
            assert answer.status_code == 400, answer.text
            error = answer.json()["error"]
            assert error["code"] == "invalid_request"
            assert error["details"]["field"] == "input"


def test_made_up_methods_share_one_metric_series() -> None:
    metrics = AppMetrics("codexd")
    for method in ("GET", "BREW", "PROPFIND", "X" * 50):
        metrics.observe("unmatched", method, 405, 0.001)
    methods = {dict(labels)["method"] for name, labels in _samples(metrics.render().decode())
               if name == "codexd_http_requests_total"}
    assert methods == {"GET", "other"}


def test_request_ids_are_short_and_printable() -> None:
    assert accept_request_id(b"abc-123") == "abc-123"
    assert accept_request_id("  spaced  ") == "spaced"
    for bad in (None, b"", b"has space", b"new\nline", "x" * 129, "\u00e9t\u00e9", "-leading"):
        generated = accept_request_id(bad)
        assert generated.startswith("req-")
        assert len(generated) == 20


async def test_conductor_forwards_ids_with_any_character_encoded(tmp_path: Path) -> None:
    # Found by Schemathesis: a control character in a session id was a 500 (the proxy built
    # an invalid upstream URL), and a '?' in it would have turned into a query.
    async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
        for raw in ("%15x", "a%3Fstatus%3Dactive", "%F0%9F%98%80"):
            answer = await c.http.get(f"/v1/codex/sessions/{raw}")
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["details"]["sessionId"] == unquote(raw)


async def test_conductor_and_status_api_log_json_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    async with open_fake_codexd() as fake:
        with log_path.open("ab") as stderr:
            async with spawn_daemon(
                [sys.executable, "-m", "conductor_trio", "start", "--log-format", "json",
                 "--local-api", "http://127.0.0.1:0", "--codexd-base", fake.url,
                 "--state-dir", str(tmp_path / "state")], env=env, stderr=stderr,
            ) as conductor, spawn_daemon(
                [sys.executable, "-m", "conductor_trio.status_api", "start", "--local-api",
                 "http://127.0.0.1:0", "--conductor-base", conductor.url],
                env={**env, "BAA_LOG_FORMAT": "json"}, stderr=stderr,
            ) as status_api:
                async with httpx.AsyncClient() as http:
                    await http.get(f"{conductor.url}/v1/codex/sessions",
                                   headers={"X-Request-Id": "json-lines-1"})
                    await http.get(f"{conductor.url}/nowhere")
                    await http.get(f"{conductor.url}/healthz")  # polled all day: DEBUG
                    await http.get(f"{status_api.url}/v1/status")
                assert await terminate(status_api) == 0
                assert await terminate(conductor) == 0
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    for record in records:
        assert {"ts", "level", "logger", "msg", "requestId"} <= set(record)
    access = [(r["logger"], r["path"], r["status"]) for r in records if "path" in r]
    assert ("conductor.access", "/v1/codex/sessions", 200) in access
    assert ("conductor.access", "/nowhere", 404) in access
    assert ("status_api.access", "/v1/status", 200) in access
    assert ("conductor.access", "/healthz", 200) not in access  # not at the INFO level
    assert any(r["requestId"] == "json-lines-1" for r in records)


async def test_a_bad_log_format_is_a_one_line_usage_error() -> None:
    for argv in (["-m", "conductor_trio", "start", "--log-format", "xml"],
                 ["-m", "conductor_trio.status_api", "start", "--log-format", "xml"],
                 ["-m", "codexd_trio", "start", "--log-format", "xml"]):
        done = await trio.run_process([sys.executable, *argv], capture_stdout=True,
                                      capture_stderr=True, check=False)
        assert done.returncode == 2, (argv, done.stderr)
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1
        assert "json or text" in lines[0]


async def test_daemons_log_to_their_own_files_that_roll_over(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BAA_LOG_FORMAT": "json",
           "BAA_STATUS_API_LOG_FILE": str(tmp_path / "logs" / "status-api.log")}
    stderr_path = tmp_path / "stderr.log"
    async with open_fake_codexd() as fake:
        with stderr_path.open("ab") as stderr:
            async with spawn_daemon(
                [sys.executable, "-m", "conductor_trio", "start",
                 "--log-file", str(tmp_path / "logs" / "conductor.log"),
                 "--local-api", "http://127.0.0.1:0", "--codexd-base", fake.url,
                 "--state-dir", str(tmp_path / "state")], env=env, stderr=stderr,
            ) as conductor, spawn_daemon(
                [sys.executable, "-m", "conductor_trio.status_api", "start", "--local-api",
                 "http://127.0.0.1:0", "--conductor-base", conductor.url],
                env=env, stderr=stderr,
            ) as status_api:
                async with httpx.AsyncClient() as http:
                    await http.get(f"{conductor.url}/nowhere")
                    await http.get(f"{status_api.url}/v1/status")
                assert await terminate(status_api) == 0
                assert await terminate(conductor) == 0
    for name, path in (("conductor", "/nowhere"), ("status_api", "/v1/status")):
        log_file = tmp_path / "logs" / f"{name.replace('_', '-')}.log"
        records = [json.loads(line) for line in log_file.read_text().splitlines()]
        assert any(r["logger"] == f"{name}.access" and r["path"] == path for r in records)
    # stderr keeps only what escapes logging (the ready lines go to stdout): nothing here.
    assert stderr_path.read_text() == ""
    # A log file that cannot be opened is a one-line error, exit 2, on every daemon.
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    for argv in (["-m", "conductor_trio", "start", "--log-file", f"{blocked}/c.log"],
                 ["-m", "conductor_trio.status_api", "start", "--log-file", f"{blocked}/s.log"],
                 ["-m", "codexd_trio", "start", "--log-file", f"{blocked}/x.log"]):
        done = await trio.run_process([sys.executable, *argv], capture_stdout=True,
                                      capture_stderr=True, check=False)
        assert done.returncode == 2, (argv, done.stderr)
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1
        assert "cannot open the log file" in lines[0]


def test_a_log_file_rolls_over_by_size(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    path = tmp_path / "codexd.log"
    try:
        setup_logging("json", log_file=path, max_bytes=2_000, backups=2)
        for n in range(200):
            logging.getLogger("codexd").info("line %d", n)
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
    files = [path, path.with_name("codexd.log.1"), path.with_name("codexd.log.2")]
    assert all(f.stat().st_size <= 2_000 for f in files)
    assert not path.with_name("codexd.log.3").exists()  # only `backups` older files are kept
    newest = [json.loads(line)["msg"] for line in path.read_text().splitlines()]
    assert newest[-1] == "line 199"


@pytest.mark.parametrize(("level", "httpx_info"), [("INFO", False), ("DEBUG", True)])
def test_httpx_does_not_log_every_request_unless_debugging(level: str, httpx_info: bool) -> None:
    # It logged each proxied request at INFO: a line formatted and written per request on the
    # conductor's hot path, saying what the access log says (issue 27).
    root = logging.getLogger()
    saved, saved_level = list(root.handlers), root.level
    try:
        setup_logging("text", level=level)
        for name in ("httpx", "httpcore"):
            assert logging.getLogger(name).isEnabledFor(logging.INFO) is httpx_info
            assert logging.getLogger(name).isEnabledFor(logging.WARNING)
        assert logging.getLogger("conductor.access").isEnabledFor(logging.INFO)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(saved_level)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)


async def test_error_details_may_use_any_key() -> None:
    # The conductor's fake codexd (and any daemon) may put "status", "code" or "message" in
    # details; the shared helper used to take them for its own arguments (TypeError, a 500).
    response = error(409, "session_closed", "closed", {"status": "closed", "code": 1,
                                                      "message": "m"})
    assert response.status_code == 409
    body = json.loads(await response.get_data())
    assert body["error"] == {"code": "session_closed", "message": "closed",
                             "details": {"status": "closed", "code": 1, "message": "m"}}
