"""OpenAPI 3.1 documents generated from the msgspec contracts.

Each daemon lists its HTTP operations once as :class:`Op` records (method, path, the msgspec
types of the request body and of the envelope's ``data``, the error codes it may answer);
:func:`build` turns them into the document served at ``GET /openapi.json``, with the JSON
Schemas from :func:`msgspec.json.schema_components`. A test compares the operations with the
app's ``url_map``, so the document cannot drift from the routes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from codexd_trio.base.contracts import ErrorEnvelope
from codexd_trio.web.envelope import STATUS_FOR_CODE

__all__ = ["Op", "Param", "build", "described_routes", "query"]

_REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" or "path"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


def query(name: str, schema: dict[str, Any], description: str = "") -> Param:
    return Param(name, "query", schema, description)


@dataclass(frozen=True)
class Op:
    """One HTTP operation.

    Args:
        method, path: as routed (path parameters as ``{name}``, the Quart variable's name).
        summary: one line.
        data: the msgspec type of the success envelope's ``data`` (``Any``: an open object).
        status: the success status.
        body: the msgspec type of the JSON request body, if it takes one.
        body_required: whether an empty body is refused.
        errors: error codes beyond the ones every operation of its kind can answer.
        params: query parameters (path parameters are derived from ``path``).
        media: the success content type; anything but JSON is not an envelope.
        auth_exempt: never needs the bearer token (liveness).
    """

    method: str
    path: str
    summary: str
    data: Any = dict[str, Any]
    status: int = 200
    body: Any = None
    body_required: bool = True
    errors: tuple[str, ...] = ()
    params: tuple[Param, ...] = ()
    media: str = "application/json"
    auth_exempt: bool = False
    tags: tuple[str, ...] = field(default=())
    # Further success content types of a non-JSON route (static files of several kinds).
    more_media: tuple[str, ...] = ()
    # False: a JSON answer that is not an {ok, data} envelope (the OpenAPI document itself).
    envelope: bool = True
    # Further content types of its error answers (a page for people: a one-tap action link's
    # refusal is an HTML page; the caller guard's refusals stay JSON envelopes).
    error_media: tuple[str, ...] = ()


def _error_codes(op: Op, *, token: bool) -> list[str]:
    codes = ["origin_not_allowed", "host_not_allowed", "internal_error"]
    if token and not op.auth_exempt:
        codes.append("unauthorized")
    if "{" in op.path:
        codes.append("not_found")
    if op.params:
        codes.append("invalid_request")
    if op.method == "POST":
        codes += ["payload_too_large", "unsupported_media_type"]
        if op.body is not None:
            codes += ["invalid_json", "invalid_request"]
    codes += op.errors
    return list(dict.fromkeys(codes))


def build(
    *,
    title: str,
    version: str,
    description: str,
    ops: Sequence[Op],
    token: bool = False,
    extra_schemas: Iterable[Any] = (),
    websockets: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``ops``.

    Args:
        token: a bearer token is configured (every operation but ``auth_exempt`` ones may 401).
            Without it, the operations that list ``unauthorized`` among their errors are the
            ones that need a bearer token: they get their own ``security``.
        websockets: websocket routes, listed under ``x-websockets`` (OpenAPI has no such verb).
    """
    types: list[Any] = [ErrorEnvelope]
    for op in ops:
        if op.media == "application/json" and op.envelope:
            types.append(op.data)
        if op.body is not None:
            types.append(op.body)
    types.extend(extra_schemas)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip((id(t) for t in types), schemas, strict=True))
    error_schema = schema_of[id(ErrorEnvelope)]

    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        responses: dict[str, Any] = {}
        if op.media == "application/json" and not op.envelope:
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        elif op.media == "application/json":
            success = {
                "type": "object",
                "required": ["ok", "data"],
                "properties": {"ok": {"const": True}, "data": schema_of[id(op.data)]},
            }
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {"application/json": {"schema": success}},
            }
        else:
            responses[str(op.status)] = {
                "description": op.summary,
                "content": {media: {"schema": {"type": "string"}}
                            for media in (op.media, *op.more_media)},
            }
        by_status: dict[int, list[str]] = {}
        for code in _error_codes(op, token=token):
            by_status.setdefault(STATUS_FOR_CODE.get(code, 500), []).append(code)
        for status, codes in sorted(by_status.items()):
            responses[str(status)] = {
                "description": "error codes: " + ", ".join(codes),
                "content": {"application/json": {"schema": error_schema},
                            **{media: {"schema": {"type": "string"}}
                               for media in op.error_media}},
            }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method.lower()} {op.path}",
            "responses": responses,
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_names(op.path)
        ] + [
            {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema,
             "description": p.description}
            for p in op.params
        ]
        if parameters:
            operation["parameters"] = parameters
        if op.method == "POST":
            body_schema = schema_of[id(op.body)] if op.body is not None else {"type": "object"}
            operation["requestBody"] = {
                "required": op.body is not None and op.body_required,
                "content": {"application/json": {"schema": body_schema}},
            }
        if not token and "unauthorized" in op.errors:
            operation["security"] = [{"bearer": []}]
        if op.tags:
            operation["tags"] = list(op.tags)
        paths.setdefault(op.path, {})[op.method.lower()] = operation

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": components},
    }
    if token or any("unauthorized" in op.errors for op in ops):
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
    if token:
        document["security"] = [{"bearer": []}]
    if websockets:
        document["x-websockets"] = list(websockets)
    return document


def described_routes(
    ops: Sequence[Op], websockets: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """``GET /describe``'s list of routes, from the same operations as the OpenAPI document,
    so the two cannot drift; ``auth`` marks the routes that need the token beyond the
    daemon's general rule (a websocket says so with ``"auth": True`` in its entry)."""
    routes: list[dict[str, Any]] = []
    for op in ops:
        route: dict[str, Any] = {"method": op.method, "path": op.path, "summary": op.summary}
        if "unauthorized" in op.errors:
            route["auth"] = True
        routes.append(route)
    for ws in websockets:
        route = {"method": "WS", "path": ws["path"], "summary": ws["summary"]}
        if ws.get("auth"):
            route["auth"] = True
        routes.append(route)
    return routes


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
