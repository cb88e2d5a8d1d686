"""Approvals: what Codex asks before it runs a command or changes files, and who decided.

Two parts, in the house style: :class:`ApprovalLedger` is the sans-IO record keeping (the list
that ``state/codexd/approvals.json`` persists, the state changes and the events they publish),
and :class:`ApprovalBroker` is the async side that holds a child's request open until a client,
the session's policy or the timeout decides. The request-id → approval map lives on the
:class:`~codexd_trio.core.supervisor.Incarnation`, so nothing of a dead child is ever matched
against the next one's requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import trio

from codexd_trio.base.contracts import (
    Approval,
    ApprovalBook,
    Decision,
    Event,
    Level,
    Session,
    TimeoutDecision,
    now_iso,
)
from codexd_trio.base.errors import ApprovalNotFound, ApprovalResolved, ChildUnavailable
from codexd_trio.core.approval_rules import RuleBook
from codexd_trio.core.domain import Emit
from codexd_trio.core.supervisor import Incarnation
from codexd_trio.protocol.appserver import REPLIED, ServerRequest
from codexd_trio.protocol.child import ChildGone
from codexd_trio.store.documents import JsonDocument

APPROVAL_METHODS = {
    "item/commandExecution/requestApproval": "commandExecution",
    "item/fileChange/requestApproval": "fileChange",
}
# Settled approvals kept in the file besides every pending one.
KEEP_SETTLED = 500


class UnsupportedServerRequest(Exception):
    """Raised to the app-server client so it answers the request with a JSON-RPC error."""


class ApprovalLedger:
    """The approval records (sans-IO): every change returns the event to publish."""

    def __init__(self, doc: JsonDocument[ApprovalBook]) -> None:
        self.doc = doc

    def list(self, state: str | None = None) -> list[Approval]:
        return [a for a in self.doc.value.approvals if state is None or a.state == state]

    def get(self, approval_id: str) -> Approval:
        for approval in self.doc.value.approvals:
            if approval.approvalId == approval_id:
                return approval
        raise ApprovalNotFound(f"no approval {approval_id!r}", approvalId=approval_id)

    def put(self, approval: Approval) -> None:
        items = [a for a in self.doc.value.approvals if a.approvalId != approval.approvalId]
        items.append(approval)
        settled = [a for a in items if a.state != "pending"]
        if len(settled) > KEEP_SETTLED:
            drop = {a.approvalId for a in settled[: len(settled) - KEEP_SETTLED]}
            items = [a for a in items if a.approvalId not in drop]
        self.doc.set(ApprovalBook(lastSeq=self.doc.value.lastSeq, approvals=items))

    # -- persistence: approvals.json is a snapshot of the approval events (issue 26) --------
    #
    # Every change above is published as an event in the same synchronous step, so the durable
    # event log is the journal and approvals.json a snapshot stamped with the seq it reflects
    # (the daemon stamps it at write time and writes it only once that seq is durable). At
    # start the approval events after the stamp are replayed over it: a SIGKILL between an
    # approval's event and the file's rewrite can no longer make the restart settle it twice.

    def replay(self, events: Iterable[Event]) -> int:
        """Apply the logged approval events after the snapshot; returns how many changed it."""
        applied = 0
        for event in events:
            if event.type not in ("approval.requested", "approval.resolved"):
                continue
            try:
                approval = msgspec.convert(event.detail["approval"], Approval)
            except (KeyError, msgspec.ValidationError):
                continue  # not an event this ledger wrote; the log stays the truth for it
            self.put(approval)
            applied += 1
        return applied

    def resolve(self, approval_id: str, decision: Decision, decided_by: str) -> Emit:
        approval = msgspec.structs.replace(
            self.get(approval_id),
            state="resolved",
            decision=decision,
            decidedBy=decided_by,
            resolvedAt=now_iso(),
        )
        self.put(approval)
        return _emit(
            "approval.resolved", approval,
            f"approval {approval_id} resolved: {decision} ({decided_by})",
        )

    def expire(self, approval_id: str, reason: str) -> Emit | None:
        approval = self.get(approval_id)
        if approval.state != "pending":
            return None
        approval = msgspec.structs.replace(approval, state="expired", resolvedAt=now_iso())
        self.put(approval)
        return _emit(
            "approval.resolved", approval, f"approval {approval_id} expired: {reason}",
            level="warn", reason=reason,
        )


def _emit(
    type_: str, approval: Approval, message: str, *, level: Level = "info", **extra: Any
) -> Emit:
    return Emit(
        type_,
        message,
        level=level,
        session_id=approval.sessionId,
        thread_id=approval.threadId,
        turn_id=approval.turnId,
        detail={"approval": msgspec.to_builtins(approval), **extra},
    )


def _iso(at: datetime) -> str:
    """As :func:`now_iso`: UTC with milliseconds and a ``Z``."""
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: object) -> str | None:
    # Received from Codex: a shape change must not make approvals.json undecodable.
    return value if isinstance(value, str) else None


# Why an approval whose decision never reached the child that asked is recorded as expired.
UNDELIVERED = "undelivered: the codex app-server that asked is gone"


class _Pending:
    def __init__(self) -> None:
        # Set once a decision is chosen (a client, the policy, the timeout) or the request
        # expired; the request's task then delivers the decision.
        self.decided = trio.Event()
        self.decision: Decision | None = None
        self.decided_by = ""
        # Set once the outcome is recorded: resolved (delivered) or expired.
        self.settled = trio.Event()
        self.undelivered = False


class ApprovalBroker:
    """Holds each approval request of the child open until someone decides it.

    A decision is recorded only once it was delivered: the request's own task writes the
    answer to the child that asked (:meth:`AppServerClient.reply`) and then records the
    approval ``resolved``. If that child is gone (it died, and its incarnation is not torn
    down yet) the decision never reached Codex, and the approval is recorded ``expired``
    (``reason`` :data:`UNDELIVERED`) instead; the client that decided gets
    :class:`ChildUnavailable`.
    """

    def __init__(
        self, ledger: ApprovalLedger, publish: Callable[[Emit], object], *, timeout_s: float,
        rules: RuleBook | None = None,
    ) -> None:
        self.ledger = ledger
        self.publish = publish
        self.timeout_s = timeout_s
        # The node's and the sessions' rules and timeouts (issue 25); without: wait timeout_s,
        # then decline.
        self.rules = rules
        self._pending: dict[str, _Pending] = {}

    def _timeout(self, session: Session | None) -> tuple[float, TimeoutDecision]:
        if self.rules is None:
            return self.timeout_s, "decline"
        return self.rules.timeout(session.sessionId if session else None)

    async def on_request(
        self, incarnation: Incarnation, req: ServerRequest, session: Session | None
    ) -> Any:
        """Answer one server request of ``incarnation`` (an approval, or a refusal)."""
        params = req.params
        thread_id = params.get("threadId")
        thread_id = thread_id if isinstance(thread_id, str) else None
        kind = APPROVAL_METHODS.get(req.method)
        if kind is None:
            self.publish(
                Emit(
                    "app-server.request.declined",
                    f"declined unsupported app-server request {req.method}",
                    level="warn",
                    session_id=session.sessionId if session else None,
                    thread_id=thread_id,
                    detail={"method": req.method, "params": params},
                )
            )
            raise UnsupportedServerRequest(f"codexd does not handle {req.method}")
        waits = (session.approvals if session else "decline") == "clients"
        timeout_s, on_timeout = self._timeout(session)
        created = datetime.now(UTC)
        item_id = _text(params.get("itemId"))
        approval = Approval(
            approvalId=f"approval-{uuid.uuid4()}",
            sessionId=session.sessionId if session else None,
            threadId=thread_id,
            turnId=_text(params.get("turnId")),
            itemId=item_id,
            kind=kind,
            method=req.method,
            createdAt=_iso(created),
            # When (and how) codexd answers by itself: what a notification tells its person.
            expiresAt=_iso(created + timedelta(seconds=timeout_s)) if waits else None,
            onTimeout=on_timeout if waits else None,
            params=params,
        )
        rule = self.rules.decide(session, kind, params, item_id) if self.rules else None
        pending = self._pending[approval.approvalId] = _Pending()
        incarnation.approval_requests[req.id] = approval.approvalId
        self.ledger.put(approval)
        # A rule's decision follows at once: the event says so, and nobody is notified.
        extra: dict[str, Any] = {"rule": rule.name} if rule is not None else {}
        self.publish(
            _emit("approval.requested", approval,
                  f"{kind} approval requested ({approval.approvalId})", **extra)
        )
        delivered = False
        try:
            if not waits:
                self._choose(pending, "decline", "policy")
            elif rule is not None:
                self._choose(pending, rule.decision, f"rule:{rule.name}")
            else:
                with trio.move_on_after(timeout_s):
                    await pending.decided.wait()
                if not pending.decided.is_set():
                    self._choose(pending, on_timeout, "timeout")
            if pending.decision is None:
                # Expired (turn ended, child gone): the child no longer waits for an answer.
                raise UnsupportedServerRequest("approval expired")
            with suppress(ChildGone):
                await incarnation.client.reply(req, {"decision": pending.decision})
                delivered = True
            return REPLIED
        finally:
            self._pending.pop(approval.approvalId, None)
            incarnation.approval_requests.pop(req.id, None)
            self._settle(approval.approvalId, pending, delivered)

    def _choose(self, pending: _Pending, decision: Decision, decided_by: str) -> None:
        pending.decision = decision
        pending.decided_by = decided_by
        pending.decided.set()

    def _settle(self, approval_id: str, pending: _Pending, delivered: bool) -> None:
        """Record what became of a chosen decision (also when the request's task is cancelled:
        a decision that was not written to the child was not delivered)."""
        try:
            if pending.decision is None:
                return  # expired before anyone decided; already recorded
            pending.undelivered = not delivered
            if self.ledger.get(approval_id).state != "pending":
                return  # withdrawn, or expired with its child meanwhile: that record stands
            if delivered:
                self.publish(
                    self.ledger.resolve(approval_id, pending.decision, pending.decided_by))
            else:
                self.expire(approval_id, UNDELIVERED)
        finally:
            pending.settled.set()

    async def decide(self, approval_id: str, decision: Decision, decided_by: str) -> Approval:
        """Decide an approval; return it once the decision reached the child and is recorded.

        Raises:
            ApprovalNotFound: unknown id.
            ApprovalResolved: already decided (or being delivered), or expired.
            ChildUnavailable: the child that asked is gone; the decision was not delivered and
                the approval is recorded ``expired`` (``reason`` :data:`UNDELIVERED`).

        **Cancellation:** abandons the wait only; the decision is delivered and recorded anyway.
        """
        approval = self.ledger.get(approval_id)
        pending = self._pending.get(approval_id)
        if approval.state != "pending" or pending is None or pending.decided.is_set():
            raise ApprovalResolved(
                f"approval {approval_id} is already "
                f"{'decided' if approval.state == 'pending' else approval.state}",
                approvalId=approval_id,
                state=approval.state,
                decision=approval.decision,
            )
        self._choose(pending, decision, decided_by)
        await pending.settled.wait()
        approval = self.ledger.get(approval_id)
        if pending.undelivered:
            raise ChildUnavailable(
                f"approval {approval_id} could not be delivered: the codex app-server that "
                "asked is gone; the approval expired",
                approvalId=approval_id,
                state=approval.state,
            )
        if approval.state != "resolved":
            raise ApprovalResolved(
                f"approval {approval_id} is already {approval.state}",
                approvalId=approval_id,
                state=approval.state,
                decision=approval.decision,
            )
        return approval

    def withdrawn(self, incarnation: Incarnation, request_id: object) -> None:
        """``serverRequest/resolved``: the child no longer waits for this request."""
        if not isinstance(request_id, (int, str)):
            return
        approval_id = incarnation.approval_requests.get(request_id)
        if approval_id is not None and approval_id in self._pending:
            self.expire(approval_id, "the app-server withdrew the request")

    def expire(self, approval_id: str, reason: str) -> None:
        pending = self._pending.get(approval_id)
        if pending is not None and not pending.decided.is_set():
            pending.decided.set()
        emit = self.ledger.expire(approval_id, reason)
        if emit is not None:
            self.publish(emit)

    def expire_all(self, reason: str) -> None:
        for approval in self.ledger.list("pending"):
            self.expire(approval.approvalId, reason)
