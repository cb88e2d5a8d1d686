"""The everyday commands' text, without a daemon: what ``codexd send`` prints for a turn's events
(sans-IO :class:`TurnPrinter`), each event's content for ``codexd events``, diffs, ids by
prefix, and the conductor's human summaries. The real-binary tests are in test_cli_everyday.py."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from codexd_trio.base.contracts import Event, TurnError
from codexd_trio.base.transcript import FileChange, TranscriptItem, TranscriptTurn
from codexd_trio.cli.connect import CliFailure, abbreviations, pick, short_id
from codexd_trio.cli.conversation import turn_lines
from codexd_trio.cli.render import (
    Style,
    codex_diff,
    colour_diff,
    event_content,
    settlement,
    unwrap_shell,
    use_color,
)
from codexd_trio.cli.turnprint import TurnPrinter
from conductor_trio.cli import mode_text, status_text

TURN = "turn-1"
SESSION = "session-8f3a2c1d-0000-4000-8000-000000000001"
_seq = iter(range(1, 10_000))


def ev(type_: str, turn_id: str | None = TURN, **detail: Any) -> Event:
    return Event(seq=next(_seq), at="2026-12-07T05:00:00.000Z", type=type_, sessionId=SESSION,
                 turnId=turn_id, detail=detail)


def item_event(kind: str, item: dict[str, Any]) -> Event:
    return ev(f"app-server.item.{kind}", item=item, turnId=TURN)


def printed(printer: TurnPrinter, events: list[Event]) -> tuple[str, str]:
    out: list[str] = []
    err: list[str] = []
    for event in events:
        for stream, text in printer.feed(event):
            (out if stream == "out" else err).append(text)
    return "".join(out), "".join(err)


COMMAND = {"type": "commandExecution", "id": "call-1",
           "command": "/bin/bash -lc 'echo out1; exit 3'",
           "commandActions": [{"type": "unknown", "command": "echo out1; exit 3"}]}


def test_a_turn_prints_text_as_it_streams_then_commands_and_their_outcome() -> None:
    printer = TurnPrinter(Style(False), TURN)
    out, err = printed(printer, [
        ev("turn.accepted"),
        item_event("started", {"type": "userMessage", "id": "u", "content": [
            {"type": "text", "text": "hi"}]}),
        item_event("started", {"type": "agentMessage", "id": "m1", "text": ""}),
        ev("app-server.item.agentMessage.delta", itemId="m1", delta="Hel"),
        ev("app-server.item.agentMessage.delta", itemId="m1", delta="lo"),
        item_event("completed", {"type": "agentMessage", "id": "m1", "text": "Hello"}),
        item_event("started", {**COMMAND, "status": "inProgress"}),
        ev("app-server.item.commandExecution.outputDelta", itemId="call-1", delta="out1\n"),
        item_event("completed", {**COMMAND, "status": "failed", "exitCode": 3,
                                 "durationMs": 12, "aggregatedOutput": "out1\n"}),
        item_event("completed", {"type": "agentMessage", "id": "m2", "text": "ran it"}),
        ev("app-server.turn.completed", turn={"id": TURN, "status": "completed"}),
    ])
    assert out == "Hello\n\n$ echo out1; exit 3\nout1\nexit 3 · 12 ms\n\nran it\n"
    assert err == ""
    assert printer.end is not None
    assert printer.end.status == "completed"
    # Nothing more once the turn has settled, and nothing of another turn.
    assert printer.feed(ev("app-server.item.agentMessage.delta", itemId="m3", delta="x")) == []
    other = TurnPrinter(Style(False), TURN)
    assert other.feed(ev("app-server.item.agentMessage.delta", turn_id="turn-2", itemId="z",
                         delta="not mine")) == []


def test_output_that_did_not_stream_is_printed_whole_and_a_patch_as_a_diff() -> None:
    printer = TurnPrinter(Style(False), TURN, cwd="/w")
    change = {"path": "/w/hello.txt", "kind": {"type": "add"}, "diff": "hi\nthere\n"}
    update = {"path": "/w/a.py", "kind": {"type": "update", "move_path": None},
              "diff": "@@ -1,2 +1,2 @@\n hi\n-there\n+you\n"}
    out, _ = printed(printer, [
        item_event("completed", {**COMMAND, "status": "completed", "exitCode": 0,
                                 "aggregatedOutput": "whole\n"}),
        item_event("started", {"type": "fileChange", "id": "p", "status": "inProgress",
                               "changes": [change, update]}),
        item_event("completed", {"type": "fileChange", "id": "p", "status": "declined",
                                 "changes": [change, update]}),
    ])
    assert out == (
        "$ echo out1; exit 3\nwhole\nexit 0\n\n"
        "--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1,2 @@\n+hi\n+there\n"
        "--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,2 @@\n hi\n-there\n+you\n(patch declined)\n")


def test_approvals_print_the_commands_that_decide_them() -> None:
    approval = {"approvalId": "approval-1c9e5e5e-aaaa", "kind": "commandExecution",
                "params": {"command": "/bin/bash -lc 'rm -rf x'",
                           "commandActions": [{"command": "rm -rf x"}]}}
    printer = TurnPrinter(Style(False), TURN)
    out, _ = printed(printer, [
        ev("approval.requested", approval=approval),
        ev("approval.resolved", approval={**approval, "state": "resolved",
                                          "decision": "accept", "decidedBy": "cli:me"}),
    ])
    assert "? approval 1c9e5e5e: run `rm -rf x`" in out
    assert "codexd approve 1c9e5e5e    codexd approve 1c9e5e5e --for-session    " \
           "codexd decline 1c9e5e5e" in out
    assert out.endswith("  approval 1c9e5e5e: accept (cli:me)\n")
    declining = TurnPrinter(Style(False), TURN, approvals="decline")
    out, _ = printed(declining, [ev("approval.requested", approval=approval)])
    assert "codexd approve" not in out
    assert "--approvals clients" in out


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        (ev("app-server.turn.completed", turn={"status": "interrupted"}), "interrupted", None),
        (ev("app-server.turn.completed", turn={"status": "failed", "error": {
            "message": "boom", "codexErrorInfo": "internalServerError"}}), "failed",
         "internalServerError"),
        (ev("app-server.turn.completed", turn={"status": "failed", "error": {
            "message": "x", "codexErrorInfo": {"httpConnectionFailed": {}}}}), "failed",
         "httpConnectionFailed"),
        # A status a newer Codex invents: failed with an error, else completed (as codexd).
        (ev("app-server.turn.completed", turn={"status": "cancelled"}), "completed", None),
        (ev("app-server.turn.completed.missing", code="child_exited", message="gone"), "failed",
         "child_exited"),
        (ev("turn.failed", error={"code": "daemon_restarted", "message": "m"}), "failed",
         "daemon_restarted"),
    ],
)
def test_how_a_turn_ended(event: Event, status: str, code: str | None) -> None:
    end = settlement(event, TURN)
    assert end is not None
    assert (end.status, end.code) == (status, code)
    assert settlement(event, "another-turn") is None


def test_retried_errors_go_to_stderr_and_a_final_one_only_once() -> None:
    printer = TurnPrinter(Style(False), TURN)
    _, err = printed(printer, [
        ev("app-server.error", error={"message": "reconnecting"}, willRetry=True),
        ev("app-server.error", error={"message": "fatal"}, willRetry=False),
    ])
    assert err == "codexd: codex: reconnecting (retrying)\n"


def test_colour_only_when_asked_or_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Style(True).red("x") == "\x1b[31mx\x1b[0m"
    assert Style(False).red("x") == "x"
    assert use_color("always", sys.stdout)
    assert not use_color("never", sys.stdout)

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_color("auto", Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color("auto", Tty())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "")  # empty: as if unset (no-color.org)
    assert use_color("auto", Tty())  # type: ignore[arg-type]
    assert not use_color("auto", sys.stdout) or sys.stdout.isatty()


def test_each_event_says_what_it_carries() -> None:
    assert event_content(ev("app-server.item.agentMessage.delta", delta="hi\n")) == '"hi\\n"'
    assert event_content(ev("app-server.item.commandExecution.outputDelta",
                            delta="line")) == '"line"'
    assert event_content(item_event("started", COMMAND)) == "$ echo out1; exit 3"
    assert event_content(item_event("completed", {**COMMAND, "exitCode": 3})) == \
        "$ echo out1; exit 3 -> exit 3"
    assert event_content(item_event("completed", {
        "type": "fileChange", "status": "completed",
        "changes": [{"path": "a.txt", "kind": {"type": "add"}}]})) == \
        "fileChange add a.txt -> completed"
    assert event_content(ev("app-server.turn.completed", turn={"status": "completed"})) == \
        "completed"
    assert event_content(ev("turn.failed", error={"code": "c", "message": "m"})) == "c: m"
    assert event_content(ev("session.created")) == ""  # no message: the message, empty
    long = event_content(ev("app-server.item.agentMessage.delta", delta="x" * 500))
    assert len(long) < 220


def test_diffs_and_commands_as_written() -> None:
    assert unwrap_shell("/bin/bash -lc 'echo a; echo b'") == "echo a; echo b"
    assert unwrap_shell("bash -c \"it's\"") == "it's"
    assert unwrap_shell("ls -la") == "ls -la"
    assert unwrap_shell("bash -lc 'unbalanced") == "bash -lc 'unbalanced"
    deleted = {"path": "/w/old.txt", "kind": "delete", "diff": "bye\n"}
    assert codex_diff(deleted, "/w") == "--- a/old.txt\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-bye\n"
    moved = {"path": "/w/a", "kind": {"type": "update", "move_path": "/w/b"}, "diff": "@@ x\n"}
    assert codex_diff(moved, "/w") == "--- a/a\n+++ b/b\n@@ x\n"
    assert colour_diff("--- a/w/x\n+++ b/w/x\n+new", Style(False), "/w") == [
        "--- a/x", "+++ b/x", "+new"]


def test_ids_by_unique_prefix_like_git() -> None:
    ids = ["session-8f3a2c1d-1", "session-8f3a2c1d-2", "session-11aa0000-3"]
    assert pick(ids, "11aa", "session") == "session-11aa0000-3"
    assert pick(ids, "session-11", "session") == "session-11aa0000-3"
    assert pick(ids, "session-8f3a2c1d-2", "session") == "session-8f3a2c1d-2"
    with pytest.raises(CliFailure, match="matches 2 sessions"):
        pick(ids, "8f3a", "session")
    with pytest.raises(CliFailure, match="no session matches 'zz'"):
        pick(ids, "zz", "session")
    assert abbreviations(ids) == {"session-8f3a2c1d-1": "8f3a2c1d-1",
                                  "session-8f3a2c1d-2": "8f3a2c1d-2",
                                  "session-11aa0000-3": "11aa0000"}
    assert short_id("approval-1c9e5e5e-aaaa") == "1c9e5e5e"
    assert short_id("01a24ee7-fffc-7000") == "01a24ee7"


def test_a_transcript_turn_reads_like_send_printed_it() -> None:
    turn = TranscriptTurn(
        turnId="01a24ee8-02dc-7000", status="failed", startedAt="2026-12-07T05:09:17.000Z",
        completedAt="2026-12-07T05:09:18.500Z",
        items=[
            TranscriptItem(type="userMessage", id="u", text="do it"),
            TranscriptItem(type="commandExecution", id="c", command="/bin/bash -lc 'ls'",
                           output="a\n", exitCode=0, durationMs=3, truncated=True,
                           outputBytes=90000),
            TranscriptItem(type="fileChange", id="f", status="completed", changes=[
                FileChange(path="/w/x", kind="add", diff="--- /dev/null\n+++ b/w/x\n+hi\n")]),
            TranscriptItem(type="approval", id="approval-1c9e5e5e", command="ls",
                           decision="accept", decidedBy="cli:me"),
            TranscriptItem(type="webSearch", id="w", data={"query": "trio"}),
        ],
        error=TurnError(code="child_exited", message="Codex died"),
    )
    text = "\n".join(turn_lines(turn, Style(False), "/w"))
    assert text.splitlines()[0] == \
        "── turn 01a24ee8-02dc · failed · 2026-12-07 05:09:17 · 1.5 s ──"
    for piece in ("> do it", "$ ls", "a", "exit 0 · 3 ms", "[output cut; 90000 bytes",
                  "+++ b/x", "? approval 1c9e5e5e: run `ls` -> accept (cli:me)",
                  "· webSearch trio", "turn failed: Codex died (child_exited)"):
        assert piece in text, piece


def test_conductor_summaries_for_a_person() -> None:
    status = status_text({
        "node": {"node_id": "n1", "local_api": "http://127.0.0.1:4317", "pid": 7,
                 "uptime_s": 3725, "version": "1"},
        "role": "leader", "lease": {"store": "file", "term": 3, "holder_id": "n1@h"},
        "mode": {"mode": "paused", "reason": "deploy", "requested_by": "cli:me"},
        "codexd": {"base_url": "http://127.0.0.1:4319", "reachable": True,
                   "child": {"status": "running", "pid": 9, "restarts": 0}},
        "sessions": {"count": 2, "active_count": 1},
        "active_turns": [{"sessionId": "s1", "turnId": "t1"}],
        "last_event_seq": 42, "warnings": ["w1"],
    })
    assert "up 1h 2m" in status
    assert "leader (file lease, term 3, held by n1@h)" in status
    assert "paused (reason 'deploy', by cli:me)" in status
    assert "child running (pid 9, restarts 0)" in status
    assert "1 running: s1 (turn t1)" in status
    assert "warning     w1" in status
    drained = mode_text({"mode": "draining", "role": "leader", "active_turns": [],
                         "active_turn_count": 0, "drained": True, "codexd_reachable": True})
    assert "drained  yes" in drained


def test_every_command_has_its_own_help_and_one_line_errors() -> None:
    for command in ("sessions", "new", "send", "interrupt", "show", "threads", "approvals",
                    "approve", "decline", "events"):
        helped = subprocess.run([sys.executable, "-m", "codexd_trio", command, "--help"],
                                capture_output=True, text=True, check=False)
        assert helped.returncode == 0, (command, helped.stderr)
        assert helped.stdout.startswith(f"usage: codexd {command}"), command
        assert "--via-conductor" in helped.stdout
        assert "BAA_SHARED_TOKEN_FILE" in helped.stdout
        bad = subprocess.run([sys.executable, "-m", "codexd_trio", command, "--bogus"],
                             capture_output=True, text=True, check=False)
        assert bad.returncode == 2, command
        assert bad.stderr.count("\n") == 1, (command, bad.stderr)
        assert bad.stderr.startswith("codexd: ")
    send = subprocess.run([sys.executable, "-m", "codexd_trio", "send", "--help"],
                          capture_output=True, text=True, check=False).stdout
    assert "unique prefix" in send
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
        assert f"\n  {code}" in send, code
    usage = subprocess.run([sys.executable, "-m", "codexd_trio", "--help"],
                           capture_output=True, text=True, check=False).stdout
    for command in ("sessions", "new", "send", "show", "threads", "approvals", "approve",
                    "decline", "events", "interrupt"):
        assert f"\n  {command} " in usage, command
    conductor = subprocess.run([sys.executable, "-m", "conductor_trio", "drain", "--help"],
                               capture_output=True, text=True, check=False)
    assert conductor.returncode == 0
    assert "--reason" in conductor.stdout
    assert "--json" in conductor.stdout
