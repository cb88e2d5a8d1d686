"""Approvals and approval rules: the calls of :class:`~codexd_trio.client.CodexdClient` for what
Codex asks before it acts (private: use the client)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from codexd_trio.base.contracts import Approval, ApprovalRules, ApprovalRulesView
from codexd_trio.client._calls import Calls

__all__ = ["ApprovalCalls"]


class ApprovalCalls(Calls):
    """``/v1/codexd/approvals`` and the approval rules."""


    async def list_approvals(self, state: str | None = None) -> list[Approval]:
        """``GET /v1/codexd/approvals[?state=...]``."""
        params = {"state": state} if state else None
        data = await self._call("GET", "/v1/codexd/approvals", params=params)
        return msgspec.convert(data["approvals"], list[Approval])

    async def get_approval(self, approval_id: str) -> Approval:
        """``GET /v1/codexd/approvals/{id}``."""
        data = await self._call("GET", f"/v1/codexd/approvals/{approval_id}")
        return msgspec.convert(data["approval"], Approval)

    async def decide_approval(
        self,
        approval_id: str,
        decision: str,
        *,
        decided_by: str | None = None,
        idempotency_key: str | None = None,
    ) -> Approval:
        """``POST /v1/codexd/approvals/{id} {decision}``; 409 ``approval_resolved`` on a second."""
        body: dict[str, Any] = {"decision": decision}
        if decided_by is not None:
            body["decidedBy"] = decided_by
        data = await self._call(
            "POST",
            f"/v1/codexd/approvals/{approval_id}",
            json=body,
            headers=self._idem(idempotency_key),
        )
        return msgspec.convert(data["approval"], Approval)

    async def approval_rules(self, session_id: str | None = None, *,
                             replace: ApprovalRules | None = None) -> ApprovalRulesView:
        """The node's (or a session's) approval rules and timeout and what is in force there;
        with ``replace``, those settings replace the stored ones first (``POST``)."""
        path = "/v1/codexd/approval-rules" if session_id is None else (
            f"/v1/codexd/sessions/{quote(session_id, safe='')}/approval-rules")
        data = await (self._call("GET", path) if replace is None else
                      self._call("POST", path, json=msgspec.to_builtins(replace)))
        return msgspec.convert(data, ApprovalRulesView)

