"""Schemathesis against the live daemons, from their own ``/openapi.json``: codexd (real Codex
child, scripted model), the conductor in front of it, and the status-api in front of that.

Checks: no 5xx, status codes and content types the document lists, bodies that match its
schemas. Schemathesis runs as a subprocess over HTTP: its in-process loaders use asyncio, and
the servers here run under Trio. Bounded (few examples, no shrinking) to stay well under a
minute; what it finds is fixed in the code, never excluded here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from codexd_trio.testing.daemon import running_codexd
from conductor_trio.config import StatusApiConfig
from conductor_trio.status_api.service import StatusApi
from tests.fake_codexd import open_conductor

pytestmark = pytest.mark.real_codex

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance," \
         "response_schema_conformance"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


async def _schemathesis(base_url: str, workdir: Path, *extra: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        SCHEMATHESIS, "run", f"{base_url}/openapi.json",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "10",
        "--seed", "14",
        "--no-shrink",
        "--generation-database", "none",
        "--request-timeout", "20",
        "--no-color",
        "--warnings", "off",
        *extra,
    ]
    with trio.fail_after(150):
        done = await trio.run_process(argv, cwd=workdir, capture_stdout=True,
                                      capture_stderr=True, check=False)
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, output[-12000:]


async def test_schemathesis_finds_nothing_on_live_daemons(
    tmp_path: Path, codex_home: Path
) -> None:
    async with running_codexd(tmp_path / "codexd", codex_home) as codexd:
        await _schemathesis(codexd.url, tmp_path / "st-codexd")
        async with open_conductor(codexd.url, tmp_path / "conductor") as c:
            await _schemathesis(c.url, tmp_path / "st-conductor")
            api = StatusApi(StatusApiConfig(local_api="http://127.0.0.1:0",
                                            conductor_base=c.url))
            async with trio.open_nursery() as nursery:
                url = await nursery.start(api.serve)
                await _schemathesis(url, tmp_path / "st-status-api")
                api.begin_stop()
