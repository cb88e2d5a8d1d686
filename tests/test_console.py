"""The operator console (``GET /console``) in a real browser against a real node.

codexd with the real Codex child and the scripted model, the conductor in this process (so a test
can cut its relay websockets), headless Debian Chromium driven by Playwright's sync API in a
worker thread. What the test does on the node's side while the page runs (scripting the model,
cutting relays, deciding an approval "elsewhere") goes back to Trio with ``trio.from_thread``.
Waiting is Playwright's ``expect`` (it polls the page until the condition holds), never a sleep.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from playwright.sync_api import Page, Route, ViewportSize, expect, sync_playwright

from codexd_trio.testing import ExecCommand, Plain, ScriptedModel, Streamed
from codexd_trio.testing.daemon import running_codexd
from tests import capabilities
from tests.capabilities import CHROMIUM
from tests.fake_codexd import RunningConductor, open_conductor, open_fake_codexd

ARTIFACTS = Path(__file__).parent / "artifacts"
TOKEN = "console-shared-token"
WAIT_MS = 60_000  # an upper bound for the page to catch up with a real Codex turn
# ``expect`` polls with its own timeout (5 s by default), not the page's: a real turn on a busy
# machine can take longer than that.
expect.set_options(timeout=WAIT_MS)

needs_chromium = capabilities.needs_chromium()

DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass
class Node:
    conductor: RunningConductor
    workdir: Path

    @property
    def url(self) -> str:
        return self.conductor.url


@asynccontextmanager
async def _node(
    tmp_path: Path, codex_home: Path, *, codexd_token: str | None = None
) -> AsyncIterator[Node]:
    """codexd (with ``codexd_token`` when given) and a conductor with the shared token."""
    workdir = codex_home / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"BAA_CODEXD_TOKEN": codexd_token} if codexd_token else None
    async with (
        running_codexd(tmp_path / "node", codex_home, env=env) as codexd,
        open_conductor(codexd.url, tmp_path / "conductor", token=TOKEN,
                       codexd_token=codexd_token) as c,
    ):
        yield Node(c, workdir)


def _in_browser(
    url: str, flow: Callable[[Page], Any], viewport: ViewportSize, path: str = "/console",
    init_script: str | None = None,
) -> Any:
    """Runs in a worker thread: Playwright's sync API starts its own driver and Chromium."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
            timeout=60_000,
        )
        try:
            page = browser.new_page(viewport=viewport)
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            if init_script:
                page.add_init_script(init_script)
            page.goto(url + path)
            # A marker that a reload would wipe: everything below happens in one page load.
            page.evaluate("window.__sameLoad = true")
            result = flow(page)
            assert page.evaluate("window.__sameLoad === true"), "the page was reloaded"
            assert errors == [], errors
            return result
        finally:
            browser.close()


async def _browse(
    node: Node, flow: Callable[[Page], Any], viewport: ViewportSize, path: str = "/console",
    init_script: str | None = None,
) -> Any:
    return await trio.to_thread.run_sync(_in_browser, node.url, flow, viewport, path,
                                         init_script)


def _shot(page: Page, name: str, viewport: ViewportSize) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size(viewport)
    page.evaluate("document.getElementById('notice').hidden = true")  # a transient toast
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _create_session(page: Page, workdir: Path, **choices: str) -> str:
    """Fill the "new session" form, submit, and return the id of the session it selected."""
    before = page.get_by_test_id("session-row").count()
    page.fill("#new-cwd", str(workdir))
    for field, value in choices.items():
        page.select_option(f"#new-{field}", value)
    with page.expect_response(lambda r: r.url.endswith("/v1/codex/sessions")
                              and r.request.method == "POST") as created:
        page.get_by_test_id("new-session").click()
    assert created.value.status == 201, created.value.text()
    session_id: str = created.value.json()["data"]["session"]["sessionId"]
    assert session_id.startswith("session-")
    expect(page.get_by_test_id("session-row")).to_have_count(before + 1)
    # The page selects the new session.
    expect(page.locator("#selected-id")).to_have_text(session_id)
    expect(page.locator(f"[data-testid=session-row][data-session-id='{session_id}']")) \
        .to_have_class("selected")
    return session_id


def _send(page: Page, text: str) -> None:
    page.get_by_test_id("turn-input").fill(text)
    page.get_by_test_id("turn-submit").click()


def _page_seqs(page: Page) -> list[int]:
    raw: list[str] = page.get_by_test_id("event-row").evaluate_all(
        "rows => rows.map(r => r.dataset.seq)")
    return [int(s) for s in raw]


def _server_seqs(node: Node, session_id: str) -> list[int]:
    """The session's events as codexd's durable log has them (through the conductor)."""
    async def read() -> list[int]:
        answer = await node.conductor.http.get(
            "/v1/codex/events", params={"after": "0", "limit": "1000", "sessionId": session_id})
        return [e["seq"] for e in answer.json()["data"]["events"]]

    seqs: list[int] = trio.from_thread.run(read)
    return seqs


def _mode(node: Node) -> str:
    async def read() -> str:
        state = (await node.conductor.http.get("/v1/system/state")).json()["data"]
        return str(state["mode"])

    mode: str = trio.from_thread.run(read)
    return mode


# What a phone must not do with long unbreakable strings (paths, ids, commands): scroll sideways,
# or hold an element wider than the screen.
_OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const outside = (r) => r.left < -0.5 || r.right > width + 0.5;
  const name = (e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`;
  const wide = [];
  // The inside of a closed <details> is not drawn (Chromium skips its layout).
  const folded = (e) => e.closest("details:not([open]) > :not(summary)") !== null;
  for (const e of document.querySelectorAll("body *")) {
    const r = e.getBoundingClientRect();
    if ((r.width === 0 && r.height === 0) || folded(e)) continue;  // not rendered
    if (outside(r)) wide.push(name(e));
  }
  // Text can stick out of a box that fits (or be hidden in a sideways scroller inside it).
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const parent = n.parentElement;
    if (!n.data.trim() || getComputedStyle(parent).textOverflow === "ellipsis"
        || folded(parent)) continue;
    const range = document.createRange();
    range.selectNodeContents(n);
    const r = range.getBoundingClientRect();
    if (r.width > 0 && outside(r)) wide.push(`text in ${name(parent)}: ${n.data.slice(0, 40)}`);
  }
  return {scrollWidth: document.documentElement.scrollWidth, clientWidth: width, wide};
}"""
# Ordinary words in the sessions table stay whole: only long tokens may break (a squeezed cell
# once split "1 to approve" mid-letter). A word drawn on two lines has two distinct line tops.
_SPLIT_WORDS_JS = """() => {
  const split = [];
  for (const row of document.querySelectorAll("[data-testid=session-row]")) {
    const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      for (const m of n.data.matchAll(/\\S+/g)) {
        if (m[0].length > 16) continue;
        const range = document.createRange();
        range.setStart(n, m.index);
        range.setEnd(n, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
        if (tops.size > 1) split.push(m[0]);
      }
    }
  }
  return split;
}"""


TABLET: ViewportSize = {"width": 768, "height": 1024}


def _assert_fits(page: Page) -> None:
    """On a phone (where it is checked first), a tablet and a desktop: nothing sticks out
    sideways, and the sessions table keeps ordinary words whole."""
    for viewport in (PHONE, TABLET, DESKTOP):
        page.set_viewport_size(viewport)
        fit: dict[str, Any] = page.evaluate(_OVERFLOW_JS)
        assert fit["scrollWidth"] <= fit["clientWidth"] <= viewport["width"], (viewport, fit)
        assert fit["wide"] == [], (viewport, fit["wide"])
        assert page.evaluate(_SPLIT_WORDS_JS) == [], viewport
    page.set_viewport_size(PHONE)


def _long_workdir(tmp_path: Path, length: int = 150) -> Path:
    """A directory under ``tmp_path`` whose path is ``length`` characters long (longer when
    ``tmp_path`` itself nearly is), its last name one long unbreakable word."""
    name = "work-" + "x" * max(40, length - len(str(tmp_path)) - 6)
    workdir = tmp_path / name
    workdir.mkdir()
    assert len(str(workdir)) >= length
    return workdir


# ------------------------------------------------------------------------------------------------
# Without a browser: what the conductor serves


async def test_console_files_links_and_headers(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            page = await c.http.get("/console")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            # Never framed (the page has buttons that pause the node and accept commands), and
            # it loads and connects to nothing but its own origin.
            csp = page.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp
            assert "connect-src 'self'" in csp
            assert page.headers["x-frame-options"] == "DENY"
            for testid in ("new-session", "turn-input", "turn-submit", "turn-output",
                           "mode-value", "mode-pause", "mode-resume", "token-input"):
                assert f'data-testid="{testid}"' in page.text
            assert "http://" not in page.text
            assert "https://" not in page.text

            script = await c.http.get("/console/console.js")
            assert script.headers["content-type"].startswith("text/javascript")
            from conductor_trio.web.console import ASSETS

            modules = "".join([(await c.http.get(f"/console/{name}")).text
                               for name in ASSETS if name.endswith(".js")
                               and name not in ("pair.js", "action.js")])
            for testid in ("session-row", "event-row", "approval-row", "approval-accept",
                           "approval-decline"):
                assert f'"{testid}"' in script.text + modules
            assert "sessionStorage" in modules
            assert "document.cookie" not in modules
            assert "localStorage" not in modules
            # Issue 25: a paired device's token is kept across tabs (pair.js), the shared
            # token never is.
            pair = await c.http.get("/console/pair.js")
            assert pair.headers["content-type"].startswith("text/javascript")
            assert "localStorage" in pair.text
            assert "sessionStorage" not in pair.text
            assert "document.cookie" not in pair.text
            css = await c.http.get("/console/console.css")
            assert css.headers["content-type"].startswith("text/css")
            assert "@media (max-width" in css.text

            # Issue 24: the page's ES modules, the favicon, and the vendored Markdown renderer
            # and sanitizer with their licences (a fixed table of names too).
            for name in ("state.js", "node.js", "sessions.js", "approvals.js", "stream.js",
                         "items.js", "dom.js", "api.js", "markdown.js", "conversation.js",
                         "queue.js", "threads.js", "alerts.js"):
                module = await c.http.get(f"/console/{name}")
                assert module.headers["content-type"].startswith("text/javascript"), name
                assert "http://" not in module.text, name
                assert "https://" not in module.text, name
            icon = await c.http.get("/console/favicon.svg")
            assert icon.headers["content-type"] == "image/svg+xml"
            assert 'rel="icon" href="/console/favicon.svg"' in page.text
            for name, kind in (("marked.umd.js", "text/javascript"),
                               ("purify.min.js", "text/javascript"),
                               ("marked.LICENSE.md", "text/plain"),
                               ("dompurify.LICENSE", "text/plain"),
                               ("README.md", "text/plain")):
                vendored = await c.http.get(f"/console/vendor/{name}")
                assert vendored.status_code == 200, name
                assert vendored.headers["content-type"].startswith(kind), name
                assert vendored.headers["x-content-type-options"] == "nosniff"
            outside = await c.http.get("/console/vendor/..%2F__init__.py")
            assert (outside.status_code, outside.json()["error"]["code"]) == (404, "not_found")

            missing = await c.http.get("/console/../app.py")
            assert missing.status_code == 404
            assert missing.json()["ok"] is False
            unknown = await c.http.get("/console/secrets.txt")
            assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")

            home = await c.http.get("/")
            assert 'href="/console"' in home.text
            status_ui = await c.http.get("/v1/status/ui")
            assert 'href="/console"' in status_ui.text
            described = (await c.http.get("/describe")).json()["data"]["routes"]
            assert {"method": "GET", "path": "/console",
                    "summary": "operator console (HTML, same origin)"} in described


async def test_status_page_links_the_console_it_is_given(tmp_path: Path) -> None:
    # The conductor links its own /console; the status-api (read-only) links the conductor's
    # (tests/test_status_api.py); a page given none has no link.
    from conductor_trio.web.status_page import render_page

    assert "/console" not in render_page("status")
    assert 'href="/console"' in render_page("conductor", console_href="/console")
    linked = render_page("node status", console_href='http://127.0.0.1:4317/console"><x')
    assert 'href="http://127.0.0.1:4317/console&quot;&gt;&lt;x"' in linked


def test_console_files_are_package_data() -> None:
    from importlib.resources import files

    from conductor_trio.web.console import ASSETS, VENDORED

    here = files("conductor_trio.web.console")
    names = {p.name for p in here.iterdir()}
    # Every file the conductor serves is there (the table is the allow list).
    assert {"index.html"} | set(ASSETS) <= names
    assert set(VENDORED) <= {p.name for p in here.joinpath("vendor").iterdir()}
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert ('"conductor_trio.web.console" = ["*.html", "*.js", "*.css", "*.svg", "vendor/*"]'
            in pyproject)


CODEXD_METRICS = """# HELP codexd_turns_total Turns by final status.
# TYPE codexd_turns_total counter
codexd_turns_total{status="completed"} 40
codexd_turns_total{status="failed"} 2
codexd_turns_total{status="interrupted"} 1
codexd_http_requests_total{route="/v1/codexd/turn",status="202"} 1000
"""
CONDUCTOR_METRICS = """# TYPE conductor_http_requests_total counter
conductor_http_requests_total{route="/v1/codex/turn",status="202"} 43
conductor_http_requests_total{route="/v1/codex/turn",status="503"} 3
"""


@needs_chromium
async def test_console_metrics_highlights_show_only_when_metrics_answer(tmp_path: Path) -> None:
    def flow(page: Page) -> dict[str, str]:
        metrics = page.locator("#metrics")
        expect(page.get_by_test_id("mode-value")).to_have_text("running")
        page.route("**/metrics", lambda route: route.fulfill(status=404, body="{}"))
        page.evaluate("refreshMetrics()")
        expect(metrics).to_be_hidden()  # no daemon answers /metrics

        def serve(route: Route) -> None:
            codexd = route.request.url.endswith("/v1/codex/metrics")
            route.fulfill(status=200, body=CODEXD_METRICS if codexd else CONDUCTOR_METRICS,
                          content_type="text/plain; version=0.0.4")

        page.unroute("**/metrics")
        page.route("**/metrics", serve)
        page.evaluate("refreshMetrics()")
        expect(metrics).to_be_visible()
        facts: dict[str, str] = page.locator("#metrics-facts").evaluate(
            "dl => Object.fromEntries([...dl.querySelectorAll('dt')].map("
            "dt => [dt.textContent, dt.nextElementSibling.textContent]))")
        page.unroute("**/metrics")
        page.evaluate("refreshMetrics()")
        expect(metrics).to_be_visible()  # the conductor's own /metrics is real
        return facts

    with trio.fail_after(120):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            facts = await trio.to_thread.run_sync(_in_browser, c.url, flow, PHONE)
    assert facts["Turns"] == "43"  # codexd's, through the conductor
    assert facts["Failed turns"] == "2"
    assert facts["5xx answers"] == "3"  # the conductor's own API only
    assert facts["Requests"] == "46"


# ------------------------------------------------------------------------------------------------
# In a real browser against a real node


@needs_chromium
@pytest.mark.real_codex
async def test_console_creates_a_session_runs_a_turn_and_pauses_the_node(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    prompt = "ECHO: hello from the console"

    listed: list[str] = []

    def flow(page: Page) -> None:
        page.on("request", lambda r: listed.append(r.url) if "/v1/codex/sessions?" in r.url
                else None)
        expect(page.get_by_test_id("mode-value")).to_have_text("running")
        expect(page.locator("#role")).to_have_text("leader")
        expect(page.locator("#lease")).to_contain_text("term 1")
        expect(page.locator("#child")).to_contain_text("running")
        expect(page.locator("#restarts")).to_have_text("0")
        # The highlights come from the real /metrics of the conductor and of codexd.
        expect(page.locator("#metrics")).to_be_visible()
        # Two sessions made elsewhere, one page each (?limit=1): the table walks the cursor.
        expect(page.get_by_test_id("session-row")).to_have_count(2)
        session_id = _create_session(page, node.workdir, purpose="worker")
        assert any("cursor=" in url for url in listed), listed
        assert all("order=activity" in url for url in listed), listed

        # A turn from the page; the answer appears in place, without a reload.
        _send(page, prompt)
        output = page.get_by_test_id("turn-output")
        expect(output).to_have_attribute("data-status", "completed")
        expect(output).to_have_text("echo: " + prompt)
        row = page.locator(f"[data-testid=session-row][data-session-id='{session_id}']")
        expect(row.get_by_test_id("session-state")).to_have_text("done")  # a human state
        expect(row).to_contain_text("echo: " + prompt)
        expect(row).to_contain_text("worker")
        # Newest activity first: the session that just ran a turn leads the table.
        expect(page.get_by_test_id("session-row").first).to_have_attribute(
            "data-session-id", session_id)

        # The session's events arrived over the relay, in order, once each.
        expect(page.locator("[data-testid=event-row][data-type='turn.accepted']")) \
            .to_have_count(1)
        expect(page.locator("[data-testid=event-row][data-type='app-server.turn.completed']")) \
            .to_have_count(1)
        expect(page.locator("#stream-status")).to_have_attribute("data-state", "live")
        # codexd counted the turn, and the page shows it (through GET /v1/codex/metrics).
        page.evaluate("refreshMetrics()")
        expect(page.locator("#metrics-facts dt:text-is('Turns') + dd")).to_have_text("1")
        seqs = _page_seqs(page)
        assert seqs == sorted(seqs, reverse=True)  # newest first
        assert sorted(seqs) == _server_seqs(node, session_id)
        _shot(page, "console-desktop.png", DESKTOP)
        _shot(page, "console-phone.png", PHONE)
        # Readable on a phone: nothing wider than the screen, no sideways scrolling.
        _assert_fits(page)
        page.set_viewport_size(DESKTOP)

        # Pause: refused without the token, done with it; the token stays in this tab only.
        page.get_by_test_id("mode-pause").click()
        expect(page.locator("#notice")).to_contain_text("unauthorized")
        assert _mode(node) == "running"
        page.get_by_test_id("token-input").fill(TOKEN)
        page.get_by_test_id("mode-pause").click()
        expect(page.get_by_test_id("mode-value")).to_have_text("paused")
        assert _mode(node) == "paused"
        assert page.evaluate("sessionStorage.getItem('baa.conductor.token')") == TOKEN
        assert page.context.cookies() == []
        assert TOKEN not in page.url
        # While paused the node refuses new turns, and the page says so.
        _send(page, "ECHO: refused")
        expect(page.locator("#notice")).to_contain_text("system_paused")
        page.get_by_test_id("mode-drain").click()
        expect(page.get_by_test_id("mode-value")).to_have_text("draining")
        assert _mode(node) == "draining"
        page.get_by_test_id("mode-resume").click()
        expect(page.get_by_test_id("mode-value")).to_have_text("running")
        assert _mode(node) == "running"
        _send(page, "ECHO: after resume")
        expect(output).to_have_text("echo: ECHO: after resume")

    with trio.fail_after(300):
        async with _node(tmp_path, codex_home) as node:
            for purpose in ("smoke", "duplex"):
                made = await node.conductor.http.post(
                    "/v1/codex/sessions", json={"cwd": str(node.workdir), "purpose": purpose})
                assert made.status_code == 201, made.text
            await _browse(node, flow, DESKTOP, "/console?limit=1")


@needs_chromium
@pytest.mark.real_codex
async def test_console_approvals_accept_in_the_page_and_vanish_when_decided_elsewhere(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    def decide_elsewhere(approval_id: str) -> None:
        async def post() -> httpx.Response:
            answer: httpx.Response = await node.conductor.http.post(
                f"/v1/codex/approvals/{approval_id}",
                json={"decision": "decline", "decidedBy": "someone-else"},
                headers={"Authorization": f"Bearer {TOKEN}"})
            return answer

        answer = trio.from_thread.run(post)
        assert answer.status_code == 200, answer.text

    def flow(page: Page) -> None:
        _create_session(page, node.workdir, policy="untrusted", sandbox="workspace-write",
                        approvals="clients")
        expect(page.locator("#selected-meta")).to_contain_text("policy untrusted")

        # The turn runs a shell command: an approval shows up; accepting it completes the turn.
        _send(page, "make a file")
        rows = page.get_by_test_id("approval-row")
        expect(rows).to_have_count(1)
        expect(rows).to_contain_text("touch accepted.txt")
        expect(page.get_by_test_id("turn-output")).to_have_attribute("data-status",
                                                                     "inProgress")
        # Where a decision waits shows on the session's row and in the node panel too.
        expect(page.get_by_test_id("session-pending")).to_have_text("1 to approve")
        expect(page.locator("#approvals-total")).to_have_text("1")
        _shot(page, "console-approval-phone.png", PHONE)
        _assert_fits(page)
        page.get_by_test_id("approval-accept").click()
        expect(rows).to_have_count(0)
        expect(page.get_by_test_id("session-pending")).to_have_count(0)
        expect(page.locator("#approvals-total")).to_have_text("0")
        output = page.get_by_test_id("turn-output")
        expect(output).to_have_attribute("data-status", "completed")
        expect(output).to_have_text("made it")
        assert (node.workdir / "accepted.txt").exists()

        # Decided by someone else (here: the API): the row disappears from the page too.
        _send(page, "make another")
        expect(rows).to_have_count(1)
        expect(rows).to_contain_text("touch declined.txt")
        approval_id = rows.get_attribute("data-approval-id")
        assert approval_id is not None
        decide_elsewhere(approval_id)
        expect(rows).to_have_count(0)
        expect(output).to_have_text("ok, not made")
        assert not (node.workdir / "declined.txt").exists()

        # Decline in the page: the command does not run, the turn still completes.
        _send(page, "and one more")
        expect(rows).to_contain_text("touch refused.txt")
        page.get_by_test_id("approval-decline").click()
        expect(rows).to_have_count(0)
        expect(output).to_have_text("fine, skipped")
        assert not (node.workdir / "refused.txt").exists()

    with trio.fail_after(300):
        async with _node(tmp_path, codex_home) as node:
            scripted_model.script(
                ExecCommand("touch accepted.txt", then=Plain("made it")),
                ExecCommand("touch declined.txt", then=Plain("ok, not made")),
                ExecCommand("touch refused.txt", then=Plain("fine, skipped")),
            )
            await _browse(node, flow, PHONE)


@needs_chromium
@pytest.mark.real_codex
async def test_console_fits_a_phone_with_a_long_cwd_and_command(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    workdir = _long_workdir(tmp_path)
    made = "made-" + "y" * 60 + ".txt"
    command = f"touch {made}"
    answer = f"made {workdir / made} as asked"  # a long token in the output excerpt too

    def flow(page: Page) -> None:
        session_id = _create_session(page, workdir, policy="untrusted",
                                     sandbox="workspace-write", approvals="clients")
        expect(page.locator("#selected-meta")).to_contain_text(str(workdir))
        row = page.locator(f"[data-testid=session-row][data-session-id='{session_id}']")
        expect(row).to_be_visible()
        _assert_fits(page)

        _send(page, "make a file")
        expect(page.get_by_test_id("approval-row")).to_contain_text(command)
        expect(page.get_by_test_id("session-pending")).to_have_text("1 to approve")
        _assert_fits(page)

        page.get_by_test_id("approval-accept").click()
        expect(page.get_by_test_id("turn-output")).to_have_text(answer)
        expect(row.locator("td.excerpt")).to_contain_text("made /")
        _assert_fits(page)

    with trio.fail_after(300):
        async with _node(tmp_path, codex_home) as node:
            scripted_model.script(ExecCommand(command, then=Plain(answer)))
            await _browse(node, flow, PHONE)
    assert (workdir / made).exists()


@needs_chromium
@pytest.mark.real_codex
async def test_console_resumes_the_event_stream_after_the_relay_is_cut_mid_turn(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    # Slow enough (8 s) that the turn is still streaming when the relay is cut and reconnected.
    deltas = [f"part{i} " for i in range(40)]

    def cut_relays() -> int:
        # What a conductor restart or a dropped proxy does to the page: the relay websocket is
        # closed server-side (1001) while the turn keeps running in codexd.
        async def cut() -> int:
            scopes = list(node.conductor.conductor.relays)
            for scope in scopes:
                scope.cancel(reason="test: relay cut mid-turn")
            return len(scopes)

        cut_count: int = trio.from_thread.run(cut)
        return cut_count

    def flow(page: Page) -> None:
        session_id = _create_session(page, node.workdir)
        status = page.locator("#stream-status")
        expect(status).to_have_attribute("data-state", "live")
        # Every text the agent's message shows, as it changes.
        page.evaluate("""() => {
          window.__agentTexts = [];
          new MutationObserver(() => {
            const agent = document.querySelector("[data-testid=transcript-agent]");
            const text = agent ? agent.textContent.trim() : "";
            if (text && window.__agentTexts.at(-1) !== text) window.__agentTexts.push(text);
          }).observe(document.getElementById("conversation"),
                     {childList: true, subtree: true, characterData: true});
        }""")
        _send(page, "stream slowly")
        trio.from_thread.run(scripted_model.wait_streaming)
        deltas_shown = page.locator(
            "[data-testid=event-row][data-type='app-server.item.agentMessage.delta']")
        expect(deltas_shown).not_to_have_count(0)
        assert cut_relays() == 1
        expect(status).to_have_attribute("data-reconnects", "1")
        expect(status).to_have_attribute("data-state", "live")

        output = page.get_by_test_id("turn-output")
        expect(output).to_have_attribute("data-status", "completed")
        expect(output).to_have_text("".join(deltas))
        expect(page.locator("[data-testid=event-row][data-type='app-server.turn.completed']")) \
            .to_have_count(1)
        # Nothing lost, nothing doubled: exactly the seqs codexd's log has for this session.
        seqs = _page_seqs(page)
        assert len(seqs) == len(set(seqs))
        assert sorted(seqs) == _server_seqs(node, session_id)
        # ... and the end of the turn came through the second connection.
        resumed_after = int(status.get_attribute("data-after") or "0")
        assert 0 < resumed_after < max(seqs)
        assert len(deltas_shown.all()) == len(deltas)
        # The conversation folded each delta once: one turn, its text whole, and every text it
        # showed while streaming (across the cut) a prefix of the answer, never a repeat.
        expect(page.get_by_test_id("transcript-turn")).to_have_count(1)
        whole = "".join(deltas).strip()
        expect(page.get_by_test_id("transcript-agent")).to_have_text(whole)
        streamed: list[str] = page.evaluate("window.__agentTexts")
        assert len(streamed) > 2, streamed
        assert [t for t in streamed if not whole.startswith(t)] == []

    with trio.fail_after(300):
        async with _node(tmp_path, codex_home) as node:
            scripted_model.script(Streamed(deltas, delay=0.2))
            await _browse(node, flow, DESKTOP)


@needs_chromium
@pytest.mark.real_codex
async def test_console_steers_and_interrupts_a_running_turn(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    def flow(page: Page) -> None:
        _create_session(page, node.workdir)
        steer = page.get_by_test_id("turn-steer")
        interrupt = page.get_by_test_id("turn-interrupt")
        expect(steer).to_be_disabled()  # nothing runs yet
        output = page.get_by_test_id("turn-output")

        # Interrupt: the running turn ends as interrupted.
        _send(page, "take your time")
        trio.from_thread.run(scripted_model.wait_streaming)
        expect(output).to_have_attribute("data-status", "inProgress")
        expect(interrupt).to_be_enabled()
        interrupt.click()
        expect(output).to_have_attribute("data-status", "interrupted")
        expect(interrupt).to_be_disabled()
        trio.from_thread.run(scripted_model.wait_idle)

        # Steer: Codex takes the extra input into the running turn (the scripted model answers
        # the follow-up request by echoing the last user message, i.e. the steer text).
        _send(page, "take your time again")
        trio.from_thread.run(scripted_model.wait_streaming)
        expect(steer).to_be_enabled()
        page.get_by_test_id("turn-input").fill("and mention the weather")
        steer.click()
        expect(page.locator("#notice")).to_contain_text("steer sent")
        expect(output).to_have_attribute("data-status", "completed")
        expect(output).to_contain_text("echo: and mention the weather")

    with trio.fail_after(300):
        async with _node(tmp_path, codex_home) as node:
            # Long enough that the turn is still running when the buttons are pressed; the
            # interrupt ends it long before the last delta.
            slow = Streamed([f"slow{i} " for i in range(200)], delay=0.2)
            scripted_model.script(slow, slow)
            await _browse(node, flow, DESKTOP)


@needs_chromium
@pytest.mark.real_codex
async def test_console_asks_for_the_token_when_codexd_has_one_then_carries_on(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Over a codexd with a token, every /v1/codex/* call needs the shared token (issue 20,
    # item 1): reads and the relay too, not only the writes the console used to sign.
    caplog.set_level(logging.DEBUG)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    sockets: list[str] = []

    def flow(page: Page) -> None:
        page.on("websocket", lambda ws: sockets.append(ws.url))
        token_input = page.get_by_test_id("token-input")
        # The sessions list was refused: the page asks for the token.
        expect(page.locator("#notice")).to_contain_text("enter the shared token")
        expect(token_input).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_test_id("session-row")).to_have_count(0)

        # An action taken before the token is entered waits for it, then goes through.
        page.fill("#new-cwd", str(node.workdir))
        page.get_by_test_id("new-session").click()
        expect(page.get_by_test_id("new-session")).to_be_disabled()
        token_input.fill(TOKEN)
        expect(page.get_by_test_id("session-row")).to_have_count(2)
        expect(page.locator("#selected-id")).not_to_have_text(made)
        expect(token_input).not_to_have_attribute("aria-invalid", "true")

        # The relay needs it too: ?token= on the upgrade.
        expect(page.locator("#stream-status")).to_have_attribute("data-state", "live")
        _send(page, "ECHO: with a token")
        output = page.get_by_test_id("turn-output")
        expect(output).to_have_text("echo: ECHO: with a token")
        expect(page.locator("[data-testid=event-row][data-type='app-server.turn.completed']")) \
            .to_have_count(1)
        assert page.context.cookies() == []
        assert TOKEN not in page.url

    with trio.fail_after(300):
        async with _node(tmp_path, codex_home, codexd_token="console-codexd-token") as node:
            made_answer = await node.conductor.http.post(
                "/v1/codex/sessions", json={"cwd": str(node.workdir)}, headers=auth)
            assert made_answer.status_code == 201, made_answer.text
            made = made_answer.json()["data"]["session"]["sessionId"]
            await _browse(node, flow, PHONE)
    assert sockets, "the page opened no relay websocket"
    assert all(f"token={TOKEN}" in url for url in sockets), sockets
    # Neither the shared token nor codexd's ever reaches a log line.
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert TOKEN not in text, record
        assert "console-codexd-token" not in text, record
