"""The console's fleet view (issue 28, ``/console/fleet.js``) in a real browser against a real
node: without etcd the fleet is this node alone, through the same routes and code as a fleet.

The view lists the node with its health, creates a session by placement (and names the node),
lists every session and every pending approval with its node, and decides one through the
fleet's route. Waiting is Playwright's ``expect``, never a sleep.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from playwright.sync_api import Page, expect

from codexd_trio.testing import ExecCommand, Plain, ScriptedModel
from tests.test_console import (
    ARTIFACTS,
    DESKTOP,
    TOKEN,
    _assert_fits,
    _browse,
    _node,
    needs_chromium,
)

pytestmark = [needs_chromium, pytest.mark.real_codex]


async def test_the_fleet_view_places_lists_and_decides(
    tmp_path: Path, scripted_model: ScriptedModel, codex_home: Path
) -> None:
    async with _node(tmp_path, codex_home) as node:
        http = node.conductor.http
        auth = {"Authorization": f"Bearer {TOKEN}"}
        portal = trio.lowlevel.current_trio_token()

        async def ask_for_approval() -> str:
            made = await http.post("/v1/fleet/sessions", headers=auth, json={
                "cwd": str(node.workdir), "approvalPolicy": "untrusted",
                "sandbox": "workspace-write", "approvals": "clients"})
            assert made.status_code == 201, made.text
            session_id: str = made.json()["data"]["session"]["sessionId"]
            scripted_model.script(ExecCommand("touch fleet-view.txt", then=Plain("made")))
            turn = await http.post(f"/v1/fleet/sessions/{session_id}/turn", headers=auth,
                                   json={"input": "make a file"})
            assert turn.status_code == 202, turn.text
            return session_id

        def flow(page: Page) -> str:
            fleet = page.get_by_test_id("fleet")
            expect(fleet).to_be_visible()
            # The fleet needs a credential, reads included: the view says so, then reads.
            expect(page.get_by_test_id("fleet-error")).to_contain_text("shared token")
            page.get_by_test_id("token-input").fill(TOKEN)
            page.get_by_test_id("token-input").press("Enter")
            row = page.locator("[data-testid=fleet-node-row][data-node='test-node']")
            expect(row).to_have_attribute("data-state", "ok")
            expect(row).to_contain_text("running")
            expect(page.get_by_test_id("fleet-summary")).to_have_text("1 node")

            # Placement: no node named, no label: the least busy healthy node (this one).
            page.fill("#fleet-cwd", str(node.workdir))
            page.get_by_test_id("fleet-new").click()
            placed = page.get_by_test_id("fleet-placed")
            expect(placed).to_have_attribute("data-node", "test-node")
            expect(placed).to_contain_text("placed on test-node")
            session_id = placed.text_content().rsplit(": ", 1)[-1]  # type: ignore[union-attr]
            expect(page.locator(f"[data-testid=fleet-session-row][data-session='{session_id}']"
                                )).to_have_attribute("data-node", "test-node")
            # A label no node has: nothing fits, and the view says why.
            page.fill("#fleet-labels", "gpu")
            page.get_by_test_id("fleet-new").click()
            expect(placed).to_contain_text("test-node: labels")
            page.fill("#fleet-labels", "")

            # A pending approval of the node, listed with its node and accepted from the view.
            asker = trio.from_thread.run(ask_for_approval, trio_token=portal)
            item = page.locator("[data-testid=fleet-approval][data-node='test-node']")
            expect(item).to_have_count(1)
            expect(item).to_contain_text("touch fleet-view.txt")
            _assert_fits(page)  # on a phone too: nothing of the view sticks out sideways
            page.set_viewport_size(DESKTOP)
            ARTIFACTS.mkdir(exist_ok=True)
            page.get_by_test_id("fleet").screenshot(path=str(ARTIFACTS / "console-fleet.png"))
            item.get_by_test_id("fleet-approval-accept").click()
            expect(page.get_by_test_id("fleet-approval")).to_have_count(0)
            return asker

        with trio.fail_after(300):
            asker = await _browse(node, flow, DESKTOP)
            with trio.fail_after(60):
                while True:  # the turn runs on in codexd after the decision: bounded polling
                    session = (await http.get(f"/v1/fleet/sessions/{asker}", headers=auth)
                               ).json()["data"]["session"]
                    if session["currentTurnId"] is None:
                        break
                    await trio.sleep(0.05)
            assert session["lastTurnStatus"] == "completed"
            assert (node.workdir / "fleet-view.txt").exists()
            approvals = (await http.get("/v1/fleet/approvals", headers=auth)).json()["data"]
            assert [(a["decidedBy"], a["node"]) for a in approvals["approvals"]] == [
                ("console (fleet)", "test-node")]
