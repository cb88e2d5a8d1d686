"""Typed errors that the API maps to envelope codes (one class, one code).

Lower layers raise these (or their own typed errors, translated with ``raise ... from``); the
API layer turns ``ApiError`` into ``{"ok": false, "error": {code, message, details}}``.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error a client should see; ``code`` and ``status`` come from CONTRACT.md."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(ApiError):
    code = "invalid_request"
    status = 400


class InvalidJson(ApiError):
    code = "invalid_json"
    status = 400


class NotFound(ApiError):
    code = "not_found"
    status = 404


class ApprovalNotFound(NotFound):
    pass


class ApprovalResolved(ApiError):
    code = "approval_resolved"
    status = 409


class IdempotencyMismatch(ApiError):
    code = "idempotency_mismatch"
    status = 422


class ChildUnavailable(ApiError):
    code = "child_unavailable"
    status = 503


class ShuttingDown(ApiError):
    code = "shutting_down"
    status = 503


class AppServerFailure(ApiError):
    code = "app_server_error"
    status = 502
