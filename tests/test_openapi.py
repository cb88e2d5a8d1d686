"""Every daemon's ``GET /openapi.json``: a valid OpenAPI 3.1 document that lists exactly the
HTTP routes the app registers (so it cannot drift from the code), served by the app itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from quart_trio import QuartTrio

from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.service import Daemon
from codexd_trio.web.app import quart_rule_path
from codexd_trio.web.routes import create_app as create_codexd_app
from conductor_trio.config import ConductorConfig, StatusApiConfig
from conductor_trio.service import Conductor
from conductor_trio.status_api.service import StatusApi
from conductor_trio.web.app import create_app as create_conductor_app


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


# codexd routes the conductor does not relay as /v1/codex/X, and why.
_CODEXD_ONLY = {
    # The conductor answers with its own view of codexd (reachability, counts, routes) at
    # GET /v1/codex instead.
    ("GET", "/v1/codex/status"),
    # The queue hold follows the conductor's mode (POST /v1/system/pause|resume|drain sets
    # it); a client must not lift a pause behind the conductor's back.
    ("GET", "/v1/codex/hold"),
    ("POST", "/v1/codex/hold"),
}
# Conductor routes under /v1/codex/ with no /v1/codexd/X twin, and why.
_CONDUCTOR_ONLY = {
    # codexd's GET /metrics (not under /v1/codexd/), proxied for the console and scrapers.
    ("GET", "/v1/codex/metrics"),
}


def _under(app: QuartTrio, prefix: str) -> set[tuple[str, str]]:
    """(method, path) of the app's routes under ``prefix``, websockets as method ``WS``, with
    the prefix replaced by ``/v1/codex/``."""
    out = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(prefix):
            continue
        path = "/v1/codex/" + quart_rule_path(rule.rule)[len(prefix):]
        if getattr(rule, "websocket", False):
            out.add(("WS", path))
            continue
        out |= {(m, path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return out


async def test_the_conductor_relays_every_codexd_route(daemon: Daemon, tmp_path: Path) -> None:
    # Issue 20, item 8: the README says every operation is under /v1/codex/*; the conductor had
    # no POST /v1/codex/sessions/{id}/close.
    conductor = Conductor(ConductorConfig(node_id="n", local_api="http://127.0.0.1:0",
                                          codexd_base="http://127.0.0.1:9", state_dir=tmp_path))
    try:
        codexd = _under(create_codexd_app(daemon), "/v1/codexd/")
        relayed = _under(create_conductor_app(conductor), "/v1/codex/")
    finally:
        await conductor.client.aclose()
    assert ("POST", "/v1/codex/sessions/{session_id}/close") in relayed
    assert ("WS", "/v1/codex/events") in relayed
    assert codexd - _CODEXD_ONLY == relayed - _CONDUCTOR_ONLY
    # The allow lists hold only what is true: nothing stale in them.
    assert codexd >= _CODEXD_ONLY
    assert relayed >= _CONDUCTOR_ONLY
    assert not _CODEXD_ONLY & relayed


async def test_conductor_document_marks_what_needs_the_callers_credential(
    tmp_path: Path,
) -> None:
    # Over a codexd with a token every /v1/codex/* route needs the caller's own credential.
    conductor = Conductor(ConductorConfig(node_id="n", local_api="http://127.0.0.1:0",
                                          codexd_base="http://127.0.0.1:9", state_dir=tmp_path,
                                          codexd_token="codexd-secret", shared_token="shared"))
    try:
        app = create_conductor_app(conductor)
        doc = await _served(app)
        _check(app, doc)
        listed = (await (await app.test_client().get("/describe")).get_json())["data"]
    finally:
        await conductor.client.aclose()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            # Issue 28: the fleet's routes always need the caller's credential.
            guarded = path.startswith(("/v1/codex/", "/v1/fleet/")) or (
                path.startswith("/v1/system/") and method in ("post", "delete")) or (
                # Issue 25: the device list, and "this device" (a device token).
                path == "/v1/system/devices" or path.startswith("/v1/devices/"))
            assert ("security" in op) == guarded, (method, path)
            # A pairing code is a credential of its own: a wrong one is a 401, not a bearer.
            assert ("401" in op["responses"]) == (guarded or path == "/v1/pair"), (method, path)
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http",
                                                               "scheme": "bearer"}}
    auth = {(r["method"], r["path"]) for r in listed["routes"] if r.get("auth")}
    assert ("GET", "/v1/codex/sessions") in auth
    assert ("WS", "/v1/codex/events") in auth
    assert ("GET", "/v1/codex") not in auth  # the conductor's own view: counts, no content
    assert ("GET", "/v1/status") not in auth
    assert set(listed["auth"]["routes"]) == {p for _, p in auth}
