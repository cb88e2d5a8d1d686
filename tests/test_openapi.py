"""Every daemon's ``GET /openapi.json``: a valid OpenAPI 3.1 document that lists exactly the
HTTP routes the app registers (so it cannot drift from the code), served by the app itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from quart_trio import QuartTrio

from codexd_trio.api import create_app as create_codexd_app
from codexd_trio.config import CodexdConfig
from codexd_trio.service import Daemon
from codexd_trio.web.app import quart_rule_path
from conductor_trio.app import create_app as create_conductor_app
from conductor_trio.config import ConductorConfig, StatusApiConfig
from conductor_trio.service import Conductor
from conductor_trio.status_api import StatusApi


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(CodexdConfig(local_api_base="http://127.0.0.1:0", logs_dir=tmp_path / "logs",
                            state_dir=tmp_path / "state"))
    yield d
    d.close()


def _routes(app: QuartTrio) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every HTTP rule (websocket rules and HEAD are not operations)."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or getattr(rule, "websocket", False):
            continue
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                out.add((method, quart_rule_path(rule.rule)))
    return out


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}


async def _served(app: QuartTrio) -> dict[str, Any]:
    response = await app.test_client().get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = await response.get_json()
    return doc


def _check(app: QuartTrio, doc: dict[str, Any]) -> None:
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    assert doc["openapi"] == "3.1.0"
    # The document describes itself as what it is: an object, not an {ok, data} envelope.
    itself = doc["paths"]["/openapi.json"]["get"]["responses"]["200"]["content"]
    assert itself == {"application/json": {"schema": {"type": "object"}}}
    assert _documented(doc) == _routes(app)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            # Every operation answers some error with the one error envelope.
            errors = [s for s in op["responses"] if s.startswith(("4", "5"))]
            assert errors, (method, path)
            assert "500" in op["responses"], (method, path)


async def test_codexd_document_lists_every_route(daemon: Daemon) -> None:
    app = create_codexd_app(daemon)
    doc = await _served(app)
    _check(app, doc)
    turn = doc["paths"]["/v1/codexd/turn"]["post"]
    body = turn["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TurnRequest"}
    assert {"202", "409", "404", "415", "413", "400"} <= set(turn["responses"])
    assert "Session" in doc["components"]["schemas"]
    assert "/v1/codexd/events" in {w["path"] for w in doc["x-websockets"]}


async def test_conductor_document_lists_every_route(tmp_path: Path) -> None:
    conductor = Conductor(ConductorConfig(node_id="n", local_api="http://127.0.0.1:0",
                                          codexd_base="http://127.0.0.1:9", state_dir=tmp_path))
    try:
        app = create_conductor_app(conductor)
        doc = await _served(app)
        _check(app, doc)
        turn = doc["paths"]["/v1/codex/turn"]["post"]["responses"]
        assert {"423", "503"} <= set(turn)
        # /describe's list names every HTTP route too (and the relay websocket).
        listed = (await (await app.test_client().get("/describe")).get_json())["data"]["routes"]
        described = {(r["method"], r["path"]) for r in listed if r["method"] != "WS"}
        assert described == _routes(app)
        assert ("WS", "/v1/codex/events") in {(r["method"], r["path"]) for r in listed}
    finally:
        await conductor.client.aclose()


async def test_status_api_document_lists_every_route() -> None:
    api = StatusApi(StatusApiConfig(local_api="http://127.0.0.1:0",
                                    conductor_base="http://127.0.0.1:9"))
    try:
        app = api.app()
        _check(app, await _served(app))
    finally:
        await api.http.aclose()


async def test_a_route_missing_from_the_document_is_noticed(daemon: Daemon) -> None:
    app = create_codexd_app(daemon)

    @app.get("/v1/codexd/undocumented")
    async def undocumented() -> str:
        return "x"

    assert ("GET", "/v1/codexd/undocumented") in _routes(app) - _documented(await _served(app))
