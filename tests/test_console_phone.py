"""The console on a phone (issue 25 §2), in Debian's Chromium at phone size: open the pairing
URL ``conductor pair`` prints, see the console signed in, reload, still signed in; revoke the
device with ``conductor devices --revoke``, and the page says so. A notification's deep link
opens the session with its approval, which "Accept for session" decides. The conductor runs in
this process over the fake codexd; the CLI is the real one, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import Page, expect, sync_playwright

from codexd_trio.base.contracts import Approval, now_iso
from tests.capabilities import CHROMIUM
from tests.fake_codexd import FakeCodexd, RunningConductor, open_conductor, open_fake_codexd
from tests.test_console import ARTIFACTS, PHONE, WAIT_MS, _assert_fits, needs_chromium


def _cli(c: RunningConductor, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "conductor_trio", *args, "--local-api", c.url],
                          capture_output=True, text=True, env=env, check=False, timeout=60)


def _phone(c: RunningConductor, fake: FakeCodexd, pair_url: str, seen: dict[str, Any]) -> None:
    """Runs in a worker thread (Playwright's sync API); ``seen`` holds the session and approval
    the deep link opens, and gets the device's id."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"], timeout=60_000)
        try:
            page: Page = browser.new_page(viewport=PHONE)
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(pair_url)
            status = page.get_by_test_id("device-status")
            expect(status).to_have_attribute("data-state", "paired")
            expect(page.get_by_test_id("device-text")).to_contain_text("this device: phone")
            assert "pair=" not in page.url  # the code left the address bar at once
            stored = json.loads(page.evaluate("localStorage.getItem('baa.conductor.device')"))
            seen["device_id"] = stored["id"]
            assert stored["token"].startswith("baa_dev_")
            # Closing the tab or reloading does not sign the phone out.
            page.reload()
            expect(status).to_have_attribute("data-state", "paired")
            _assert_fits(page)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "console-paired-phone.png"), full_page=True)

            # A notification's deep link: the session opens with its approval; Accept for
            # session decides it (the device token is the credential).
            session_id, approval_id = seen["session_id"], seen["approval_id"]
            page.goto(f"{c.url}/console#session={session_id}&approval={approval_id}")
            expect(page.locator("#selected-id")).to_have_text(session_id)
            row = page.locator(f"[data-approval-id='{approval_id}']")
            expect(row).to_contain_text("touch phone.txt")
            expect(page.get_by_test_id("rule-row")).to_have_text(["ls-ok: accept /ls/"])
            expect(page.get_by_test_id("rules-timeout")).to_contain_text("declines after 300 s")
            row.get_by_test_id("approval-accept-session").click()
            expect(row).to_have_count(0)
            assert fake.approvals[approval_id].decision == "acceptForSession"
            assert fake.approvals[approval_id].decidedBy == "console"

            # Revoked from the CLI: the page says so (and forgets the token).
            revoked = _cli(c, "devices", "--revoke", seen["device_id"])
            assert revoked.returncode == 0, revoked.stderr
            assert "revoked" in revoked.stdout
            expect(status).to_have_attribute("data-state", "revoked")
            expect(page.get_by_test_id("device-text")).to_contain_text("revoked")
            assert page.evaluate("localStorage.getItem('baa.conductor.device')") is None
            page.screenshot(path=str(ARTIFACTS / "console-revoked-phone.png"), full_page=True)
            assert errors == [], errors
        finally:
            browser.close()


@needs_chromium
async def test_a_phone_pairs_stays_signed_in_and_learns_it_was_revoked(tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with (open_fake_codexd() as fake, open_conductor(fake.url, tmp_path) as c):
            # `conductor pair`, against this conductor: a URL and a QR code.
            paired = await trio.to_thread.run_sync(_cli, c, "pair", "--name", "phone")
            assert paired.returncode == 0, paired.stderr
            pair_url = next(line.strip() for line in paired.stdout.splitlines()
                            if "/console#pair=" in line)
            assert pair_url.startswith(f"{c.url}/console#pair=")
            assert "█" in paired.stdout or "▀" in paired.stdout  # the QR code, drawn
            made = await c.http.post("/v1/codex/sessions", json={"cwd": "/work"})
            session_id = made.json()["data"]["session"]["sessionId"]
            fake.approvals["approval-phone"] = Approval(
                approvalId="approval-phone", sessionId=session_id, threadId="t",
                turnId="turn-1", itemId="i", kind="commandExecution",
                method="item/commandExecution/requestApproval", createdAt=now_iso(),
                params={"command": "touch phone.txt", "cwd": "/work"})
            fake.rules = [{"name": "ls-ok", "kind": "any", "match": "ls", "cwdPrefix": None,
                           "decision": "accept"}]
            seen: dict[str, Any] = {"session_id": session_id, "approval_id": "approval-phone"}
            await trio.to_thread.run_sync(_phone, c, fake, pair_url, seen)
            listed = await trio.to_thread.run_sync(_cli, c, "devices", "--json")
            devices = json.loads(listed.stdout)["devices"]
            assert [(d["id"], d["name"], d["revoked"]) for d in devices] == [
                (seen["device_id"], "phone", True)]
