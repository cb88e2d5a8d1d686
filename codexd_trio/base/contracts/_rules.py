"""Approval rules (issue 25): decisions that need nobody. Per node and per session; codexd owns
them, because they act on approvals, which are codexd's truth."""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from codexd_trio.base.contracts._vocabulary import Decision, RuleKind, TimeoutDecision

# Bounds that keep a rule list something a person reads, and a regex something cheap to compile.
MAX_RULES = 100


MAX_RULE_PATTERN = 1000


MAX_APPROVAL_TIMEOUT_S = 7 * 24 * 3600.0


class ApprovalRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One rule: when an approval of ``kind`` matches, ``decision`` is given at once and
    recorded ``decidedBy: "rule:<name>"``.

    ``match`` is a Python regex that must match the *whole* command (or every changed path of
    a file change); ``cwdPrefix`` (optional) must be a prefix of the command's cwd (of every
    path for a file change). A rule only ever answers for sessions whose approvals wait for a
    client (``approvals: "clients"``): it decides nothing a person could not.
    """

    name: str
    kind: RuleKind = "any"
    match: str
    cwdPrefix: str | None = None
    decision: Decision

    def __post_init__(self) -> None:
        if not (0 < len(self.name) <= 64) or not all(c.isalnum() or c in "._-" for c in self.name):
            raise ValueError("Expected a rule name of 1-64 letters, digits, '.', '_' or '-' "
                             "- at `$.name`")
        if len(self.match) > MAX_RULE_PATTERN:
            raise ValueError(f"Expected a pattern of at most {MAX_RULE_PATTERN} characters "
                             "- at `$.match`")
        try:
            re.compile(self.match)
        except re.error as exc:
            raise ValueError(f"Expected a valid regular expression ({exc}) - at `$.match`") \
                from None


class ApprovalRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The approval settings of the node or of one session (``POST`` replaces them whole).

    ``timeoutS``/``timeoutDecision``: how long an approval waits for a client and what codexd
    answers then (``None``: the session falls back to the node's, the node to
    ``--approval-timeout`` and ``decline``).
    """

    rules: list[ApprovalRule] = msgspec.field(default_factory=list)
    timeoutS: float | None = None
    timeoutDecision: TimeoutDecision | None = None

    def __post_init__(self) -> None:
        if len(self.rules) > MAX_RULES:
            raise ValueError(f"Expected at most {MAX_RULES} rules - at `$.rules`")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("Expected distinct rule names - at `$.rules`")
        if self.timeoutS is not None and not 0 <= self.timeoutS <= MAX_APPROVAL_TIMEOUT_S:
            raise ValueError(f"Expected 0 <= timeoutS <= {MAX_APPROVAL_TIMEOUT_S:.0f} "
                             "- at `$.timeoutS`")


class ApprovalRulesBook(msgspec.Struct, frozen=True, kw_only=True):
    """``state/codexd/approval-rules.json``: the node's settings and each session's."""

    node: ApprovalRules = msgspec.field(default_factory=ApprovalRules)
    sessions: dict[str, ApprovalRules] = msgspec.field(default_factory=dict)


class ApprovalRulesView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET``/``POST`` of ``/v1/codexd/approval-rules`` and
    ``/v1/codexd/sessions/{id}/approval-rules``: the settings stored at that scope and what is
    in force there (the session's own first, then the node's)."""

    scope: Literal["node", "session"]
    sessionId: str | None = None
    settings: ApprovalRules
    # The rules evaluated for this scope, in order (a session's own, then the node's).
    effectiveRules: list[ApprovalRule]
    effectiveTimeoutS: float
    effectiveTimeoutDecision: TimeoutDecision
