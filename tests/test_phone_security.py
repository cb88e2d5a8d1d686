"""Issue 25's credentials attacked like ``tests/test_security.py`` attacks the rest: pairing
codes (replay, expiry, a foreign Origin, brute force), device tokens (scope, revocation — an open
relay websocket included) and one-tap action links (replay, expiry, another approval, a foreign
Origin). A conductor on real sockets over the fake codexd; nothing refused has any effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from codexd_trio.base.contracts import Approval, now_iso
from codexd_trio.client import open_websocket
from conductor_trio.auth.pairing import MAX_FAILURES
from tests.fake_codexd import FakeCodexd, RunningConductor, open_conductor, open_fake_codexd

GUARD = 60
SHARED = "shared-secret-token"
CODEXD_TOKEN = "codexd-secret-token"
EVIL = "http://evil.example"
JSON = {"Content-Type": "application/json"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _err(answer: httpx.Response) -> tuple[int, str]:
    body = answer.json()
    assert body["ok"] is False, body
    return answer.status_code, body["error"]["code"]


async def _pair(c: RunningConductor, *, grant: list[str] | None = None) -> dict[str, Any]:
    made = await c.http.post("/v1/system/pairings", json={"name": "phone",
                                                          "grant": grant or []},
                             headers=_bearer(SHARED))
    assert made.status_code == 201, made.text
    code: dict[str, Any] = made.json()["data"]
    assert code["url"] == f"{c.url}/console#pair={code['code']}"
    return code


async def test_pairing_codes_work_once_only_from_the_console_and_resist_guessing(
        tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with (open_fake_codexd() as fake,
                    open_conductor(fake.url, tmp_path, token=SHARED,
                                   codexd_token=CODEXD_TOKEN) as c):
            # Only a /v1/system/* caller makes codes.
            assert _err(await c.http.post("/v1/system/pairings", json={})) == (
                401, "unauthorized")
            code = (await _pair(c))["code"]
            # A page elsewhere cannot pair itself, nor use up the code.
            foreign = await c.http.post("/v1/pair", json={"code": code},
                                        headers={"Origin": EVIL})
            assert _err(foreign) == (403, "origin_not_allowed")
            form = await c.http.post("/v1/pair", content=f"code={code}",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert _err(form) == (415, "unsupported_media_type")
            paired = await c.http.post("/v1/pair", json={"code": code})
            assert paired.status_code == 201, paired.text
            token = paired.json()["data"]["token"]
            assert token.startswith("baa_dev_")
            # Replayed: refused, and no second device.
            assert _err(await c.http.post("/v1/pair", json={"code": code})) == (
                401, "pairing_code_invalid")
            # Guessed: a handful of wrong codes, then even a right one waits.
            right = (await _pair(c))["code"]
            for n in range(MAX_FAILURES - 1):
                guess = await c.http.post("/v1/pair", json={"code": f"GUESS{n:07d}"})
                assert _err(guess) == (401, "pairing_code_invalid")
            limited = await c.http.post("/v1/pair", json={"code": right})
            assert _err(limited) == (429, "rate_limited")
            assert limited.json()["error"]["details"]["retryAfterS"] > 0
            devices = (await c.http.get("/v1/system/devices",
                                        headers=_bearer(SHARED))).json()["data"]["devices"]
            assert [d["name"] for d in devices] == ["phone"]


async def test_a_device_token_operates_codex_not_the_system_and_dies_at_once_when_revoked(
        tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with (open_fake_codexd() as fake,
                    open_conductor(fake.url, tmp_path, token=SHARED,
                                   codexd_token=CODEXD_TOKEN) as c):
            code = (await _pair(c))["code"]
            paired = (await c.http.post("/v1/pair", json={"code": code})).json()["data"]
            token, device_id = paired["token"], paired["device"]["id"]
            phone = _bearer(token)
            # Codex: yes (codexd has a token; the device's own credential is enough).
            assert (await c.http.get("/v1/codex/sessions", headers=phone)).status_code == 200
            made = await c.http.post("/v1/codex/sessions", json={}, headers=phone)
            assert made.status_code == 201, made.text
            # The system: no, unless granted.
            pause = await c.http.post("/v1/system/pause", json={}, headers=phone)
            assert _err(pause) == (401, "unauthorized")
            assert pause.json()["error"]["details"]["reason"] == "not_granted"
            assert _err(await c.http.get("/v1/system/devices", headers=phone)) == (
                401, "unauthorized")
            me = (await c.http.get("/v1/devices/me", headers=phone)).json()["data"]["device"]
            assert (me["id"], me["scopes"], me["revoked"]) == (device_id, ["codex"], False)

            # An open relay websocket with the token; then the device is revoked.
            relay = c.url.replace("http://", "ws://") + f"/v1/codex/events?token={token}"
            async with open_websocket(relay) as ws:
                assert '"hello"' in str(await ws.get_message())
                await fake.wait_subscribers()  # the relay's upstream is open
                revoked = await c.http.delete(f"/v1/system/devices/{device_id}",
                                              headers=_bearer(SHARED))
                assert revoked.status_code == 200, revoked.text
                assert revoked.json()["data"]["device"]["revoked"] is True
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()  # live only: nothing else happens meanwhile
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1008
            # And every later call, with a message that says why.
            for method, path in (("GET", "/v1/codex/sessions"), ("GET", "/v1/devices/me"),
                                 ("POST", "/v1/system/pause")):
                answer = await c.http.request(method, path, headers=phone,
                                              json={} if method == "POST" else None)
                assert _err(answer) == (401, "unauthorized"), path
                assert answer.json()["error"]["details"]["reason"] == "device_revoked"
            before = len(fake.sessions)
            refused = await c.http.post("/v1/codex/sessions", json={}, headers=phone)
            assert _err(refused) == (401, "unauthorized")
            assert len(fake.sessions) == before  # nothing forwarded


async def test_a_device_granted_the_system_may_pause_and_forgets_itself(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with (open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c):
            # No shared token configured: /v1/system/* is loopback-only, a granted device too.
            code = (await c.http.post("/v1/system/pairings",
                                      json={"grant": ["system"]})).json()["data"]["code"]
            token = (await c.http.post("/v1/pair", json={"code": code})).json()["data"]["token"]
            paused = await c.http.post("/v1/system/pause", json={}, headers=_bearer(token))
            assert paused.status_code == 200, paused.text
            gone = await c.http.delete("/v1/devices/me", headers=_bearer(token))
            assert gone.status_code == 200
            answer = await c.http.get("/v1/codex/sessions", headers=_bearer(token))
            assert _err(answer) == (401, "unauthorized")  # a revoked token is refused even
            # where no credential is needed: the page that holds it learns so at once.


def _approval(fake: FakeCodexd, approval_id: str) -> None:
    fake.approvals[approval_id] = Approval(
        approvalId=approval_id, sessionId="session-1", threadId="t", turnId="turn-1",
        itemId="i", kind="commandExecution", method="item/commandExecution/requestApproval",
        createdAt=now_iso(), params={"command": "touch x", "cwd": "/work"})


async def test_action_links_are_single_use_approval_scoped_and_expire(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with (open_fake_codexd() as fake,
                    open_conductor(fake.url, tmp_path, token=SHARED,
                                   codexd_token=CODEXD_TOKEN) as c):
            _approval(fake, "approval-1")
            _approval(fake, "approval-2")
            links = c.conductor.auth.actions
            t = links.make("approval-1")

            def url(approval_id: str, decision: str, token: str) -> str:
                return f"/v1/actions/{approval_id}/{decision}?t={token}"

            # Another approval, another decision, a token that is not one: refused, nothing
            # decided.
            for path in (url("approval-2", "accept", t["accept"]),
                         url("approval-1", "decline", t["accept"]),
                         url("approval-1", "accept", "1.2.3"),
                         url("approval-1", "accept", "")):
                answer = await c.http.post(path, json={})
                assert _err(answer) == (403, "action_invalid"), path
            # A page elsewhere cannot fire one (Origin), nor send a form (JSON only).
            answer = await c.http.post(url("approval-1", "accept", t["accept"]), json={},
                                       headers={"Origin": EVIL})
            assert _err(answer) == (403, "origin_not_allowed")
            answer = await c.http.post(url("approval-1", "accept", t["accept"]), content=b"",
                                       headers={"Content-Type": "text/plain"})
            assert _err(answer) == (415, "unsupported_media_type")
            assert fake.approvals["approval-2"].state == "pending"
            assert fake.approvals["approval-1"].state == "pending"
            # The page of a good link says what it is about; a GET decides nothing.
            page = await c.http.get(url("approval-1", "accept", t["accept"]))
            assert page.status_code == 200
            assert "touch x" in page.text
            assert "action-confirm" in page.text
            assert fake.approvals["approval-1"].state == "pending"
            # Used once (no credential besides the link, though codexd has a token).
            done = await c.http.post(url("approval-1", "accept", t["accept"]), content=b"",
                                     headers=JSON)
            assert done.status_code == 200, done.text
            assert fake.approvals["approval-1"].decision == "accept"
            # Replayed, or the other button: refused, and a clear page for a browser.
            for decision in ("accept", "decline"):
                again = await c.http.post(url("approval-1", decision, t[decision]), json={})
                assert _err(again) == (409, "action_used")
            page = await c.http.get(url("approval-1", "accept", t["accept"]))
            assert page.status_code == 409
            assert "already used" in page.text
            # Late.
            late = links.make("approval-2", not_after=1.0)
            answer = await c.http.post(url("approval-2", "accept", late["accept"]), json={})
            assert _err(answer) == (410, "action_expired")
            assert fake.approvals["approval-2"].state == "pending"


async def test_the_421_names_the_setting_that_allows_a_host(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with (open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c):
            answer = await c.http.get("/v1/status", headers={"Host": "mini.tailnet.ts.net"})
            assert _err(answer) == (421, "host_not_allowed")
            message = answer.json()["error"]["message"]
            assert "--allowed-host" in message
            assert "BAA_CONDUCTOR_LOCAL_API_ALLOWED_HOSTS" in message
        async with (open_fake_codexd() as fake,
                    open_conductor(fake.url, tmp_path / "b",
                                   allowed_hosts=("mini.tailnet.ts.net",)) as c):
            answer = await c.http.get("/v1/status", headers={"Host": "mini.tailnet.ts.net"})
            assert answer.status_code == 200


async def test_callers_through_a_local_proxy_are_not_taken_for_local_ones(tmp_path: Path) -> None:
    # `tailscale serve` in front of a loopback conductor: every tailnet device arrives from
    # 127.0.0.1. Before, such a request passed as local: with a token-less codexd and no shared
    # token, any device on the tailnet could start sessions and pause the node.
    proxied: list[dict[str, str]] = [
        {"Host": "mini.tailnet.ts.net"},
        {"X-Forwarded-For": "100.64.0.9", "Host": "127.0.0.1"},
    ]
    with trio.fail_after(GUARD):
        async with (open_fake_codexd() as fake,
                    open_conductor(fake.url, tmp_path,
                                   allowed_hosts=("mini.tailnet.ts.net",)) as c):
            for headers in proxied:
                made = await c.http.post("/v1/codex/sessions", json={}, headers=headers)
                assert _err(made) == (401, "unauthorized"), headers
                paused = await c.http.post("/v1/system/pause", json={}, headers=headers)
                assert _err(paused) == (401, "unauthorized"), headers
                # Reads stay as open as on an exposed conductor over a token-less codexd.
                listed = await c.http.get("/v1/codex/sessions", headers=headers)
                assert listed.status_code == 200
            assert fake.sessions == {}
            # A paired device is a credential there: the phone behind the proxy works.
            code = (await c.http.post("/v1/system/pairings", json={})).json()["data"]["code"]
            token = (await c.http.post("/v1/pair", json={"code": code},
                                       headers=proxied[0])).json()["data"]["token"]
            made = await c.http.post("/v1/codex/sessions", json={},
                                     headers={**proxied[0], **_bearer(token)})
            assert made.status_code == 201, made.text
            # Local callers are what they were.
            assert (await c.http.post("/v1/codex/sessions", json={})).status_code == 201
