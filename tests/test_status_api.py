"""The status-api: read-only views of the conductor, and what it says when the conductor is down."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import trio

from conductor_trio.config import StatusApiConfig
from conductor_trio.status_api.service import StatusApi
from tests.fake_codexd import open_conductor, open_fake_codexd, spawn_daemon, terminate


async def test_status_api_reads_the_conductor_and_survives_its_absence(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_fake_codexd() as fake, trio.open_nursery() as nursery, \
                AsyncExitStack() as conductor_stack:
            c = await conductor_stack.enter_async_context(open_conductor(fake.url, tmp_path))
            api = StatusApi(StatusApiConfig(local_api="http://127.0.0.1:0",
                                            conductor_base=c.url))
            url = await nursery.start(api.serve)
            try:
                async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                    snap = (await http.get("/v1/status")).json()["data"]
                    assert snap["source"] == "conductor"
                    assert snap["node"]["node_id"] == "test-node"
                    assert snap["role"] == "leader"
                    assert snap["mode"]["mode"] == "running"
                    assert snap["codexd"]["reachable"] is True
                    assert snap["codexd"]["child"]["status"] == "running"
                    assert snap["status_api"]["conductor_base"] == c.url

                    assert (await http.get("/healthz")).json()["data"]["status"] == "ok"
                    paths = [r["path"] for r in (await http.get("/describe")).json()["data"][
                        "routes"]]
                    assert paths == ["/healthz", "/describe", "/openapi.json", "/metrics",
                                     "/v1/status", "/v1/status/ui", "/"]
                    for page in ("/", "/v1/status/ui"):
                        html = await http.get(page)
                        assert html.headers["content-type"].startswith("text/html")
                        assert 'fetch("/v1/status"' in html.text
                        # The console is the conductor's: linked where it is.
                        assert f'href="{c.url}/console"' in html.text
                    # Read-only: writes are not routes here.
                    refused = await http.post("/v1/status", json={})
                    assert refused.status_code == 405
                    assert refused.json()["error"]["code"] == "method_not_allowed"
                    missing = await http.post("/v1/system/pause", json={})
                    assert missing.json()["error"]["code"] == "not_found"

                    # The conductor goes away: the snapshot says so instead of failing.
                    await conductor_stack.aclose()
                    down = await http.get("/v1/status")
                    assert down.status_code == 200
                    snap = down.json()["data"]
                    assert snap["source"] == "unreachable"
                    assert snap["conductor"]["base_url"] == c.url
                    assert snap["conductor"]["error"]
            finally:
                api.begin_stop()


async def test_status_api_process_ready_line_and_sigterm() -> None:
    with trio.fail_after(60):
        argv = [sys.executable, "-m", "conductor_trio.status_api", "start",
                "--local-api", "http://127.0.0.1:0", "--conductor-base", "http://127.0.0.1:9"]
        async with spawn_daemon(argv) as daemon:
            assert daemon.ready["service"] == "status-api"
            async with httpx.AsyncClient(base_url=daemon.url, timeout=10) as http:
                snap = (await http.get("/v1/status")).json()["data"]
            assert snap["source"] == "unreachable"
            assert await terminate(daemon) == 0
