"""``/v1/fleet/*`` (issue 28): one API for every node, on every node.

The merged reads (nodes, sessions, approvals) and placement are :class:`~conductor_trio.fleet.
fleet.Fleet`'s; everything for one session is routed to the node that owns it, at that node's
``/v1/codex/*`` — so its mode (423), its access rules and codexd's own answers apply there,
byte for byte, with ``X-Baa-Node`` naming the node. Who may call is decided before any of these
run (``fleet_access`` in :func:`conductor_trio.web.app.create_app`); the call to the owner
carries this conductor's node credential, never the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from quart import Response, g, request, websocket
from quart_trio import QuartTrio

from codexd_trio.base.context import current_request_id
from codexd_trio.web.envelope import envelope as ok
from codexd_trio.web.envelope import error
from conductor_trio.fleet.fleet import FleetRefusal
from conductor_trio.fleet.merge import BadCursor
from conductor_trio.fleet.peers import FORWARD_HEADERS, PeerAnswer
from conductor_trio.service import Conductor
from conductor_trio.web.proxy import relay_websocket, without_token

__all__ = ["NODE_HEADER", "install_fleet_routes"]

# Names the node that answered a routed call.
NODE_HEADER = "X-Baa-Node"
_ANSWER_HEADERS = ("idempotency-replayed",)
MAX_PAGE = 1000


def _refused(exc: FleetRefusal) -> Response:
    return error(exc.status, exc.code, exc.message, exc.details)


def _relayed(answer: PeerAnswer, node: str) -> Response:
    headers = {NODE_HEADER: node}
    for name in _ANSWER_HEADERS:
        if answer.headers is not None and name in answer.headers:
            headers[name] = answer.headers[name]
    content_type = (answer.headers or {}).get("content-type", "application/json")
    return Response(answer.content, status=answer.status or 502, content_type=content_type,
                    headers=headers)


def _limit(default: int = 100) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise FleetRefusal(400, "invalid_request", f"limit must be 1 to {MAX_PAGE}.",
                           field="limit", max=MAX_PAGE)
    return int(raw)


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        raise FleetRefusal(400, "invalid_request", f"{name} must be one of {list(allowed)}.",
                           field=name)
    return value


def _forwarded_headers() -> dict[str, str]:
    headers = {name: request.headers[name] for name in FORWARD_HEADERS
               if name in request.headers}
    if (request_id := current_request_id()) is not None:
        headers["X-Request-Id"] = request_id  # one id through every node's access log
    return headers


async def _json_object() -> dict[str, Any]:
    raw = await request.get_data(as_text=False)
    assert isinstance(raw, bytes)
    if not raw.strip():
        return {}
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise FleetRefusal(400, "invalid_json", f"The body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FleetRefusal(400, "invalid_request", "The body must be a JSON object.",
                           field="$")
    return body


def install_fleet_routes(app: QuartTrio, conductor: Conductor) -> None:
    fleet = conductor.fleet

    @app.errorhandler(FleetRefusal)
    async def _on_refusal(exc: FleetRefusal) -> Response:
        return _refused(exc)

    @app.get("/v1/fleet/nodes")
    async def fleet_nodes() -> Response:
        listed = await fleet.nodes()
        return ok({"self": conductor.config.node_id,
                   "nodes": [n for n in listed if n.registered],
                   "offline": [n for n in listed if not n.registered],
                   "etcdError": fleet.etcd_error})

    @app.route("/v1/fleet/sessions", methods=["GET", "POST"])
    async def fleet_sessions() -> Response:
        if request.method == "GET":
            try:
                page = await fleet.sessions(limit=_limit(), cursor=request.args.get("cursor"),
                                            status=_choice("status", ("active", "closed")))
            except BadCursor:
                return error(400, "invalid_request",
                             "cursor is not one this API handed out (use nextCursor)",
                             {"field": "cursor"})
            return ok(page)
        node, answer = await fleet.create(await _json_object(), _forwarded_headers())
        if answer.status == 201:
            body = msgspec.json.decode(answer.content)
            body["data"]["node"] = node.nodeId
            return Response(msgspec.json.encode(body), status=201,
                            content_type="application/json", headers={NODE_HEADER: node.nodeId})
        return _relayed(answer, node.nodeId)

    @app.get("/v1/fleet/approvals")
    async def fleet_approvals() -> Response:
        try:
            page = await fleet.approvals(
                limit=_limit(), cursor=request.args.get("cursor"),
                state=_choice("state", ("pending", "resolved", "expired")))
        except BadCursor:
            return error(400, "invalid_request",
                         "cursor is not one this API handed out (use nextCursor)",
                         {"field": "cursor"})
        return ok(page)

    # -- one session, routed to its owner ------------------------------------------------

    async def routed(session_id: str, method: str, path: str, body: bytes | None = None,
                     query: Mapping[str, str] | None = None) -> Response:
        if method == "POST" and body is None:
            # Read before anything can refuse: an unread body stalls the keep-alive connection.
            raw = await request.get_data(as_text=False)
            assert isinstance(raw, bytes)
            body = raw
        node = await fleet.owner(session_id)
        if query is None:
            text = without_token(request.query_string.decode("latin-1"))
        else:
            text = urlencode(query)
        headers = _forwarded_headers()
        if method == "POST":
            headers.setdefault("Content-Type", "application/json")
        answer = await fleet.forward(node, method, path + (f"?{text}" if text else ""),
                                     body=body, headers=headers)
        return _relayed(answer, node.nodeId)

    def sid(session_id: str, *rest: str) -> str:
        return "/".join(["/v1/codex/sessions", quote(session_id, safe=""),
                         *(quote(p, safe="") for p in rest)])

    @app.get("/v1/fleet/sessions/<session_id>")
    async def fleet_session(session_id: str) -> Response:
        return await routed(session_id, "GET", sid(session_id))

    async def with_session(session_id: str, path: str) -> Response:
        # codexd's turn routes name the session in the body: the path's id wins.
        body = await _json_object()
        body["sessionId"] = session_id
        return await routed(session_id, "POST", path, msgspec.json.encode(body))

    @app.post("/v1/fleet/sessions/<session_id>/turn")
    async def fleet_turn(session_id: str) -> Response:
        return await with_session(session_id, "/v1/codex/turn")

    @app.post("/v1/fleet/sessions/<session_id>/turn/steer")
    async def fleet_steer(session_id: str) -> Response:
        return await with_session(session_id, "/v1/codex/turn/steer")

    @app.post("/v1/fleet/sessions/<session_id>/turn/interrupt")
    async def fleet_interrupt(session_id: str) -> Response:
        return await with_session(session_id, "/v1/codex/turn/interrupt")

    def install_post(name: str) -> None:
        async def post(session_id: str) -> Response:
            return await routed(session_id, "POST", sid(session_id, name))

        post.__name__ = f"fleet_{name}"
        app.post(f"/v1/fleet/sessions/<session_id>/{name}")(post)

    for name in ("close", "fork", "rollback", "compact", "review", "title"):
        install_post(name)

    @app.get("/v1/fleet/sessions/<session_id>/transcript")
    async def fleet_transcript(session_id: str) -> Response:
        return await routed(session_id, "GET", sid(session_id, "transcript"))

    @app.get("/v1/fleet/sessions/<session_id>/transcript/items/<item_id>")
    async def fleet_transcript_item(session_id: str, item_id: str) -> Response:
        return await routed(session_id, "GET", sid(session_id, "transcript", "items", item_id))

    @app.get("/v1/fleet/sessions/<session_id>/queue")
    async def fleet_queue(session_id: str) -> Response:
        return await routed(session_id, "GET", sid(session_id, "queue"))

    @app.post("/v1/fleet/sessions/<session_id>/queue/resume")
    async def fleet_queue_resume(session_id: str) -> Response:
        return await routed(session_id, "POST", sid(session_id, "queue", "resume"))

    @app.delete("/v1/fleet/sessions/<session_id>/queue/<queue_id>")
    async def fleet_queue_remove(session_id: str, queue_id: str) -> Response:
        return await routed(session_id, "DELETE", sid(session_id, "queue", queue_id))

    @app.post("/v1/fleet/sessions/<session_id>/queue/<queue_id>/move")
    async def fleet_queue_move(session_id: str, queue_id: str) -> Response:
        return await routed(session_id, "POST", sid(session_id, "queue", queue_id, "move"))

    @app.get("/v1/fleet/sessions/<session_id>/approvals")
    async def fleet_session_approvals(session_id: str) -> Response:
        answer = await routed(session_id, "GET", "/v1/codex/approvals")
        if answer.status_code != 200:
            return answer
        body = msgspec.json.decode(await answer.get_data(as_text=False))
        body["data"]["approvals"] = [a for a in body["data"]["approvals"]
                                     if a.get("sessionId") == session_id]
        return Response(msgspec.json.encode(body), content_type="application/json",
                        headers={NODE_HEADER: answer.headers[NODE_HEADER]})

    @app.route("/v1/fleet/sessions/<session_id>/approvals/<approval_id>",
               methods=["GET", "POST"])
    async def fleet_session_approval(session_id: str, approval_id: str) -> Response:
        return await routed(session_id, request.method,
                            f"/v1/codex/approvals/{quote(approval_id, safe='')}")

    @app.get("/v1/fleet/sessions/<session_id>/events")
    async def fleet_events_page(session_id: str) -> Response:
        query = {k: v for k, v in request.args.items() if k in ("after", "limit")}
        return await routed(session_id, "GET", "/v1/codex/events",
                            query={**query, "sessionId": session_id})

    @app.websocket("/v1/fleet/sessions/<session_id>/events")
    async def fleet_events_ws(session_id: str) -> Response | None:
        return await _relay(conductor, session_id, g.get("device_id"))


async def _relay(conductor: Conductor, session_id: str, device_id: str | None
                 ) -> Response | None:
    """The session's event stream from its owner's ``/v1/codex/events`` (``after``, ``batch``
    passed on), frame for frame, closed with the owner's code; opened before accepting, so a
    dead owner is an HTTP 503 envelope."""
    fleet = conductor.fleet
    try:
        node = await fleet.owner(session_id)
    except FleetRefusal as exc:
        return _refused(exc)
    base = fleet.base_of(node.nodeId, node.registration)
    if base is None:
        return error(503, "node_unavailable", f"Node {node.nodeId} has no address.",
                     {"node": node.nodeId})
    query = {"sessionId": session_id}
    for name in ("after", "batch"):
        if (value := websocket.args.get(name)) is not None:
            query[name] = value
    url = base.replace("http", "ws", 1) + "/v1/codex/events?" + urlencode(query)
    token = conductor.config.shared_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await relay_websocket(
        conductor, url, headers, device_id,
        lambda exc: error(503, "node_unavailable", f"Node {node.nodeId} did not answer: {exc}",
                          {"node": node.nodeId, "error": str(exc)}))
