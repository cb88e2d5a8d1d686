"""The real attack in a real browser: a page from another loopback port (and a rebinding host name)
tries to drive and read codexd and the conductor. Headless Debian Chromium, driven by Playwright
(its own browser download cannot work here; ``executable_path`` points at the system one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from playwright import sync_api as playwright_sync

from codexd_trio.testing import ScriptedModel
from codexd_trio.testing.daemon import read_events, running_codexd
from tests.capabilities import CHROMIUM, needs_chromium
from tests.fake_codexd import open_conductor

pytestmark = [pytest.mark.real_codex, needs_chromium()]

# What a hostile page can do without any permission: no-cors "simple" requests (text/plain and
# form bodies need no preflight) and websockets (browsers apply no CORS to them).
ATTACK_PAGE = """<!doctype html>
<title>cute cats</title>
<script>
const codexd = %(codexd)s, conductor = %(conductor)s;
async function post(results, url, type, body) {
  try {
    await fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type": type}, body});
    results.sent.push(url);
  } catch (e) {
    results.errors.push(url + ": " + e);
  }
}
function listen(results, url) {
  return new Promise(resolve => {
    const ws = new WebSocket(url);
    // Bounded either way: a stream that opens is read once and closed by the page itself.
    const guard = setTimeout(() => { results.closed.push("timeout"); ws.close(); resolve(); },
                             15000);
    ws.onopen = () => results.opened.push(url);
    ws.onmessage = e => { results.received.push(e.data); ws.close(); };
    ws.onclose = e => { clearTimeout(guard); results.closed.push(e.code); resolve(); };
  });
}
async function attack() {
  const results = {sent: [], errors: [], opened: [], received: [], closed: []};
  const danger = JSON.stringify({sandbox: "danger-full-access", approvalPolicy: "never"});
  await post(results, codexd + "/v1/codexd/sessions", "text/plain", danger);
  await post(results, codexd + "/v1/codexd/sessions", "application/x-www-form-urlencoded", "a=b");
  await post(results, conductor + "/v1/codex/sessions", "text/plain", danger);
  await post(results, conductor + "/v1/system/pause", "text/plain", "{}");
  await listen(results, codexd.replace("http:", "ws:") + "/v1/codexd/events?after=0");
  await listen(results, conductor.replace("http:", "ws:") + "/v1/codex/events?after=0");
  return results;
}
</script>
"""

# Once a rebinding host name resolves to 127.0.0.1, the page is same-origin with the daemon.
REBOUND_PAGE_SCRIPT = """async () => {
  const created = await fetch("/v1/codexd/sessions", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: "{}"});
  const listed = await fetch("/v1/codexd/sessions");
  return {created: created.status, listed: listed.status, body: await listed.text()};
}"""


def _asgi_page(html: str) -> Callable[..., Any]:
    body = html.encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


async def _serve_page(
    html: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds: list[str] = []

    class _Started:
        def started(self, value: list[str] | None = None) -> None:
            binds.extend(value or [])
            task_status.started(binds[0])

    await serve(_asgi_page(html), config, task_status=_Started())


def _browse(page_url: str, rebound_url: str, profile: Path) -> dict[str, Any]:
    """Runs in a worker thread: Playwright's sync API starts its own driver and Chromium."""
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync",
                # DNS rebinding without DNS: this name resolves to loopback for this browser.
                "--host-resolver-rules=MAP rebind.example 127.0.0.1",
            ],
            timeout=60_000,
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(page_url)
            attack: dict[str, Any] = page.evaluate("attack()")
            rebound = page.goto(rebound_url)
            assert rebound is not None
            first = {"status": rebound.status, "text": rebound.text()}
            same_origin: dict[str, Any] = page.evaluate(REBOUND_PAGE_SCRIPT)
        finally:
            browser.close()
    return {"attack": attack, "rebound": first, "sameOrigin": same_origin}


async def test_a_hostile_page_can_neither_drive_nor_read_the_node(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    with trio.fail_after(180):
        async with (
            running_codexd(tmp_path / "node", codex_home) as codexd,
            open_conductor(codexd.url, tmp_path / "conductor") as c,
            trio.open_nursery() as nursery,
        ):
            html = ATTACK_PAGE % {"codexd": json.dumps(codexd.url),
                                  "conductor": json.dumps(c.url)}
            page_url = await nursery.start(partial(_serve_page, html))
            port = codexd.url.rsplit(":", 1)[1]
            rebound_url = f"http://rebind.example:{port}/v1/codexd/sessions"
            seen = await trio.to_thread.run_sync(
                _browse, page_url, rebound_url, tmp_path / "profile"
            )
            nursery.cancel_scope.cancel(reason="attack page no longer needed")

            attack = seen["attack"]
            # The requests really left the browser (opaque answers, no network error) ...
            assert len(attack["sent"]) == 4, attack
            assert attack["errors"] == []
            # ... the websockets never opened and not one event reached the page ...
            assert attack["opened"] == []
            assert attack["received"] == []
            assert attack["closed"] == [1006, 1006]
            # ... and a rebinding name is refused, also for the page's same-origin requests.
            assert seen["rebound"]["status"] == 421
            assert "host_not_allowed" in seen["rebound"]["text"]
            assert seen["sameOrigin"]["created"] == 421
            assert seen["sameOrigin"]["listed"] == 421
            assert "session-" not in seen["sameOrigin"]["body"]

            # Nothing happened: no session, no event, the node still running.
            async with httpx.AsyncClient(base_url=codexd.url) as http:
                sessions = (await http.get("/v1/codexd/sessions")).json()["data"]["sessions"]
            assert sessions == []
            journal = codexd.logs_dir / "codexd" / "events.jsonl"
            types = [e.type for e in read_events(journal)] if journal.exists() else []
            assert not [t for t in types if t.startswith(("session.", "turn."))]
            state = (await c.http.get("/v1/system/state")).json()["data"]
            assert state["mode"] == "running"
