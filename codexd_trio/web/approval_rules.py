"""codexd's routes for approval rules and timeouts (issue 25), beside :mod:`.routes`.

``GET``/``POST /v1/codexd/approval-rules`` (the node's) and
``/v1/codexd/sessions/{id}/approval-rules`` (one session's). A ``POST`` replaces the settings
of its scope whole and answers once they are durable; the answer shows what is in force there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from codexd_trio.base.contracts import ApprovalRules
from codexd_trio.core.service import Daemon
from codexd_trio.web.envelope import envelope

__all__ = ["install_approval_rule_routes"]

# routes.py's helper: decode the JSON body into the type, through the Idempotency-Key store.
Post = Callable[[str, Any, Callable[[Any], Awaitable[Response]]], Awaitable[Response]]


def install_approval_rule_routes(app: QuartTrio, daemon: Daemon, post: Post) -> None:
    @app.get("/v1/codexd/approval-rules")
    async def node_rules() -> Response:
        return envelope(daemon.approval_rules())

    @app.post("/v1/codexd/approval-rules")
    async def set_node_rules() -> Response:
        async def handle(body: ApprovalRules) -> Response:
            return envelope(await daemon.set_approval_rules(None, body))

        return await post("POST /v1/codexd/approval-rules", ApprovalRules, handle)

    @app.get("/v1/codexd/sessions/<session_id>/approval-rules")
    async def session_rules(session_id: str) -> Response:
        return envelope(daemon.approval_rules(session_id))

    @app.post("/v1/codexd/sessions/<session_id>/approval-rules")
    async def set_session_rules(session_id: str) -> Response:
        async def handle(body: ApprovalRules) -> Response:
            return envelope(await daemon.set_approval_rules(session_id, body))

        return await post(f"POST /v1/codexd/sessions/{session_id}/approval-rules",
                          ApprovalRules, handle)
