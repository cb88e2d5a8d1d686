"""The scripted Responses-API model: SSE sequences over real sockets, and one real Codex turn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from codexd_trio.base import codexbin
from codexd_trio.base.codexbin import REPO_ROOT
from codexd_trio.testing import (
    ApplyPatch,
    Compaction,
    Drop,
    Echo,
    ExecCommand,
    ExecCommands,
    Failed,
    Hang,
    HttpError,
    Plain,
    Prompted,
    Review,
    ScriptedModel,
    Streamed,
    codex_child_env,
    codex_home_root,
    open_scripted_model,
    scenario_for_prompt,
    scratch_root,
    temporary_codex_home,
    write_codex_home,
)

GUARD = 30


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Data payloads of an SSE body, checking each frame's ``event:`` matches its ``type``."""
    events: list[dict[str, Any]] = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append(data)
    return events


def user_body(*texts: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]}
    ]
    items += [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": t}]}
        for t in texts
    ]
    return {"model": "mock-model", "stream": True, "input": items + (extra or [])}


async def post(model: ScriptedModel, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{model.base_url}/responses", json=body)


async def post_events(model: ScriptedModel, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = await post(model, body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert "content-length" not in response.headers
    return parse_sse(response.text)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@asynccontextmanager
async def open_raw_post(
    model: ScriptedModel, body: dict[str, Any]
) -> AsyncIterator[trio.SocketStream]:
    """A hand-written POST on a raw socket, for reading a response partially and hanging up.

    (httpx's nested byte iterators cannot be abandoned halfway without GC warnings.)
    """
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{model.port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", model.port)
    async with stream:
        await stream.send_all(head + data)
        yield stream


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise AssertionError(f"stream ended before {marker!r}: {seen!r}")
        seen += chunk
    return seen


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    seen = b""
    while chunk := await stream.receive_some(65536):
        seen += chunk
    return seen


def sse_part(raw: bytes) -> str:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    return body.decode()


# --------------------------------------------------------------------------------------------
# SSE sequences


async def test_plain_is_one_complete_message(scripted_model: ScriptedModel) -> None:
    scripted_model.script(Plain("hello"))
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("hi"))
    assert types(events) == ["response.created", "response.output_item.done", "response.completed"]
    item = events[1]["item"]
    assert item["type"] == "message"
    assert item["role"] == "assistant"
    assert item["content"] == [{"type": "output_text", "text": "hello"}]
    assert events[2]["response"]["id"] == events[0]["response"]["id"]
    assert events[2]["response"]["usage"]["total_tokens"] == 15


async def test_streamed_sends_deltas_in_order_then_the_full_text(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.script(Streamed(["Hel", "lo ", "there"], delay=0.01))
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("hi"))
    assert types(events) == [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_item.done",
        "response.completed",
    ]
    item_id = events[1]["item"]["id"]
    assert [e["delta"] for e in events[2:5]] == ["Hel", "lo ", "there"]
    assert {e["item_id"] for e in events[2:5]} == {item_id}
    assert events[5]["item"]["id"] == item_id
    assert events[5]["item"]["content"][0]["text"] == "Hello there"


async def test_echo_streams_the_last_user_text_in_chunks(scripted_model: ScriptedModel) -> None:
    scripted_model.script(Echo(prefix="> ", chunk=4))
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("first", "second turn"))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["> se", "cond", " tur", "n"]
    assert events[-2]["item"]["content"][0]["text"] == "> second turn"


async def test_failed_sends_response_failed_with_the_message(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.script(Failed("model melted"))
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("hi"))
    assert types(events) == ["response.created", "response.failed"]
    assert events[1]["response"]["error"]["message"] == "model melted"


async def test_drop_closes_after_response_created(scripted_model: ScriptedModel) -> None:
    scripted_model.script(Drop())
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("hi"))
    assert types(events) == ["response.created"]


@pytest.mark.parametrize(
    ("status", "message"), [(500, "mock failure"), (429, "slow down"), (401, "bad key")]
)
async def test_http_error_answers_status_and_json_error(
    scripted_model: ScriptedModel, status: int, message: str
) -> None:
    scripted_model.script(HttpError(status, message))
    with trio.fail_after(GUARD):
        response = await post(scripted_model, user_body("hi"))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["message"] == message


async def test_exec_command_then_answers_the_post_carrying_its_output(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.script(
        ExecCommand(
            "touch x.txt",
            then=Plain("ran it"),
            sandbox_permissions="require_escalated",
            justification="needs to write",
        ),
        Plain("next in line"),
    )
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("do it"))
        assert types(events) == [
            "response.created",
            "response.output_item.done",
            "response.completed",
        ]
        call = events[1]["item"]
        assert call["type"] == "function_call"
        assert call["name"] == "exec_command"
        assert json.loads(call["arguments"]) == {
            "cmd": "touch x.txt",
            "sandbox_permissions": "require_escalated",
            "justification": "needs to write",
        }
        # A user message does not match the pending follow-up: the FIFO answers it.
        events = await post_events(scripted_model, user_body("unrelated"))
        assert events[1]["item"]["content"][0]["text"] == "next in line"
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}
        events = await post_events(scripted_model, user_body("do it", extra=[call, output]))
        assert events[1]["item"]["content"][0]["text"] == "ran it"
        # The follow-up was used once; the same output again falls back to the default (Echo).
        events = await post_events(scripted_model, user_body("do it", extra=[call, output]))
    assert events[-2]["item"]["content"][0]["text"] == "echo: do it"
    assert scripted_model.requests[2].function_call_outputs() == [output]


async def test_exec_commands_are_one_response_with_distinct_calls(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.script(ExecCommands(["ls", "pwd"], then=Plain("both done")))
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("go"))
        calls = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        assert [json.loads(c["arguments"])["cmd"] for c in calls] == ["ls", "pwd"]
        assert len({c["call_id"] for c in calls}) == 2
        outputs = [
            {"type": "function_call_output", "call_id": c["call_id"], "output": "ok"} for c in calls
        ]
        events = await post_events(scripted_model, user_body("go", extra=[*calls, *outputs]))
    assert events[1]["item"]["content"][0]["text"] == "both done"


async def test_apply_patch_is_an_exec_command_with_the_patch_in_a_heredoc(
    scripted_model: ScriptedModel,
) -> None:
    # With mock-model Codex offers no apply_patch tool; it intercepts this command instead.
    scripted_model.script(ApplyPatch("*** Add File: notes.txt\n+hello", then=Plain("made")))
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("patch it"))
        (call,) = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        assert json.loads(call["arguments"]) == {"cmd": (
            "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: notes.txt\n+hello\n"
            "*** End Patch\nEOF\n")}
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}
        events = await post_events(scripted_model, user_body("patch it", extra=[call, output]))
    assert events[1]["item"]["content"][0]["text"] == "made"
    # A body that brings its own markers is used as it is.
    assert ApplyPatch("*** Begin Patch\n*** Delete File: x\n*** End Patch\n").command() == (
        "apply_patch <<'EOF'\n*** Begin Patch\n*** Delete File: x\n*** End Patch\nEOF\n")


async def post_as_codex(model: ScriptedModel, body: dict[str, Any],
                        headers: dict[str, str]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{model.base_url}/responses", json=body, headers=headers)
    assert response.status_code == 200
    return parse_sse(response.text)


async def test_compaction_and_review_requests_get_their_answers_outside_the_fifo(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.script(Plain("the scripted turn"))
    compaction = {"x-codex-turn-metadata": json.dumps({"request_kind": "compaction",
                                                       "turn_id": "t-1"})}
    review = {"x-openai-subagent": "review",
              "x-codex-turn-metadata": json.dumps({"request_kind": "turn"})}
    with trio.fail_after(GUARD):
        summary = await post_as_codex(scripted_model, user_body("compact please"), compaction)
        findings = await post_as_codex(scripted_model, user_body("review please"), review)
        turn = await post_events(scripted_model, user_body("a turn"))
    assert summary[1]["item"]["content"][0]["text"] == Compaction().summary
    text = findings[1]["item"]["content"][0]["text"]
    assert json.loads(text)["findings"][0]["title"] == Review().title
    assert json.loads(text) == json.loads(Review().text())
    # Neither took the scripted scenario: the next ordinary turn did.
    assert turn[1]["item"]["content"][0]["text"] == "the scripted turn"
    assert [r.is_compaction for r in scripted_model.requests] == [True, False, False]
    assert [r.is_review for r in scripted_model.requests] == [False, True, False]
    # What answers them can be changed.
    scripted_model.compaction = Compaction("short summary")
    with trio.fail_after(GUARD):
        summary = await post_as_codex(scripted_model, user_body("again"), compaction)
    assert summary[1]["item"]["content"][0]["text"] == "short summary"


async def test_explicit_call_id_is_used(scripted_model: ScriptedModel) -> None:
    scripted_model.script(ExecCommand("ls", call_id="call-mine"))
    with trio.fail_after(GUARD):
        events = await post_events(scripted_model, user_body("go"))
    assert events[1]["item"]["call_id"] == "call-mine"


# --------------------------------------------------------------------------------------------
# Hanging and slow streams


async def test_hang_stays_open_until_released(scripted_model: ScriptedModel) -> None:
    scripted_model.script(Hang())
    received: list[bytes] = []
    finished = trio.Event()

    async def reader() -> None:
        async with open_raw_post(scripted_model, user_body("hi")) as stream:
            received.append(await read_to_eof(stream))
        finished.set()

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await scripted_model.wait_streaming()
            assert scripted_model.streaming == 1
            # Everything is blocked: the client waits for bytes the server is not sending.
            await trio.testing.wait_all_tasks_blocked()
            assert not finished.is_set()
            scripted_model.release_hangs()
            await finished.wait()
        await scripted_model.wait_idle()
    assert types(parse_sse(sse_part(received[0]))) == ["response.created"]


async def test_a_held_stream_waits_after_its_nth_delta_until_released(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.script(Streamed(["a", "b", "c"], hold_after=2))
    with trio.fail_after(GUARD):
        async with open_raw_post(scripted_model, user_body("hold")) as stream:
            seen = await read_until(stream, b'"delta":"b"')
            await scripted_model.wait_held()
            assert b'"delta":"c"' not in seen
            scripted_model.release_hangs()
            rest = seen + await read_to_eof(stream)
    events = parse_sse(sse_part(rest))
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == [
        "a", "b", "c"]
    assert types(events)[-1] == "response.completed"


async def test_hang_ends_when_the_client_goes_away(scripted_model: ScriptedModel) -> None:
    scripted_model.script(Hang())
    with trio.fail_after(GUARD):
        async with open_raw_post(scripted_model, user_body("hi")) as stream:
            await read_until(stream, b"response.created")
            await scripted_model.wait_streaming()
        await scripted_model.wait_idle()
    assert scripted_model.streaming == 0


async def test_slow_stream_is_streaming_after_its_first_delta(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.script(Streamed(["first ", *["more "] * 100], delay=5.0))
    with trio.fail_after(GUARD):
        async with open_raw_post(scripted_model, user_body("hi")) as stream:
            await scripted_model.wait_streaming()
            seen = await read_until(stream, b'"delta":"first "')
            assert b'"delta":"more "' not in seen
        # Abandoning the response (as Codex does on interrupt) ends it without the 500 s wait.
        await scripted_model.wait_idle()
    assert scripted_model.streaming == 0


# --------------------------------------------------------------------------------------------
# Recording, FIFO, default, routing


async def test_fifo_then_default_echo(scripted_model: ScriptedModel) -> None:
    scripted_model.script(Plain("one"), Plain("two"))
    answers = []
    with trio.fail_after(GUARD):
        for prompt in ("a", "b", "c"):
            events = await post_events(scripted_model, user_body(prompt))
            answers.append(events[-2]["item"]["content"][0]["text"])
    assert answers == ["one", "two", "echo: c"]
    assert scripted_model.pending == 0


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("hello", Echo()),
        ("ECHO: hello", Echo()),
        ("SLOW 40 4: abcdefgh", Streamed(["ab", "cd", "ef", "gh"], delay=0.04)),
        ("SLOW: ab", Streamed(["a", "b", *["."] * 8], delay=0.1)),
        ("STREAM 3: hi", Streamed(["hi0 ", "hi1 ", "hi2 "])),
        ("SHELL: touch a.txt", ExecCommand("touch a.txt", then=Plain("ran: touch a.txt"))),
        ("PATCH: *** Add File: a.txt\n+hi", ApplyPatch("*** Add File: a.txt\n+hi")),
        ("PATCH:", ApplyPatch("*** Add File: patched.txt\n+patched")),
        ("FAIL: boom", Failed("boom")),
        ("HTTP 429: slow down", HttpError(429, "slow down")),
        ("HTTP: x", HttpError(500, "x")),
        ("DROP:", Drop()),
        ("HANG: wait", Hang()),
        # Bounded, and a directive only at the very start of the prompt.
        ("STREAM 999999: x", Streamed([f"x{i} " for i in range(10_000)])),
        ("please SLOW 40 4: no", Echo()),
        ("slow 40 4: lower case is text", Echo()),
    ],
)
def test_a_prompt_names_its_scenario(prompt: str, expected: object) -> None:
    assert scenario_for_prompt(prompt) == expected


async def test_prompted_plays_what_each_prompt_asks_and_ends_a_tool_follow_up(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.default = Prompted()
    with trio.fail_after(GUARD):
        assert "response.failed" in types(await post_events(scripted_model,
                                                              user_body("FAIL: boom")))
        assert (await post(scripted_model, user_body("HTTP 503: busy"))).status_code == 503
        shell = await post_events(scripted_model, user_body("SHELL: ls"))
        (call,) = [e["item"] for e in shell if e["type"] == "response.output_item.done"]
        assert call["type"] == "function_call"
        assert json.loads(call["arguments"]) == {"cmd": "ls"}
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "x"}
        follow = await post_events(scripted_model, user_body("SHELL: ls", extra=[output]))
        assert any(e.get("item", {}).get("content") == [{"type": "output_text",
                                                          "text": "ran: ls"}] for e in follow)
        # The same tool result again has no follow-up left: the turn ends, nothing re-runs.
        again = await post_events(scripted_model, user_body("SHELL: ls", extra=[output]))
        assert "function_call" not in json.dumps(again)
        echoed = await post_events(scripted_model, user_body("just text"))
        assert "echo: just text" in json.dumps(echoed)


async def test_a_long_serving_model_keeps_only_its_newest_requests(
    scripted_model: ScriptedModel,
) -> None:
    scripted_model.keep_requests = 2
    with trio.fail_after(GUARD):
        for text in ("one", "two", "three"):
            await post_events(scripted_model, user_body(text))
        await scripted_model.wait_requests(3)
    assert scripted_model.request_count == 3
    assert [r.user_texts()[-1] for r in scripted_model.requests] == ["two", "three"]


async def test_requests_are_recorded_with_headers_and_body(scripted_model: ScriptedModel) -> None:
    seen = trio.Event()

    async def waiter() -> None:
        await scripted_model.wait_requests(2)
        seen.set()

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            async with httpx.AsyncClient() as client:
                await client.post(
                    f"{scripted_model.base_url}/responses",
                    json=user_body("<environment_context/>", "what is 2+2?"),
                    headers={"thread-id": "thread-123", "originator": "tests"},
                )
                missing = await client.get(f"{scripted_model.base_url}/models")
            await seen.wait()
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    first, second = scripted_model.requests
    assert first.path == "/v1/responses"
    assert first.method == "POST"
    assert first.thread_id == "thread-123"
    assert first.headers["originator"] == "tests"
    assert first.body["model"] == "mock-model"
    assert first.user_texts() == ["<environment_context/>", "what is 2+2?"]
    assert first.last_input_item()["role"] == "user"
    assert (second.method, second.path, second.body) == ("GET", "/v1/models", {})


async def test_server_stops_with_its_context() -> None:
    with trio.fail_after(GUARD):
        async with open_scripted_model() as model:
            url = model.base_url
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(f"{url}/responses", json=user_body("hi"))


# --------------------------------------------------------------------------------------------
# Codex homes


def test_write_codex_home_points_codex_at_the_model(tmp_path: Path) -> None:
    import tomllib

    home = write_codex_home(
        tmp_path / "home",
        "http://127.0.0.1:9/v1",
        approval_policy="untrusted",
        sandbox="workspace-write",
        stream_idle_timeout_ms=2000,
    )
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["model_provider"] == "mock"
    assert config["approval_policy"] == "untrusted"
    assert config["sandbox_mode"] == "workspace-write"
    provider = config["model_providers"]["mock"]
    assert provider["base_url"] == "http://127.0.0.1:9/v1"
    assert provider["wire_api"] == "responses"
    assert provider["request_max_retries"] == 0
    assert provider["stream_max_retries"] == 0
    assert provider["stream_idle_timeout_ms"] == 2000
    assert config["features"]["plugins"] is False


def test_temporary_codex_home_is_outside_tmp_and_removed() -> None:
    with temporary_codex_home("http://127.0.0.1:9/v1") as home:
        assert (home / "config.toml").is_file()
        assert home.parent == codex_home_root()
        # Wherever the checkout is (a CI copy lives under /tmp), homes never are.
        assert not str(home.resolve()).startswith(("/tmp/", tempfile.gettempdir() + "/"))
    assert not home.exists()


def test_scratch_root_follows_the_override_and_avoids_a_checkout_under_tmp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BAA_TEST_ROOT", str(tmp_path / "chosen"))
    assert scratch_root() == tmp_path / "chosen"
    monkeypatch.delenv("BAA_TEST_ROOT")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(codexbin, "REPO_ROOT", Path("/tmp/some-checkout"))
    assert scratch_root() == tmp_path / "cache" / "baa-conductor-trio" / "test-root"


def test_child_env_sets_home_and_finds_bundled_bwrap(codex_binary: Path) -> None:
    home = codex_home_root() / "some-home"
    env = codex_child_env(home, codex_binary)
    assert env["CODEX_HOME"] == str(home)
    assert env["NO_COLOR"] == "1"
    first = env["PATH"].split(os.pathsep)[0]
    assert (Path(first) / "bwrap").exists()


# --------------------------------------------------------------------------------------------
# Standalone CLI


async def test_cli_prints_ready_line_serves_and_exits_on_sigterm() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "codexd_trio.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        cwd=str(REPO_ROOT),
        start_new_session=True,
    )
    try:
        with trio.fail_after(GUARD):
            assert process.stdout is not None
            line = await read_until(process.stdout, b"\n")
            ready = json.loads(line)
            assert ready["ready"] is True
            assert ready["service"] == "scripted-model"
            assert ready["pid"] == process.pid
            async with httpx.AsyncClient() as client:
                response = await client.post(f"{ready['url']}/responses", json=user_body("ping"))
            assert "echo: ping" in response.text
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def test_cli_prompted_lets_each_prompt_choose_its_scenario() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "codexd_trio.testing", "--prompted"],
        stdout=subprocess.PIPE,
        cwd=str(REPO_ROOT),
        start_new_session=True,
    )
    try:
        with trio.fail_after(GUARD):
            assert process.stdout is not None
            ready = json.loads(await read_until(process.stdout, b"\n"))
            async with httpx.AsyncClient() as client:
                failed = await client.post(f"{ready['url']}/responses", json=user_body("FAIL: x"))
                echoed = await client.post(f"{ready['url']}/responses", json=user_body("ping"))
            assert "response.failed" in failed.text
            assert "echo: ping" in echoed.text
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def test_cli_bad_arguments_exit_2_with_one_line() -> None:
    with trio.fail_after(GUARD):
        result = await trio.run_process(
            [sys.executable, "-m", "codexd_trio.testing", "--port", "nope"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr.count(b"\n") == 1
    assert b"--port" in result.stderr


# --------------------------------------------------------------------------------------------
# The real Codex binary


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def message(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise AssertionError("codex app-server closed stdout")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message


@pytest.mark.real_codex
async def test_real_codex_streams_scripted_deltas(
    scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path, tmp_path: Path
) -> None:
    scripted_model.script(Streamed(["Hel", "lo ", "from ", "the ", "mock"]))
    with (codex_home / "stderr.log").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [str(codex_binary), "app-server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=codex_child_env(codex_home, codex_binary),
            cwd=str(tmp_path),
            start_new_session=True,
        )
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        stdin = process.stdin
        reader = LineReader(process.stdout)

        async def send(message: dict[str, Any]) -> None:
            await stdin.send_all(json.dumps(message).encode() + b"\n")

        async def result(request_id: int) -> dict[str, Any]:
            while True:
                message = await reader.message()
                if message.get("id") == request_id and "method" not in message:
                    assert "error" not in message, message
                    response: dict[str, Any] = message["result"]
                    return response

        with trio.fail_after(60):
            client_info = {"name": "scripted-model-test", "version": "0.0.0"}
            await send({"id": 0, "method": "initialize", "params": {"clientInfo": client_info}})
            await result(0)
            await send({"method": "initialized"})
            await send({"id": 1, "method": "thread/start", "params": {"cwd": str(tmp_path)}})
            thread_id = (await result(1))["thread"]["id"]
            prompt = [{"type": "text", "text": "say hello"}]
            await send(
                {
                    "id": 2,
                    "method": "turn/start",
                    "params": {"threadId": thread_id, "input": prompt},
                }
            )
            deltas: list[str] = []
            while True:
                message = await reader.message()
                method = message.get("method")
                if method == "item/agentMessage/delta":
                    deltas.append(message["params"]["delta"])
                elif method == "turn/completed":
                    turn = message["params"]["turn"]
                    break
            await stdin.aclose()
            assert await process.wait() == 0
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()

    assert turn["status"] == "completed"
    assert deltas == ["Hel", "lo ", "from ", "the ", "mock"]
    (request,) = scripted_model.requests
    assert request.user_texts()[-1] == "say hello"
    assert request.thread_id == thread_id
