"""The conductor's and the status-api's ``/openapi.json`` describe their answers (CONTRACT.md:
"generated from the msgspec contracts … with its request and response schemas"), and the live
answers match those schemas: with the file lease and with a real etcd lease (leader and
standby), with codexd reachable and not."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]  # no stubs; schemathesis brings it
import msgspec
import pytest
import trio

from conductor_trio.config import StatusApiConfig
from conductor_trio.contracts import lease_view
from conductor_trio.lease.file import LeaseKeeper, MemoryLeaseStore
from conductor_trio.status_api.service import StatusApi
from conductor_trio.web.api_doc import conductor_openapi, status_api_openapi
from conductor_trio.web.app import ModeChange
from tests.etcd_fixture import open_etcd, require_etcd
from tests.fake_codexd import open_conductor, open_fake_codexd, spawn_daemon

GUARD = 120

CONDUCTOR_JSON = [
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/describe"), ("get", "/v1/runtime"),
    ("get", "/v1/codex"), ("get", "/v1/system/state"), ("post", "/v1/system/pause"),
    ("post", "/v1/system/resume"), ("post", "/v1/system/drain"), ("get", "/v1/status"),
]
STATUS_API_JSON = [("get", "/healthz"), ("get", "/describe"), ("get", "/v1/status")]


def _data_schema(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    success = document["paths"][path][method]["responses"]["200"]
    schema: dict[str, Any] = success["content"]["application/json"]["schema"]
    return schema


def _check(document: dict[str, Any], method: str, path: str, answer: httpx.Response) -> None:
    """``answer`` is valid against the document's schema for its status (with components)."""
    responses = document["paths"][path][method]["responses"]
    schema = responses[str(answer.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(answer.json(), {**schema, "components": document["components"]})


@pytest.mark.parametrize(
    ("document", "ops"),
    [
        (conductor_openapi(ModeChange, exposed=False), CONDUCTOR_JSON),
        (status_api_openapi(), STATUS_API_JSON),
    ],
    ids=["conductor", "status-api"],
)
def test_every_json_answer_has_a_schema_with_its_fields(
    document: dict[str, Any], ops: list[tuple[str, str]]
) -> None:
    components = document["components"]["schemas"]
    for method, path in ops:
        data = _data_schema(document, method, path)["properties"]["data"]
        # An open {"type": "object"} says nothing: the answer must be a named component (or a
        # union of them) whose properties are the answer's fields.
        refs = [data["$ref"]] if "$ref" in data else [
            branch["$ref"] for branch in data.get("anyOf", [])]
        assert refs, (path, data)
        for ref in refs:
            component = components[ref.rsplit("/", 1)[1]]
            assert component["properties"], (path, component)
            assert component["required"], (path, component)


def test_the_runtime_keeps_both_spellings_of_its_start() -> None:
    runtime = conductor_openapi(ModeChange, exposed=False)["components"]["schemas"]["Runtime"]
    assert {"started_at", "startedAt"} <= set(runtime["required"])


async def test_a_file_lease_snapshot_is_described_key_for_key() -> None:
    keeper = LeaseKeeper(MemoryLeaseStore(), holder_id="n@h", holder_host="h", role="primary",
                         ttl_s=30, renew_s=10)
    before = keeper.snapshot()
    assert msgspec.to_builtins(lease_view(before)) == before
    await keeper.step()
    held = keeper.snapshot()
    assert held["is_holder"] is True
    assert msgspec.to_builtins(lease_view(held)) == held


def test_an_undescribed_lease_key_is_refused() -> None:
    keeper = LeaseKeeper(MemoryLeaseStore(), holder_id="n@h", holder_host="h", role="primary",
                         ttl_s=30, renew_s=10)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        lease_view({**keeper.snapshot(), "surprise": 1})


async def test_live_answers_match_the_documents(tmp_path: Path) -> None:
    """File lease; codexd reachable, then gone (the parts that become null)."""
    with trio.fail_after(GUARD):
        async with open_fake_codexd() as fake, AsyncExitStack() as stack:
            c = await stack.enter_async_context(open_conductor(fake.url, tmp_path / "c"))
            api = StatusApi(StatusApiConfig(local_api="http://127.0.0.1:0", conductor_base=c.url))
            nursery = await stack.enter_async_context(trio.open_nursery())
            api_url = await nursery.start(api.serve)
            stack.callback(api.begin_stop)
            status_http = await stack.enter_async_context(httpx.AsyncClient(base_url=api_url))
            conductor_doc = (await c.http.get("/openapi.json")).json()
            status_doc = (await status_http.get("/openapi.json")).json()
            for method, path in CONDUCTOR_JSON:
                answer = await c.http.request(method.upper(), path, json={})
                assert answer.status_code == 200, (path, answer.text)
                _check(conductor_doc, method, path, answer)
            for method, path in STATUS_API_JSON:
                answer = await status_http.request(method.upper(), path)
                assert answer.status_code == 200, (path, answer.text)
                _check(status_doc, method, path, answer)
            relayed = (await status_http.get("/v1/status")).json()["data"]
            assert relayed["source"] == "conductor"
            assert "status_api" in relayed
            runtime = (await c.http.get("/v1/runtime")).json()["data"]
            assert runtime["lease"]["store"] == "file"
            assert "endpoints" not in runtime["lease"]
            assert runtime["started_at"] == runtime["startedAt"]

            # codexd not there: the views still answer, with nulls the schema allows.
            dead = "http://127.0.0.1:9"
            lone = await stack.enter_async_context(open_conductor(dead, tmp_path / "lone"))
            for path in ("/v1/codex", "/v1/system/state", "/v1/status"):
                answer = await lone.http.get(path)
                assert answer.status_code == 200, (path, answer.text)
                _check(conductor_doc, "get", path, answer)
            assert (await lone.http.get("/v1/status")).json()["data"]["codexd"]["child"] is None
            # No conductor: the status-api's "unreachable" answer is described too.
            blind = StatusApi(StatusApiConfig(local_api="http://127.0.0.1:0", conductor_base=dead))
            blind_url = await nursery.start(blind.serve)
            stack.callback(blind.begin_stop)
            async with httpx.AsyncClient(base_url=blind_url) as http:
                answer = await http.get("/v1/status")
            assert answer.json()["data"]["source"] == "unreachable"
            _check(status_doc, "get", "/v1/status", answer)


@asynccontextmanager
async def _etcd_conductor(name: str, endpoint: str, tmp: Path, codexd: str
                          ) -> AsyncIterator[httpx.AsyncClient]:
    argv = [sys.executable, "-m", "conductor_trio", "start", "--local-api", "http://127.0.0.1:0",
            "--codexd-base", codexd, "--state-dir", str(tmp / name), "--node-id", name,
            "--host", "testhost", "--lease-store", f"etcd://{endpoint}", "--lease-ttl", "2",
            "--heartbeat", "0.1"]
    async with (
        spawn_daemon(argv) as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=10) as http,
    ):
        yield http


async def test_etcd_lease_answers_match_the_document(tmp_path: Path) -> None:
    require_etcd()
    with trio.fail_after(GUARD):
        async with (
            open_etcd(tmp_path) as etcd, open_fake_codexd() as fake,
            _etcd_conductor("a", etcd.endpoint, tmp_path, fake.url) as a,
            _etcd_conductor("b", etcd.endpoint, tmp_path, fake.url) as b,
        ):
            document = (await a.get("/openapi.json")).json()
            with trio.fail_after(10):
                # Cross-process: only the nodes can say who leads; bounded by the guard.
                while sorted([(await a.get("/rolez")).text.strip(),  # noqa: ASYNC110
                              (await b.get("/rolez")).text.strip()]) != ["leader", "standby"]:
                    await trio.sleep(0.05)
            for http in (a, b):
                for path in ("/v1/runtime", "/v1/system/state", "/v1/status"):
                    answer = await http.get(path)
                    assert answer.status_code == 200, answer.text
                    _check(document, "get", path, answer)
                    lease = answer.json()["data"]["lease"]
                    assert lease["store"] == "etcd"
                    assert "keepalives" in lease
