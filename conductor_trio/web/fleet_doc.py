"""The OpenAPI operations of ``/v1/fleet/*`` (issue 28; :mod:`.fleet_routes`).

A routed session call answers what the owner's ``/v1/codex/*`` answers, so its operation is the
proxied one's under the fleet's path, plus the fleet's own refusals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from codexd_trio.web.openapi import Op, query

__all__ = ["fleet_ops"]

_S = "/v1/fleet/sessions/{session_id}"
# fleet path → the proxied /v1/codex/* operation it is routed to.
_ROUTED: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", _S): ("GET", "/v1/codex/sessions/{session_id}"),
    ("POST", f"{_S}/turn"): ("POST", "/v1/codex/turn"),
    ("POST", f"{_S}/turn/steer"): ("POST", "/v1/codex/turn/steer"),
    ("POST", f"{_S}/turn/interrupt"): ("POST", "/v1/codex/turn/interrupt"),
    **{("POST", f"{_S}/{name}"): ("POST", f"/v1/codex/sessions/{{session_id}}/{name}")
       for name in ("close", "fork", "rollback", "compact", "review", "title")},
    ("GET", f"{_S}/transcript"): ("GET", "/v1/codex/sessions/{session_id}/transcript"),
    ("GET", f"{_S}/transcript/items/{{item_id}}"):
        ("GET", "/v1/codex/sessions/{session_id}/transcript/items/{item_id}"),
    ("GET", f"{_S}/queue"): ("GET", "/v1/codex/sessions/{session_id}/queue"),
    ("POST", f"{_S}/queue/resume"): ("POST", "/v1/codex/sessions/{session_id}/queue/resume"),
    ("DELETE", f"{_S}/queue/{{queue_id}}"):
        ("DELETE", "/v1/codex/sessions/{session_id}/queue/{queue_id}"),
    ("POST", f"{_S}/queue/{{queue_id}}/move"):
        ("POST", "/v1/codex/sessions/{session_id}/queue/{queue_id}/move"),
    ("GET", f"{_S}/approvals"): ("GET", "/v1/codex/approvals"),
    ("GET", f"{_S}/approvals/{{approval_id}}"): ("GET", "/v1/codex/approvals/{approval_id}"),
    ("POST", f"{_S}/approvals/{{approval_id}}"): ("POST", "/v1/codex/approvals/{approval_id}"),
    ("GET", f"{_S}/events"): ("GET", "/v1/codex/events"),
}
_FLEET_ERRORS = ("unauthorized", "node_unavailable", "not_found")


def fleet_ops(proxied: Sequence[Op]) -> list[Op]:
    """The fleet's operations; ``proxied``: the conductor's ``/v1/codex/*`` operations."""
    by_route = {(op.method, op.path): op for op in proxied}
    routed = []
    for (_, path), target in _ROUTED.items():
        op = by_route[target]
        params = tuple(p for p in op.params if p.name != "sessionId")
        routed.append(replace(op, path=path, params=params,
                              summary=f"{op.summary.removesuffix(' (proxied to codexd)')} "
                              "(routed to the session's node)",
                              errors=tuple(dict.fromkeys((*op.errors, *_FLEET_ERRORS)))))
    page = (query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "default 100"),
            query("cursor", {"type": "string"}, "nextCursor of the previous page"))
    create = by_route[("POST", "/v1/codex/sessions")]
    return [
        Op("GET", "/v1/fleet/nodes", "every node: registration, reachable now, last counts",
           errors=("unauthorized",)),
        Op("GET", "/v1/fleet/sessions", "sessions of every node, newest activity first",
           params=(*page, query("status", {"enum": ["active", "closed"]})),
           errors=("unauthorized",)),
        Op("POST", "/v1/fleet/sessions",
           "create a session on a node: node, labels, else the least busy healthy one",
           status=201, body=None, body_required=False,
           errors=tuple(dict.fromkeys((*create.errors, "unauthorized", "no_node_available",
                                       "node_unavailable", "invalid_json")))),
        Op("GET", "/v1/fleet/approvals", "approvals of every node, newest first",
           params=(*page, query("state", {"enum": ["pending", "resolved", "expired"]})),
           errors=("unauthorized",)),
        *routed,
    ]
