"""codexd's HTTP operations for ``GET /openapi.json``: the msgspec types of each route's body
and answer (the answers' ``data`` shapes that are not already records of
:mod:`codexd_trio.base.contracts` are written down here)."""

from __future__ import annotations

from typing import Any

import msgspec

from codexd_trio import __version__
from codexd_trio.base.contracts import (
    Approval,
    ChildStatus,
    CodexdStatus,
    CreateSessionRequest,
    DecisionRequest,
    Event,
    InterruptRequest,
    Session,
    SteerRequest,
    TurnRequest,
)
from codexd_trio.base.transcript import (
    ForkRequest,
    ReviewRequest,
    RollbackAnswer,
    RollbackRequest,
    ThreadPage,
    ThreadView,
    TitleRequest,
    Transcript,
    TranscriptItemView,
)
from codexd_trio.web.openapi import Op, build, query

__all__ = ["codexd_openapi", "codexd_ops", "codexd_websockets"]


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    pid: int
    uptimeS: float


class Ready(msgspec.Struct, frozen=True, kw_only=True):
    ready: bool
    child: ChildStatus


class RouteInfo(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    summary: str


class Description(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    surface: str
    version: str
    routes: list[RouteInfo]
    eventStream: dict[str, Any]
    errors: str


class SessionPage(msgspec.Struct, frozen=True, kw_only=True):
    sessions: list[Session]
    nextCursor: str | None


class OneSession(msgspec.Struct, frozen=True, kw_only=True):
    session: Session


class SessionView(msgspec.Struct, frozen=True, kw_only=True):
    session: Session
    recentEvents: list[Event]


class TurnAnswer(msgspec.Struct, frozen=True, kw_only=True):
    accepted: bool
    sessionId: str
    turnId: str
    session: Session


class ApprovalList(msgspec.Struct, frozen=True, kw_only=True):
    approvals: list[Approval]


class OneApproval(msgspec.Struct, frozen=True, kw_only=True):
    approval: Approval


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    events: list[Event]
    lastSeq: int
    nextAfter: int


_INT0 = {"type": "integer", "minimum": 0}
_INT1 = {"type": "integer", "minimum": 1}
# What a turn verb can meet once the session exists.
_TURN_ERRORS = ("not_found", "child_unavailable", "app_server_error", "shutting_down",
                "idempotency_mismatch", "store_unavailable")


def codexd_ops(prefix: str = "/v1/codexd", events_path: str = "/v1/codexd/events") -> list[Op]:
    """codexd's operations (``prefix`` lets the conductor describe its proxy of them)."""
    return [
        Op("GET", "/healthz", "liveness: 200 while the process serves", Health,
           auth_exempt=True),
        Op("GET", "/readyz", "readiness: the child is initialized and the store is open", Ready,
           errors=("child_unavailable", "store_unavailable", "shutting_down")),
        Op("GET", "/describe", "routes and the event stream", Description),
        Op("GET", f"{prefix}/status", "service and snapshot", CodexdStatus),
        Op("GET", f"{prefix}/sessions",
           "a page of sessions, oldest first (order=activity: newest activity first)",
           SessionPage,
           params=(query("limit", _INT1, "page size (max 1000)"),
                   query("cursor", {"type": "string"}, "nextCursor of the previous page"),
                   query("status", {"enum": ["active", "closed"]}),
                   query("order", {"enum": ["created", "activity"]},
                         "created (default, oldest first) or activity (updatedAt, newest "
                         "first)"))),
        Op("POST", f"{prefix}/sessions",
           "create a session (thread/start), or adopt a thread (threadId: thread/resume)",
           OneSession, 201, body=CreateSessionRequest, body_required=False,
           errors=("child_unavailable", "app_server_error", "shutting_down",
                   "idempotency_mismatch", "store_unavailable", "thread_in_use")),
        Op("GET", f"{prefix}/sessions/{{session_id}}", "one session and its recent events",
           SessionView),
        Op("POST", f"{prefix}/sessions/{{session_id}}/close", "close a session", OneSession,
           errors=("idempotency_mismatch", "turn_in_progress", "store_unavailable")),
        Op("POST", f"{prefix}/turn", "start a turn", TurnAnswer, 202, body=TurnRequest,
           errors=(*_TURN_ERRORS, "turn_in_progress", "session_closed")),
        Op("POST", f"{prefix}/turn/steer", "add input to the running turn", TurnAnswer,
           body=SteerRequest, errors=(*_TURN_ERRORS, "no_active_turn", "turn_mismatch",
                                      "session_closed")),
        Op("POST", f"{prefix}/turn/interrupt", "interrupt the running turn", TurnAnswer, 202,
           body=InterruptRequest, errors=(*_TURN_ERRORS, "no_active_turn", "turn_mismatch")),
        Op("GET", f"{prefix}/approvals", "approval records", ApprovalList,
           params=(query("state", {"enum": ["pending", "resolved", "expired"]}),)),
        Op("GET", f"{prefix}/approvals/{{approval_id}}", "one approval", OneApproval),
        Op("POST", f"{prefix}/approvals/{{approval_id}}", "decide an approval", OneApproval,
           body=DecisionRequest,
           errors=("approval_resolved", "idempotency_mismatch", "store_unavailable")),
        *conversation_ops(prefix),
        Op("GET", events_path, "a page of the durable event log", EventPage,
           params=(query("after", _INT0, "events after this seq"),
                   query("limit", _INT1, "page size (max 1000)"),
                   query("sessionId", {"type": "string"}))),
        Op("GET", "/metrics", "Prometheus metrics", media="text/plain"),
        Op("GET", "/openapi.json", "this document (OpenAPI 3.1, not an envelope)",
           envelope=False),
    ]


def conversation_ops(prefix: str = "/v1/codexd") -> list[Op]:
    """The conversation's operations (issue 22): transcripts, threads, thread verbs."""
    session = f"{prefix}/sessions/{{session_id}}"
    child = ("child_unavailable", "app_server_error", "shutting_down")
    write = (*child, "idempotency_mismatch", "store_unavailable")
    paging = (query("limit", _INT1, "turns per page (default 50, max 1000)"),
              query("cursor", {"type": "string"}, "nextCursor of the previous page"))
    return [
        Op("GET", f"{session}/transcript",
           "the session's turns, oldest first (order=desc: newest first); lastSeq is where "
           "the event stream picks up", Transcript,
           params=(*paging, query("order", {"enum": ["asc", "desc"]}))),
        Op("GET", f"{session}/transcript/items/{{item_id}}",
           "one transcript item whole (nothing cut)", TranscriptItemView),
        Op("GET", f"{prefix}/threads", "Codex's threads, newest first (thread/list)",
           ThreadPage,
           params=(query("limit", _INT1, "page size (default 50, max 200)"),
                   query("cursor", {"type": "string"}, "nextCursor of the previous page"),
                   query("cwd", {"type": "string"}, "only threads of this working directory"),
                   query("search", {"type": "string"}, "a substring of the title"),
                   query("archived", {"type": "boolean"}, "true: only archived threads")),
           errors=child),
        Op("GET", f"{prefix}/threads/{{thread_id}}",
           "one thread and a page of its turns, read-only (thread/read)", ThreadView,
           params=paging, errors=child),
        Op("POST", f"{session}/fork", "a new session on a copy of the thread (thread/fork)",
           OneSession, 201, body=ForkRequest, body_required=False, errors=write),
        Op("POST", f"{session}/rollback",
           "take the last N turns out of the history (thread/revert)", RollbackAnswer,
           body=RollbackRequest, body_required=False,
           errors=(*write, "turn_in_progress", "session_closed")),
        Op("POST", f"{session}/compact", "compact the thread's context, as a turn",
           TurnAnswer, 202, errors=(*write, "turn_in_progress", "session_closed")),
        Op("POST", f"{session}/review", "review changes (review/start), as a turn",
           TurnAnswer, 202, body=ReviewRequest, body_required=False,
           errors=(*write, "turn_in_progress", "session_closed")),
        Op("POST", f"{session}/title", "set the title (thread/name/set)", OneSession,
           body=TitleRequest, errors=write),
    ]


def codexd_websockets(events_path: str) -> list[dict[str, str]]:
    return [{"path": events_path,
             "summary": "the live event stream (?after=&sessionId=&batch=1)"}]


def codexd_openapi(*, events_path: str, token: bool) -> dict[str, Any]:
    return build(
        title="codexd",
        version=__version__,
        description="codexd's local API (CONTRACT.md). Every JSON answer is the envelope "
        "{ok, data} or {ok:false, error:{code, message, details}}.",
        ops=codexd_ops(events_path=events_path),
        token=token,
        websockets=codexd_websockets(events_path),
    )
