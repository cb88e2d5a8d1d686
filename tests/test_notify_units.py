"""Issue 25's parts on their own (fast): what a notification says, the outbox's journal, the
sink settings, pairing codes, device tokens and action links."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from codexd_trio.base.contracts import Event, now_iso
from codexd_trio.base.settings import ConfigError
from conductor_trio.auth.actions import ActionLinks, ActionRefused, Retryable
from conductor_trio.auth.devices import DeviceStore
from conductor_trio.auth.pairing import CODE_TTL_S, MAX_FAILURES, PairingCodes, PairingRefused
from conductor_trio.notify.messages import compose, deep_link
from conductor_trio.notify.notifier import retry_delay
from conductor_trio.notify.outbox import Outbox, new_entry
from conductor_trio.notify.send import sink_url
from conductor_trio.sinks import DEFAULT_NOTIFY_KINDS, parse_sink

BASE = "http://mini.tailnet.ts.net:4317"


def _links(approval_id: str, deadline: float | None) -> dict[str, str]:
    return {d: f"{BASE}/v1/actions/{approval_id}/{d}?t=T-{d}" for d in ("accept", "decline")}


def _approval_event(seq: int = 7, **approval: Any) -> Event:
    record = {"approvalId": "approval-1", "sessionId": "session-abcdef123", "kind":
              "commandExecution", "state": "pending", "expiresAt": "2030-01-01T14:05:00.000Z",
              "onTimeout": "decline",
              "params": {"command": "/bin/bash -lc 'touch x'", "cwd": "/work/ws"}, **approval}
    return Event(seq=seq, at=now_iso(), type="approval.requested", sessionId=record["sessionId"],
                 detail={"approval": record})


# -- messages --------------------------------------------------------------------------------


def test_an_approval_notification_carries_the_deep_link_both_actions_and_its_deadline() -> None:
    message = compose(_approval_event(), base=BASE, links=_links)
    assert message is not None
    assert message.key == "e7"
    assert message.kind == "approval"
    assert message.click == f"{BASE}/console#session=session-abcdef123&approval=approval-1"
    assert [(a.label, a.url) for a in message.actions] == [
        ("Accept", f"{BASE}/v1/actions/approval-1/accept?t=T-accept"),
        ("Decline", f"{BASE}/v1/actions/approval-1/decline?t=T-decline")]
    assert "touch x" in message.body
    assert "/work/ws" in message.body
    assert "declines by itself at " in message.body


def test_what_needs_nobody_is_not_notified() -> None:
    ruled = _approval_event()
    ruled = Event(**{**_as_dict(ruled), "detail": {**ruled.detail, "rule": "ls-ok"}})
    assert compose(ruled, base=BASE, links=_links) is None
    # approvals: decline (no deadline: codexd answers at once).
    assert compose(_approval_event(expiresAt=None), base=BASE, links=_links) is None
    assert compose(Event(seq=1, at=now_iso(), type="app-server.item.agentMessage.delta"),
                   base=BASE, links=_links) is None


def _as_dict(event: Event) -> dict[str, Any]:
    return {f: getattr(event, f) for f in event.__struct_fields__}


@pytest.mark.parametrize(("type_", "detail", "level", "kind"), [
    ("app-server.turn.completed", {"turn": {"id": "t", "status": "completed"}}, "info",
     "turn.completed"),
    ("app-server.turn.completed", {"turn": {"id": "t", "status": "interrupted"}}, "info",
     "turn.interrupted"),
    ("app-server.turn.completed", {"turn": {"id": "t", "status": "failed",
                                            "error": {"message": "boom"}}}, "error",
     "turn.failed"),
    ("app-server.turn.completed.missing", {"message": "child gone"}, "error", "turn.failed"),
    ("child.restarting", {}, "error", "child.failed"),
    ("turn.queue.stopped", {"queueId": "q-1", "code": "turn_failed", "message": "boom"},
     "error", "queue.stopped"),
])
def test_every_kind_of_news(type_: str, detail: dict[str, Any], level: str, kind: str) -> None:
    event = Event(seq=3, at=now_iso(), type=type_, level=level,  # type: ignore[arg-type]
                  sessionId="session-1", turnId="t", detail=detail)
    message = compose(event, base=BASE, links=_links)
    assert message is not None
    assert message.kind == kind
    assert message.click is not None
    assert message.click.startswith(f"{BASE}/console")
    # A child restarting at a warning is routine, not news.
    quiet = Event(seq=3, at=now_iso(), type="child.restarting", level="warn")
    assert compose(quiet, base=BASE, links=_links) is None


def test_sink_urls_carry_actions_the_way_each_sink_can() -> None:
    message = compose(_approval_event(), base=BASE, links=_links)
    assert message is not None
    url, body = sink_url(parse_sink("ntfys://ntfy.sh/topic", source="t"), message, "e7:x")
    assert url.startswith("ntfys://ntfy.sh/topic?click=")
    assert "&actions=http%2C%20Accept" in url
    assert "Accept:" not in body  # buttons, not links, on ntfy
    url, body = sink_url(parse_sink("json://127.0.0.1:9/hook", source="t"), message, "e7:x")
    assert ":notificationId=e7%3Ax" in url
    assert ":accept=" in url
    assert ":decline=" in url
    url, body = sink_url(parse_sink("mailto://u:p@example.com", source="t"), message, "e7:x")
    assert url == "mailto://u:p@example.com"
    assert f"Open: {message.click}" in body
    assert "Accept: " in body
    assert "Decline: " in body


def test_deep_links_encode_ids() -> None:
    assert deep_link(BASE + "/", "s/1", "a&b") == f"{BASE}/console#session=s%2F1&approval=a%26b"


def test_sink_entries_and_their_filters() -> None:
    assert parse_sink("ntfy://h/t", source="x").kinds == DEFAULT_NOTIFY_KINDS
    sink = parse_sink("[approval,turn]json://h/x", source="x")
    assert sink.kinds == ("approval", "turn.completed", "turn.failed", "turn.interrupted")
    assert sink.url == "json://h/x"
    for bad in ("[approvals]json://h", "[approval json://h", "not a url", "json://"):
        with pytest.raises(ConfigError) as refused:
            parse_sink(bad, source="BAA_NOTIFY_URLS")
        assert "BAA_NOTIFY_URLS" in str(refused.value)
    # A URL holds secrets: a message about a bad one never shows it whole.
    with pytest.raises(ConfigError) as secret:
        parse_sink("tgram//123456:SECRETTOKEN", source="x")
    assert "SECRETTOKEN" not in str(secret.value)


def test_retries_back_off_with_jitter_up_to_five_minutes() -> None:
    assert [retry_delay(n, lambda: 1.0) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(30, lambda: 1.0) == 300.0
    assert retry_delay(3, lambda: 0.0) == 2.0  # half of the step at the least


# -- the outbox ------------------------------------------------------------------------------


def _message(seq: int) -> Any:
    message = compose(_approval_event(seq), base=BASE, links=_links)
    assert message is not None
    return message


async def test_the_outbox_is_durable_deduplicated_bounded_and_counts_drops(
        tmp_path: Path) -> None:
    path = tmp_path / "notify" / "outbox.jsonl"
    outbox = Outbox(path, max_pending=3)
    outbox.load()
    await outbox.add([new_entry(_message(1), "a"), new_entry(_message(1), "b")], cursor=1)
    # The same event decided again (after a restart) adds nothing.
    await outbox.add([new_entry(_message(1), "a")], cursor=1)
    assert list(outbox.pending) == ["e1:a", "e1:b"]
    await outbox.mark_sent("e1:a")
    dropped = await outbox.add([new_entry(_message(n), "b") for n in (2, 3, 4)], cursor=4)
    assert [e.id for e in dropped] == ["e1:b"]  # the oldest
    assert outbox.dropped_by_sink == {"b": 1}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    # A restart reads it back: pending, cursor; a torn last line (a SIGKILL mid-append) is
    # ignored and cut off before the next append.
    with path.open("ab") as f:
        f.write(b'{"op":"add","entry":{"id":"e5:b"')
    again = Outbox(path, max_pending=3)
    again.load()
    assert list(again.pending) == ["e2:b", "e3:b", "e4:b"]
    assert again.cursor == 4
    assert again.knows("e4:b")
    assert not again.knows("e5:b")
    await again.mark_sent("e2:b")
    for line in path.read_bytes().splitlines():
        json.loads(line)  # every line whole
    third = Outbox(path, max_pending=3)
    third.load()
    assert list(third.pending) == ["e3:b", "e4:b"]


# -- pairing codes, devices, action links ------------------------------------------------------


def test_a_pairing_code_works_once_expires_and_guesses_are_rate_limited() -> None:
    now = [1000.0]
    codes = PairingCodes(lambda: now[0])
    code, ttl = codes.create("phone", ["codex"])
    assert ttl == CODE_TTL_S == 300
    assert codes.redeem(code.lower()).name == "phone"  # read off a screen: case does not matter
    with pytest.raises(PairingRefused) as used:
        codes.redeem(code)
    assert (used.value.status, used.value.code) == (401, "pairing_code_invalid")
    late, _ = codes.create("phone", ["codex"])
    now[0] += CODE_TTL_S + 1
    with pytest.raises(PairingRefused):
        codes.redeem(late)

    # Brute force: after MAX_FAILURES wrong codes, even the right one is refused for a while.
    right, _ = codes.create("phone", ["codex"])
    for _ in range(MAX_FAILURES - 1):  # the late code above is the first in this window
        with pytest.raises(PairingRefused):
            codes.redeem("AAAAAAAAAAAA")
    with pytest.raises(PairingRefused) as limited:
        codes.redeem(right)
    assert (limited.value.status, limited.value.code) == (429, "rate_limited")
    now[0] += 61
    assert codes.redeem(right).scopes == ["codex"]


async def test_device_tokens_are_stored_hashed_private_and_revocable(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "devices.json")
    device, token = await store.add("phone", ["codex"])
    raw = (tmp_path / "devices.json").read_text()
    assert token not in raw
    assert token.split("_")[-1] not in raw
    assert stat.S_IMODE(os.stat(tmp_path / "devices.json").st_mode) == 0o600
    assert store.check(token) == (device, "ok")
    assert store.check(token[:-1] + ("A" if token[-1] != "A" else "B"))[1] == "unknown"
    await store.revoke(device.id)
    again = DeviceStore(tmp_path / "devices.json")
    again.load()
    checked, why = again.check(token)
    assert why == "revoked"
    assert checked is not None
    assert checked.revokedAt is not None


async def test_action_links_once_for_one_approval_and_a_while(tmp_path: Path) -> None:
    now = [1_000_000.0]
    links = ActionLinks(tmp_path, clock=lambda: now[0])
    links.load()
    assert stat.S_IMODE(os.stat(tmp_path / "action-key").st_mode) == 0o600
    tokens = links.make("approval-1")
    delivered: list[str] = []

    async def deliver() -> str:
        delivered.append("x")
        return "done"

    # Another approval's id, or the other decision, with this link's token: refused.
    for approval, decision in (("approval-2", "accept"), ("approval-1", "decline")):
        with pytest.raises(ActionRefused) as wrong:
            await links.spend(approval, decision, tokens["accept"], deliver)
        assert wrong.value.code == "action_invalid"
    # codexd unreachable: the link stays usable.
    async def unreachable() -> str:
        raise Retryable("down")

    with pytest.raises(Retryable):
        await links.spend("approval-1", "accept", tokens["accept"], unreachable)
    assert await links.spend("approval-1", "accept", tokens["accept"], deliver) == "done"
    # Used: a second tap, or the notification's other button, is refused — also after a
    # restart.
    for decision, token in tokens.items():
        with pytest.raises(ActionRefused) as used:
            await links.spend("approval-1", decision, token, deliver)
        assert used.value.code == "action_used"
    restarted = ActionLinks(tmp_path, clock=lambda: now[0])
    restarted.load()
    with pytest.raises(ActionRefused):
        restarted.check("approval-1", "accept", tokens["accept"])
    assert delivered == ["x"]
    # Late: refused; and never later than the approval's own deadline.
    fresh = restarted.make("approval-3", not_after=now[0] + 60)
    now[0] += 61
    with pytest.raises(ActionRefused) as late:
        restarted.check("approval-3", "accept", fresh["accept"])
    assert (late.value.status, late.value.code) == (410, "action_expired")


async def test_concurrent_taps_decide_once(tmp_path: Path) -> None:
    links = ActionLinks(tmp_path)
    links.load()
    tokens = links.make("approval-1")
    outcomes: list[str] = []
    release = trio.Event()

    async def slow() -> str:
        await release.wait()
        return "done"

    async def tap() -> None:
        try:
            outcomes.append(await links.spend("approval-1", "accept", tokens["accept"], slow))
        except ActionRefused as exc:
            outcomes.append(exc.code)
            release.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tap)
        nursery.start_soon(tap)
    assert sorted(outcomes) == ["action_used", "done"]
