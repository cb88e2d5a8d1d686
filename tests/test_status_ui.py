"""The status page in a real headless browser: its script fills in the live status."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from contextlib import suppress
from pathlib import Path

import trio

from tests.capabilities import CHROMIUM, needs_chromium
from tests.fake_codexd import open_conductor, open_fake_codexd

ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = needs_chromium()


async def _chromium(profile: Path, *args: str) -> str:
    assert CHROMIUM is not None
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--window-size=390,844",
        "--virtual-time-budget=5000", *args,
    ]
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert process.stdout is not None
    chunks: list[bytes | bytearray] = []
    try:
        with trio.fail_after(90):
            while chunk := await process.stdout.receive_some(65536):
                chunks.append(chunk)
            await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            await process.stdout.aclose()
    return b"".join(chunks).decode(errors="replace")


async def test_status_page_renders_live_status_on_a_phone(tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with open_fake_codexd(auto_complete=False) as fake, \
                open_conductor(fake.url, tmp_path / "state") as c:
            sid = (await c.http.post("/v1/codex/sessions", json={})).json()["data"]["session"][
                "sessionId"]
            await c.http.post("/v1/codex/turn", json={"sessionId": sid, "input": "busy"})
            await c.http.post("/v1/system/drain", json={"reason": "deploy"})
            page = f"{c.url}/v1/status/ui"

            dom = await _chromium(tmp_path / "profile-dom", "--dump-dom", page)
            # Filled in by the page's own fetch of /v1/status, not present in the served HTML.
            assert '<b id="node-id">test-node</b>' in dom
            assert "draining — deploy" in dom
            assert ">leader<" in dom
            assert ">reachable<" in dom
            assert sid in dom
            # Metrics endpoints: the conductor's answers; the fake codexd has no /metrics.
            assert ">codexd failing<" in dom
            assert re.search(r"<li>conductor: ok, \d+ metric families</li>", dom)
            assert "<li>codexd: failing (HTTP 404)</li>" in dom
            assert re.search(r'<div id="error"[^>]*></div>', dom), "the page shows an error"

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "status-ui.png"
            shot.unlink(missing_ok=True)
            await _chromium(tmp_path / "profile-shot", f"--screenshot={shot}", page)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
