"""Typed errors that the API maps to envelope codes (one class, one code).

Lower layers raise these (or their own typed errors, translated with ``raise ... from``). They
carry a code, never an HTTP status: the API layer owns the one code → status table
(``codexd_trio.web.envelope.STATUS_FOR_CODE``) and turns an ``ApiError`` into
``{"ok": false, "error": {code, message, details}}``.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error a client should see; ``code`` comes from CONTRACT.md."""

    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(ApiError):
    code = "invalid_request"


class InvalidJson(ApiError):
    code = "invalid_json"


class NotFound(ApiError):
    code = "not_found"


class ApprovalNotFound(NotFound):
    pass


class ApprovalResolved(ApiError):
    code = "approval_resolved"


class IdempotencyMismatch(ApiError):
    code = "idempotency_mismatch"


class ChildUnavailable(ApiError):
    code = "child_unavailable"


class ShuttingDown(ApiError):
    code = "shutting_down"


class StoreUnavailable(ApiError):
    """A change could not be made durable in time (the disk refuses writes); it is kept and
    written once the disk has room."""

    code = "store_unavailable"


class DomainError(ApiError):
    """A command the current state of the sessions refuses."""

    code = "invalid_request"


class SessionNotFound(DomainError):
    code = "not_found"


class TurnInProgress(DomainError):
    code = "turn_in_progress"


class SessionClosed(DomainError):
    code = "session_closed"


class NoActiveTurn(DomainError):
    code = "no_active_turn"


class TurnMismatch(DomainError):
    code = "turn_mismatch"


class ThreadInUse(ApiError):
    """A thread is already held by a codexd session (``details.sessionId``)."""

    code = "thread_in_use"
