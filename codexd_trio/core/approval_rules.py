"""Approval rules and per-session timeouts (issue 25): decisions that need nobody.

Sans-IO: :class:`RuleBook` holds the settings of the node and of each session (the document
``state/codexd/approval-rules.json`` persists them) and answers two questions for the broker
(:class:`~codexd_trio.core.approvals.ApprovalBroker`): which rule, if any, decides an approval
now, and how long an approval waits and what codexd answers when nobody decided.

A rule can only decide what a person could: it applies to sessions whose approvals wait for a
client (``approvals: "clients"``), its decision is one a client may post, and it is recorded
``decidedBy: "rule:<name>"`` like any decision.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from codexd_trio.base.contracts import (
    ApprovalRule,
    ApprovalRules,
    ApprovalRulesBook,
    ApprovalRulesView,
    Session,
    TimeoutDecision,
)
from codexd_trio.store.documents import JsonDocument

__all__ = ["RuleBook", "approval_subjects"]

# File changes seen in ``item/started`` (their approval request carries no paths), kept per item
# id for the rules; bounded in case items never end.
_KEEP_FILE_CHANGES = 1024


def approval_subjects(kind: str, params: dict[str, Any], paths: Sequence[str] | None
                      ) -> tuple[list[str], list[str]] | None:
    """What a rule's ``match`` and ``cwdPrefix`` are checked against, or ``None`` when the
    approval cannot be matched (a file change whose paths were never seen).

    A command: its text, plus the single parsed command Codex gives in ``commandActions``
    (``/bin/bash -lc 'ls'`` is also ``ls``); its cwd. A file change: every path, each also the
    "cwd" a ``cwdPrefix`` must cover.
    """
    if kind == "commandExecution":
        command = params.get("command")
        if isinstance(command, list):
            command = " ".join(str(part) for part in command)
        if not isinstance(command, str):
            return None
        texts = [command]
        actions = params.get("commandActions")
        if isinstance(actions, list) and len(actions) == 1 and isinstance(actions[0], dict):
            inner = actions[0].get("command")
            if isinstance(inner, str):
                texts.append(inner)
        cwd = params.get("cwd")
        return texts, [cwd] if isinstance(cwd, str) else []
    if kind == "fileChange":
        if not paths:
            return None
        return list(paths), list(paths)
    return None


def _matches(rule: ApprovalRule, kind: str, params: dict[str, Any],
             paths: Sequence[str] | None) -> bool:
    if rule.kind not in ("any", kind):
        return False
    subjects = approval_subjects(kind, params, paths)
    if subjects is None:
        return False
    texts, places = subjects
    pattern = re.compile(rule.match)
    if kind == "fileChange":
        # Every path must be covered, or a rule for docs/ would also accept a change to src/.
        if not all(pattern.fullmatch(text) for text in texts):
            return False
    elif not any(pattern.fullmatch(text) for text in texts):
        return False
    if rule.cwdPrefix is not None:
        if not places:
            return False
        prefix = rule.cwdPrefix.rstrip("/") or "/"
        return all(place == prefix or place.startswith(prefix.rstrip("/") + "/")
                   for place in places)
    return True


class RuleBook:
    """The node's and every session's approval settings over their document.

    Args:
        doc: ``approval-rules.json`` (written by its own writer task).
        default_timeout_s: ``--approval-timeout``, used where neither the session nor the node
            sets ``timeoutS``.
    """

    def __init__(self, doc: JsonDocument[ApprovalRulesBook], default_timeout_s: float) -> None:
        self.doc = doc
        self.default_timeout_s = default_timeout_s
        self._file_changes: dict[str, list[str]] = {}

    # -- reading -------------------------------------------------------------------------------

    def node(self) -> ApprovalRules:
        return self.doc.value.node

    def session(self, session_id: str) -> ApprovalRules:
        return self.doc.value.sessions.get(session_id) or ApprovalRules()

    def _chain(self, session_id: str | None) -> list[ApprovalRules]:
        own = [self.session(session_id)] if session_id is not None else []
        return [*own, self.node()]

    def effective_rules(self, session_id: str | None) -> list[ApprovalRule]:
        return [rule for settings in self._chain(session_id) for rule in settings.rules]

    def timeout(self, session_id: str | None) -> tuple[float, TimeoutDecision]:
        """How long an approval of this session waits, and what codexd then answers."""
        seconds: float | None = None
        decision: TimeoutDecision | None = None
        for settings in self._chain(session_id):
            seconds = settings.timeoutS if seconds is None else seconds
            decision = settings.timeoutDecision if decision is None else decision
        return (self.default_timeout_s if seconds is None else seconds), decision or "decline"

    def view(self, session_id: str | None = None) -> ApprovalRulesView:
        seconds, decision = self.timeout(session_id)
        return ApprovalRulesView(
            scope="node" if session_id is None else "session",
            sessionId=session_id,
            settings=self.node() if session_id is None else self.session(session_id),
            effectiveRules=self.effective_rules(session_id),
            effectiveTimeoutS=seconds,
            effectiveTimeoutDecision=decision,
        )

    def decide(self, session: Session | None, kind: str, params: dict[str, Any],
               item_id: str | None) -> ApprovalRule | None:
        """The first rule that decides this approval now, or ``None`` (a person decides)."""
        if session is None or session.approvals != "clients":
            return None
        paths = self._file_changes.get(item_id) if item_id else None
        for rule in self.effective_rules(session.sessionId):
            if _matches(rule, kind, params, paths):
                return rule
        return None

    # -- changing ------------------------------------------------------------------------------

    def set_node(self, settings: ApprovalRules) -> None:
        self.doc.set(msgspec.structs.replace(self.doc.value, node=settings))

    def set_session(self, session_id: str, settings: ApprovalRules) -> None:
        sessions = dict(self.doc.value.sessions)
        if settings == ApprovalRules():
            sessions.pop(session_id, None)
        else:
            sessions[session_id] = settings
        self.doc.set(msgspec.structs.replace(self.doc.value, sessions=sessions))

    def saw_item(self, item: object) -> None:
        """``item/started``: remember a file change's paths (its approval request has none)."""
        if not isinstance(item, dict) or item.get("type") != "fileChange":
            return
        item_id = item.get("id")
        changes = item.get("changes")
        if not isinstance(item_id, str) or not isinstance(changes, list):
            return
        paths = [c["path"] for c in changes if isinstance(c, dict) and isinstance(c.get("path"),
                                                                                    str)]
        self._file_changes[item_id] = paths
        while len(self._file_changes) > _KEEP_FILE_CHANGES:
            self._file_changes.pop(next(iter(self._file_changes)))
