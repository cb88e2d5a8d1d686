"""Every daemon's answers: the JSON envelope, the error-code → HTTP-status table, and decoding of
request bodies and query parameters into typed values (or the matching 400)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from quart import Response

from codexd_trio.base.contracts import ErrorBody, ErrorEnvelope
from codexd_trio.base.errors import ApiError, InvalidJson, InvalidRequest

__all__ = [
    "STATUS_FOR_CODE",
    "api_error_response",
    "decode_body",
    "decode_cursor",
    "encode_cursor",
    "envelope",
    "error",
    "error_response",
    "int_arg",
    "status_for",
]

T = TypeVar("T")
_encoder = msgspec.json.Encoder()

# The one place where an error code becomes an HTTP status (CONTRACT.md's table).
STATUS_FOR_CODE: dict[str, int] = {
    "invalid_json": 400,
    "invalid_request": 400,
    "not_found": 404,
    "turn_in_progress": 409,
    "session_closed": 409,
    "no_active_turn": 409,
    "turn_mismatch": 409,
    "approval_resolved": 409,
    "queue_entry_started": 409,
    "thread_in_use": 409,
    "idempotency_mismatch": 422,
    "app_server_error": 502,
    "child_unavailable": 503,
    "store_unavailable": 503,
    "shutting_down": 503,
    # Answered by the shared web layer and the caller guard.
    "unauthorized": 401,
    "origin_not_allowed": 403,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "host_not_allowed": 421,
    "internal_error": 500,
    # The conductor's.
    "system_paused": 423,
    "system_draining": 423,
    "codexd_unavailable": 503,
    "not_ready": 503,
    "not_leader": 503,
    # The fleet's (issue 28): a session's owner node does not answer; no node fits a placement.
    "node_unavailable": 503,
    "no_node_available": 503,
    # The conductor's pairing codes, device tokens and one-tap action links (issue 25).
    "pairing_code_invalid": 401,
    "action_invalid": 403,
    "action_used": 409,
    "action_expired": 410,
    "rate_limited": 429,
}


def status_for(exc: ApiError) -> int:
    return STATUS_FOR_CODE.get(exc.code, 500)


def envelope(data: Any, status: int = 200) -> Response:
    body = _encoder.encode({"ok": True, "data": data})
    return Response(body, status=status, content_type="application/json")


def error_response(code: str, message: str, status: int, /, **details: Any) -> Response:
    """The error envelope (:class:`~codexd_trio.base.contracts.ErrorEnvelope`, its one type)."""
    body = _encoder.encode(
        ErrorEnvelope(error=ErrorBody(code=code, message=message, details=details))
    )
    return Response(body, status=status, content_type="application/json")


def api_error_response(exc: ApiError) -> Response:
    """An :class:`~codexd_trio.base.errors.ApiError` as its envelope, with its code's status."""
    return error_response(exc.code, exc.message, status_for(exc), **exc.details)


def error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Response:
    """:func:`error_response` with the status first and details as a dict (the conductor's
    call sites)."""
    return error_response(code, message, status, **(details or {}))


_PATH_RE = re.compile(r" - at `([^`]*)`$")
# msgspec names an unknown or a missing key in the message, at its object's path.
_KEY_RE = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]*)`")
# What the contracts' constraints mean, in words (msgspec says the constraint itself).
_PLAIN = {
    "Expected `str` matching regex '\\S'": "expected text that is not empty or only whitespace",
    "Expected `array` of length >= 1": "expected a non-empty array",
}


def decode_body(data: bytes, type_: type[T]) -> T:
    """Decode a JSON body into ``type_`` or raise the matching 400 error."""
    if not data.strip():
        raise InvalidJson("the request body is empty; send a JSON object")
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH_RE.search(text)
        field = match.group(1) if match else "$"
        if key := _KEY_RE.search(text):
            field = f"{field}.{key.group(1)}"
        reason = _PATH_RE.sub("", text)
        reason = _PLAIN.get(reason, reason)
        raise InvalidRequest(
            f"invalid request body at {field}: {reason}", field=field, path=field
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidJson(f"the request body is not valid JSON: {exc}") from None


def int_arg(
    name: str, raw: str | None, *, default: int | None, minimum: int = 0,
    maximum: int | None = None,
) -> int | None:
    """A whole-number query parameter; 400 ``invalid_request`` naming it (and the maximum, in
    ``details.max``) when it is not one or out of range."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter {name} must be a whole number", field=name) from None
    if value < minimum:
        raise InvalidRequest(f"query parameter {name} must be at least {minimum}", field=name)
    if maximum is not None and value > maximum:
        raise InvalidRequest(f"query parameter {name} must be at most {maximum}", field=name,
                             max=maximum)
    return value




def encode_cursor(position: int | None) -> str | None:
    """An opaque page cursor for a list position (``None`` on the last page)."""
    return None if position is None else _wrap(f"p{position}")


def decode_cursor(raw: str | None) -> int:
    """The list position a cursor from :func:`encode_cursor` stands for; 400 if it is not one."""
    if not raw:
        return 0
    return _unwrap(raw, "p", _position, "cursor is not one this API handed out (use nextCursor)")


def encode_key_cursor(key: tuple[float, str] | None) -> str | None:
    """An opaque page cursor for a ``(time, id)`` key (the activity order's)."""
    return None if key is None else _wrap(f"a{key[0]!r}:{key[1]}")


def decode_key_cursor(raw: str | None) -> tuple[float, str] | None:
    """The key a cursor from :func:`encode_key_cursor` stands for; 400 if it is not one."""
    if not raw:
        return None
    return _unwrap(raw, "a", _key,
                   "cursor is not one this API handed out for this order (use nextCursor)")


def encode_turn_cursor(order: str, ordinal: int | None) -> str | None:
    """An opaque transcript cursor: the turn ordinal to continue from, in its order."""
    return None if ordinal is None else _wrap(f"t{order[0]}{ordinal}")


def decode_turn_cursor(raw: str | None, order: str) -> int | None:
    """The ordinal of a cursor from :func:`encode_turn_cursor` for ``order``; 400 if it is not
    one (or belongs to the other order)."""
    if not raw:
        return None
    return _unwrap(raw, "t" + order[0], _position,
                   "cursor is not one this API handed out for this order (use nextCursor)")


def _wrap(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unwrap(raw: str, kind: str, parse: Callable[[str], T], message: str) -> T:
    # A cursor is its kind's letter and body, base64url without padding.
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        if not text.startswith(kind):
            raise ValueError(text)
        return parse(text[len(kind):])
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidRequest(message, field="cursor") from None


def _position(body: str) -> int:
    if not body.isdigit():
        raise ValueError(body)
    return int(body)


def _key(body: str) -> tuple[float, str]:
    time_text, sep, sid = body.partition(":")
    if not sep:
        raise ValueError(body)
    return float(time_text), sid
