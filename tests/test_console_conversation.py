"""The console as the place to work with Codex (issue 24), in Debian's Chromium against a real
node: codexd with the real Codex child, the scripted model playing whatever each prompt asks
(:class:`~codexd_trio.testing.Prompted`: ``SHELL:``, ``PATCH:``, ``SLOW …:``), and the
conductor with a shared token.

One node per test, each test a whole session of use: the desktop one works a conversation
(turns, Markdown and what it must not run, a command behind an approval, a patch's diff, the
queue, a relay cut); the phone one a long cwd, a long command and an unbroken token, notices
that cover nothing, notifications, the keyboard and Codex's own threads.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Page, expect

from codexd_trio.testing import Plain, Prompted, ScriptedModel, codex_child_env
from tests.fake_codexd import open_conductor, open_fake_codexd
from tests.test_console import (
    ARTIFACTS,
    DESKTOP,
    PHONE,
    _assert_fits,
    _browse,
    _create_session,
    _in_browser,
    _long_workdir,
    _node,
    needs_chromium,
)

DOCS = Path(__file__).parent.parent / "docs" / "console"


def _shot(page: Page, name: str) -> None:
    """A screenshot into tests/artifacts/ (docs/console/ holds copies made by hand)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the node panel is sticky
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _turn(page: Page, index: int) -> Any:
    return page.get_by_test_id("transcript-turn").nth(index)


def _send_with_keys(page: Page, text: str) -> None:
    box = page.get_by_test_id("turn-input")
    box.fill(text)
    box.press("Control+Enter")
    expect(box).to_have_value("")


def _notice_covers_nothing(page: Page) -> list[str]:
    """Every visible control in the viewport is what the browser finds at its centre."""
    covered: list[str] = page.evaluate("""() => {
      const out = [];
      const sel = "button, input, textarea, select, summary, a, [data-testid=session-row]";
      for (const c of document.querySelectorAll(sel)) {
        const r = c.getBoundingClientRect();
        if (!r.width || !r.height || c.closest("[hidden]")) continue;
        const x = r.left + r.width / 2, y = r.top + r.height / 2;
        if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) continue;
        // Scrolled out of sight inside a scrolling box (the conversation): not on screen.
        let clipped = false;
        for (let a = c.parentElement; a && a !== document.body; a = a.parentElement) {
          if (getComputedStyle(a).overflowY === "visible") continue;
          const b = a.getBoundingClientRect();
          if (x < b.left || x > b.right || y < b.top || y > b.bottom) clipped = true;
        }
        if (clipped) continue;
        const hit = document.elementFromPoint(x, y);
        if (hit && !c.contains(hit) && !hit.contains(c)) {
          out.push((c.dataset.testid || c.id || c.tagName) + " under "
                   + (hit.id || hit.className || hit.tagName));
        }
      }
      return out;
    }""")
    return covered


# Inert: none of these may run or survive as markup in the agent's rendered message.
XSS = ('ECHO: look <img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> '
       '[click](javascript:window.__xss=3) <a href="#" onclick="window.__xss=4">x</a>')


@needs_chromium
@pytest.mark.real_codex
async def test_console_conversation_on_a_desktop(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    def flow(page: Page) -> None:
        session_id = _create_session(page, node.workdir, policy="untrusted",
                                     sandbox="workspace-write", approvals="clients")
        turns = page.get_by_test_id("transcript-turn")
        expect(page.locator("#notice")).to_contain_text("created")
        assert _notice_covers_nothing(page) == []

        # Two turns: both prompts and both answers, in order; the second sent with Ctrl+Enter
        # and rendered as Markdown.
        _send_with_keys(page, "ECHO: first question")
        expect(turns).to_have_count(1)
        expect(_turn(page, 0)).to_have_attribute("data-status", "completed")
        _send_with_keys(page, "second **bold** question")
        expect(turns).to_have_count(2)
        expect(_turn(page, 1)).to_have_attribute("data-status", "completed")
        expect(page.get_by_test_id("transcript-user")).to_have_text(
            ["ECHO: first question", "second **bold** question"])
        agents = page.get_by_test_id("transcript-agent")
        expect(agents).to_have_text(["echo: ECHO: first question",
                                     "echo: second bold question"])
        expect(agents.nth(1).locator("strong")).to_have_text("bold")
        # The title is the first prompt (codexd's default), in the table and the header.
        row = page.locator(f"[data-testid=session-row][data-session-id='{session_id}']")
        expect(row.get_by_test_id("session-title")).to_have_text("ECHO: first question")
        expect(page.get_by_test_id("selected-title")).to_have_text("ECHO: first question")
        expect(row.get_by_test_id("session-state")).to_have_text("done")
        expect(row.locator("td.cwd .folder")).to_have_text(node.workdir.name)

        # Agent text is untrusted: rendered, sanitized, inert.
        _send_with_keys(page, XSS)
        expect(turns).to_have_count(3)
        expect(_turn(page, 2)).to_have_attribute("data-status", "completed")
        rendered = agents.nth(2)
        expect(rendered).to_contain_text("echo: ECHO: look")
        assert rendered.locator("script").count() == 0
        for attrs in rendered.locator("*").evaluate_all(
                "nodes => nodes.map(n => n.getAttributeNames())"):
            assert not [a for a in attrs if a.startswith("on")], attrs
        hrefs = rendered.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        assert not [h for h in hrefs if h and h.lower().startswith("javascript")], hrefs
        rendered.locator("a", has_text="click").click()  # would run javascript: if it were kept
        assert page.evaluate("window.__xss") is None

        # A command behind an approval: inline where it was asked, counted in the title and on
        # the session's row ("waiting for you", first); Accept runs it, its output shows.
        _send_with_keys(page, "SHELL: echo console-output-marker")
        inline = page.get_by_test_id("approval-inline")
        expect(inline).to_have_count(1)
        expect(inline).to_have_attribute("data-status", "pending")
        expect(inline).to_contain_text("echo console-output-marker")
        expect(page).to_have_title("(1) conductor console")
        expect(row.get_by_test_id("session-state")).to_have_text("waiting for you")
        expect(page.get_by_test_id("session-row").first).to_have_attribute(
            "data-session-id", session_id)
        _shot(page, "conversation-approval-desktop.png")
        inline.get_by_test_id("approval-inline-accept").click()
        expect(inline).to_have_attribute("data-status", "resolved")
        expect(inline).to_contain_text("accept by console")
        expect(page).to_have_title("conductor console")
        block = _turn(page, 3).get_by_test_id("command-block")
        expect(block).to_have_count(1)
        expect(block).to_have_attribute("data-exit-code", "0")
        expect(block.get_by_test_id("command-output")).to_contain_text("console-output-marker")
        expect(block.get_by_test_id("command-output")).to_be_visible()
        expect(_turn(page, 3)).to_have_attribute("data-status", "completed")
        expect(agents.nth(3)).to_have_text("ran: echo console-output-marker")
        expect(_turn(page, 3).get_by_test_id("turn-usage")).to_contain_text("tokens")

        # A patch: the file's name as a heading, added lines coloured.
        _send_with_keys(page, "PATCH: *** Add File: notes.txt\n+hello from the patch\n+second")
        expect(turns).to_have_count(5)
        patch_turn = _turn(page, 4)
        asked = patch_turn.get_by_test_id("approval-inline")
        expect(asked.or_(patch_turn.get_by_test_id("diff-file")).first).to_be_visible()
        if asked.count():
            asked.get_by_test_id("approval-inline-accept").click()
        expect(patch_turn).to_have_attribute("data-status", "completed")
        diff = patch_turn.get_by_test_id("diff-file").last
        expect(diff.locator("h4")).to_contain_text("notes.txt")
        added = diff.get_by_test_id("diff-add")
        expect(added).to_have_text(["+hello from the patch", "+second"])
        colour = added.first.evaluate("n => getComputedStyle(n).color")
        background = added.first.evaluate("n => getComputedStyle(n).backgroundColor")
        assert colour == "rgb(26, 127, 55)", colour
        assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background
        assert (node.workdir / "notes.txt").read_text() == "hello from the patch\nsecond\n"
        _shot(page, "conversation-desktop.png")

        # Typing while Codex works queues the message; removing one takes it out; the other
        # runs after the turn.
        _send_with_keys(page, "SLOW 300 20: a slow answer that takes a while")
        expect(turns).to_have_count(6)
        expect(page.get_by_test_id("turn-submit")).to_have_text("Queue turn")
        _send_with_keys(page, "ECHO: queued one")
        _send_with_keys(page, "ECHO: queued two")
        items = page.get_by_test_id("queue-item")
        expect(items).to_have_count(2)
        expect(items.nth(0)).to_contain_text("ECHO: queued one")
        expect(items.nth(1)).to_contain_text("ECHO: queued two")
        items.nth(1).get_by_test_id("queue-up").click()  # "two" goes first
        expect(items.nth(0)).to_contain_text("ECHO: queued two")
        items.nth(1).get_by_test_id("queue-remove").click()  # "one" is taken out
        expect(items).to_have_count(1)
        expect(_turn(page, 5)).to_have_attribute("data-status", "completed")
        expect(turns).to_have_count(7)
        expect(_turn(page, 6).get_by_test_id("transcript-user")).to_have_text("ECHO: queued two")
        expect(_turn(page, 6)).to_have_attribute("data-status", "completed")
        expect(items).to_have_count(0)
        expect(page.locator("#queue-box")).to_be_hidden()
        texts = page.get_by_test_id("transcript-user").all_text_contents()
        assert not [t for t in texts if "queued one" in t], texts

        # Raw events stay one tab away.
        page.get_by_test_id("tab-events").click()
        expect(page.locator("[data-testid=event-row][data-type='turn.dequeued']")) \
            .to_have_count(1)
        page.get_by_test_id("tab-conversation").click()

        # Read back from the transcript (a new load, three turns a page): the same
        # conversation, paged back to the first turn.
        page.goto(page.url.split("?")[0] + "?turns=3")
        page.evaluate("window.__sameLoad = true")
        row.click()
        expect(turns).to_have_count(3)
        older = page.get_by_test_id("turns-older")
        older.click()
        expect(turns).to_have_count(6)
        older.click()
        expect(turns).to_have_count(7)
        expect(older).to_be_hidden()
        expect(page.get_by_test_id("transcript-user").first).to_have_text("ECHO: first question")
        expect(page.get_by_test_id("command-output").first).to_contain_text(
            "console-output-marker")
        expect(page.get_by_test_id("diff-add").first).to_have_text("+hello from the patch")
        expect(page.get_by_test_id("approval-inline").first).to_contain_text("accept")
        _assert_fits(page)

    with trio.fail_after(400):
        async with _node(tmp_path, codex_home) as node:
            scripted_model.default = Prompted()
            await _browse(node, flow, DESKTOP)


# A fake Notification (headless Chromium has no one to ask): records what the page asks for
# and shows.
FAKE_NOTIFICATIONS = """
window.__asked = 0; window.__shown = [];
class FakeNotification {
  constructor(title, options) { window.__shown.push({title, body: (options || {}).body}); }
  static requestPermission() {
    window.__asked += 1; FakeNotification.permission = "granted";
    return Promise.resolve("granted");
  }
}
FakeNotification.permission = "default";
window.Notification = FakeNotification;
"""


async def _codex_exec(codex_home: Path, scripted_model: ScriptedModel, binary: Path,
                      work: Path) -> None:
    """A thread started outside codexd, as a person would with ``codex exec``."""
    work.mkdir(parents=True, exist_ok=True)
    scripted_model.script(Plain("exec says PAPAYA"))
    ran = await trio.run_process(
        [str(binary), "exec", "--skip-git-repo-check", "-C", str(work),
         "remember the word PAPAYA"],
        env=codex_child_env(codex_home, binary), stdin=subprocess.DEVNULL,
        capture_stdout=True, capture_stderr=True, check=False)
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]


@needs_chromium
@pytest.mark.real_codex
async def test_console_on_a_phone_long_strings_notices_keyboard_and_threads(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path, codex_binary: Path
) -> None:
    workdir = _long_workdir(tmp_path)
    token = "t" * 220  # one unbroken word, longer than any screen
    command = f"echo {token}"

    def flow(page: Page) -> None:
        # Notifications: offered from a button, never asked on load.
        enable = page.get_by_test_id("notify-enable")
        expect(enable).to_be_visible()
        assert page.evaluate("window.__asked") == 0
        enable.click()
        expect(enable).to_be_hidden()
        assert page.evaluate("window.__asked") == 1

        session_id = _create_session(page, workdir, policy="untrusted",
                                     sandbox="workspace-write", approvals="clients")
        page.get_by_test_id("turn-input").fill(f"SHELL: {command}")
        page.get_by_test_id("turn-submit").click()
        inline = page.get_by_test_id("approval-inline")
        expect(inline).to_have_attribute("data-status", "pending")
        expect(page).to_have_title("(1) conductor console")
        page.wait_for_function("window.__shown.length === 1")
        shown = page.evaluate("window.__shown[0]")
        assert shown["title"] == "Codex is waiting for you", shown
        assert "echo ttt" in shown["body"], shown
        _assert_fits(page)
        # A notice (Steer with an empty box says what to do) covers no control.
        page.get_by_test_id("turn-steer").evaluate("b => b.disabled = false")
        page.get_by_test_id("turn-steer").click()
        expect(page.locator("#notice")).to_be_visible()
        for y in (0, 400, 800, 1600, 3200):
            page.evaluate(f"window.scrollTo(0, {y})")
            assert _notice_covers_nothing(page) == [], y
        page.keyboard.press("Escape")
        expect(page.locator("#notice")).to_be_hidden()
        _shot(page, "conversation-approval-phone.png")

        inline.get_by_test_id("approval-inline-accept").click()
        output = page.get_by_test_id("command-output")
        expect(output).to_contain_text(token)
        expect(page.get_by_test_id("transcript-turn").first).to_have_attribute(
            "data-status", "completed")
        _assert_fits(page)
        _shot(page, "conversation-phone.png")

        # Codex's own threads: the one `codex exec` started, found, read, adopted.
        page.get_by_test_id("threads-open").click()
        page.get_by_test_id("threads-search").fill("PAPAYA")
        rows = page.get_by_test_id("thread-row")
        expect(rows).to_have_count(1)
        expect(rows).to_contain_text("remember the word PAPAYA")
        rows.get_by_test_id("thread-open").click()
        expect(page.get_by_test_id("thread-turns").get_by_test_id("transcript-agent")) \
            .to_have_text("exec says PAPAYA")
        _assert_fits(page)
        _shot(page, "threads-phone.png")
        page.keyboard.press("Escape")  # the read-only thread closes first
        expect(page.get_by_test_id("thread-turns")).to_be_hidden()
        rows.get_by_test_id("thread-adopt").click()
        expect(page.locator("#threads")).to_be_hidden()
        expect(page.locator("#selected-id")).not_to_have_text(session_id)
        adopted = page.locator("#selected-id").text_content()
        talk = page.get_by_test_id("conversation")
        expect(talk.get_by_test_id("transcript-user")).to_have_text("remember the word PAPAYA")
        expect(talk.get_by_test_id("transcript-agent")).to_have_text("exec says PAPAYA")
        expect(page.get_by_test_id("thread-turns").locator("*")).to_have_count(0)
        expect(page.get_by_test_id("selected-title")).to_contain_text("PAPAYA")
        # Fork it: a new session with the same history.
        page.get_by_test_id("session-fork").click()
        expect(page.locator("#selected-id")).not_to_have_text(adopted or "")
        forked = page.locator("#selected-id").text_content()
        expect(talk.get_by_test_id("transcript-agent")).to_have_text("exec says PAPAYA")
        page.locator(f"[data-session-id='{adopted}']").click()
        expect(page.locator("#selected-id")).to_have_text(adopted or "")

        # The keyboard: j and k move between sessions (not while typing in a field).
        page.locator("body").click(position={"x": 5, "y": 5})
        sessions = page.get_by_test_id("session-row")
        expect(sessions).to_have_count(3)
        order = [sessions.nth(i).get_attribute("data-session-id") for i in range(3)]
        assert forked in order
        at = order.index(adopted)
        step, back = ("j", "k") if at < 2 else ("k", "j")
        page.keyboard.press(step)
        expect(page.locator("#selected-id")).to_have_text(order[at + (1 if at < 2 else -1)]
                                                          or "")
        page.keyboard.press(back)
        expect(page.locator("#selected-id")).to_have_text(adopted or "")
        page.get_by_test_id("turn-input").fill("j")
        page.get_by_test_id("turn-input").press("j")
        expect(page.locator("#selected-id")).to_have_text(adopted or "")

        # Rename: the title is the person's to choose.
        page.get_by_test_id("title-edit").click()
        page.get_by_test_id("title-input").fill("the papaya thread")
        page.get_by_test_id("title-save").click()
        expect(page.get_by_test_id("selected-title")).to_have_text("the papaya thread")
        expect(page.locator(f"[data-session-id='{adopted}']").get_by_test_id("session-title")) \
            .to_have_text("the papaya thread")
        _assert_fits(page)

    with trio.fail_after(400):
        await _codex_exec(codex_home, scripted_model, codex_binary, tmp_path / "exec-work")
        async with _node(tmp_path, codex_home) as node:
            scripted_model.default = Prompted()
            await _browse(node, flow, PHONE, init_script=FAKE_NOTIFICATIONS)


# What the relay carries while a turn runs, in Codex's own shapes (docs/codex-app-server notes):
# the fold must show a command's output as it streams, an agent message as its deltas arrive,
# and an added file (Codex sends its raw content) as a unified diff. Codex streams command
# output only sometimes (short commands: in some runs, not others), so this is fed by hand.
FOLD_JS = r"""async () => {
  const {Conversation} = await import("/console/conversation.js");
  const box = document.createElement("div");
  box.className = "conversation";
  document.getElementById("selected").hidden = false;
  document.getElementById("selected").append(box);
  const c = new Conversation(box, {decide() {}});
  let seq = 0;
  const ev = (type, detail) => c.apply({seq: ++seq, type, turnId: "t1", sessionId: "s",
                                        detail});
  const look = () => ({
    status: box.querySelector("[data-testid=command-block]").dataset.status,
    output: box.querySelector("[data-testid=command-output]").textContent,
    agent: (box.querySelector("[data-testid=transcript-agent]") || {}).textContent || "",
  });
  const cmd = {type: "commandExecution", id: "call-1", command: "/bin/bash -lc 'make'",
               cwd: "/w", status: "inProgress", aggregatedOutput: null};
  ev("turn.accepted", {input: [{type: "text", text: "build it"}]});
  ev("app-server.item.started", {item: cmd});
  ev("app-server.item.commandExecution.outputDelta", {itemId: "call-1", delta: "step 1\n"});
  const first = look();
  ev("app-server.item.commandExecution.outputDelta", {itemId: "call-1", delta: "step 2\n"});
  const second = look();
  ev("app-server.item.completed", {item: {...cmd, status: "completed", exitCode: 2,
                                          durationMs: 1500,
                                          aggregatedOutput: "step 1\nstep 2\n"}});
  const done = look();
  ev("app-server.item.started", {item: {type: "fileChange", id: "call-2", status: "inProgress",
    changes: [{path: "/w/new.txt", kind: {type: "add"}, diff: "one\ntwo\n"}]}});
  ev("app-server.item.completed", {item: {type: "fileChange", id: "call-2",
    status: "completed",
    changes: [{path: "/w/new.txt", kind: {type: "add"}, diff: "one\ntwo\n"},
              {path: "/w/old.txt", kind: {type: "update", move_path: null},
               diff: "@@ -1 +1 @@\n-before\n+after\n"}]}});
  for (const d of ["It ", "is **", "built**."]) {
    ev("app-server.item.agentMessage.delta", {itemId: "msg-1", delta: d});
  }
  await new Promise((r) => { const t = () => look().agent ? r() : setTimeout(t, 10); t(); });
  const streamed = look().agent;
  ev("app-server.item.completed", {item: {type: "agentMessage", id: "msg-1",
                                          text: "It is **built**."}});
  ev("app-server.turn.completed", {turn: {id: "t1", status: "completed"}});
  const files = [...box.querySelectorAll("[data-testid=diff-file]")].map((f) => ({
    heading: f.querySelector("h4").textContent,
    add: [...f.querySelectorAll("[data-testid=diff-add]")].map((n) => n.textContent),
    del: [...f.querySelectorAll("[data-testid=diff-del]")].map((n) => n.textContent),
    lines: [...f.querySelectorAll(".diff-body span")].map((n) => n.textContent),
  }));
  const meta = box.querySelector(".cmd-meta").textContent;
  const turn = box.querySelector("[data-testid=transcript-turn]").dataset.status;
  const bold = box.querySelector("[data-testid=transcript-agent] strong").textContent;
  return {first, second, done, files, meta, turn, streamed, bold};
}"""


@needs_chromium
async def test_console_folds_live_output_deltas_and_codex_diffs(tmp_path: Path) -> None:
    def flow(page: Page) -> dict[str, Any]:
        expect(page.get_by_test_id("mode-value")).to_have_text("running")
        folded: dict[str, Any] = page.evaluate(FOLD_JS)
        return folded

    with trio.fail_after(120):
        async with open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c:
            got = await trio.to_thread.run_sync(_in_browser, c.url, flow, DESKTOP)
    assert got["first"] == {"status": "inProgress", "output": "step 1\n", "agent": ""}
    assert got["second"]["output"] == "step 1\nstep 2\n"
    assert got["done"]["status"] == "completed"
    assert got["done"]["output"] == "step 1\nstep 2\n"
    assert got["meta"] == "in /w · exit 2 · 1.5 s"
    assert got["streamed"].strip() == "It is built."  # Markdown while it streams
    assert got["bold"] == "built"
    assert got["turn"] == "completed"
    added, updated = got["files"]
    assert added["heading"] == "/w/new.txt add"
    assert added["lines"] == ["--- /dev/null", "+++ b/w/new.txt", "@@ -0,0 +1,2 @@", "+one",
                              "+two"]
    assert added["add"] == ["+one", "+two"]
    assert updated["lines"] == ["--- a/w/old.txt", "+++ b/w/old.txt", "@@ -1 +1 @@",
                                "-before", "+after"]
    assert (updated["add"], updated["del"]) == (["+after"], ["-before"])
