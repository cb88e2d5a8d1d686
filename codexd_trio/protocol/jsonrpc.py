"""Sans-IO JSON-RPC connection for ``codex app-server``'s stdio transport.

The app-server speaks a JSON-RPC 2.0 dialect: one JSON object per ``\\n``-terminated line, no
``"jsonrpc"`` member, ``params`` required on every method (see ``codex-app-server.md`` §1). This
module owns framing and correlation only; it never touches a socket, a pipe or an event loop, so
it is tested synchronously. The Trio client in :mod:`codexd_trio.protocol.appserver` feeds it
lines and writes the bytes it returns.

Two id spaces share the wire: the ids *we* allocate for our requests, and the ids the server
allocates for its requests to us (approvals). Both count from 0, so they collide numerically;
classification therefore looks at ``method`` before ``id`` (a message with a ``method`` is never
a response).

Tolerance: every release of Codex adds fields, enum values, union variants and methods to what it
sends, so nothing received is decoded into a closed type (no ``msgspec.Struct``, ``Literal`` or
``forbid_unknown_fields`` here): a message is a plain dict classified by ``method``/``id``/
``result``/``error``, every other member is ignored, and params and results are handed on
verbatim (``tests/test_codex_shapes.py``). Strict shapes are for what *clients* send codexd.
"""

from __future__ import annotations

from collections.abc import KeysView
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "SERVER_OVERLOADED",
    "Connection",
    "ErrorResponse",
    "Incoming",
    "Malformed",
    "Notification",
    "ProtocolError",
    "RequestId",
    "Response",
    "ServerRequest",
]

RequestId = int | str

# Codes we send or interpret. The app-server itself answers every request-level error with
# -32600 and overload with -32001 (codex-app-server.md §7).
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603
SERVER_OVERLOADED = -32001

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class ProtocolError(Exception):
    """Something we were asked to send cannot be framed (bad id, unserialisable params)."""


@dataclass(frozen=True, slots=True)
class Response:
    """A successful answer to one of our requests."""

    id: RequestId
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """A JSON-RPC error answer to one of our requests."""

    id: RequestId
    code: int
    message: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A server notification; ``emitted_at_ms`` is the server's ``emittedAtMs`` when present."""

    method: str
    params: dict[str, Any]
    emitted_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ServerRequest:
    """A request from the server (approvals); answer it with :meth:`Connection.send_result`."""

    id: RequestId
    method: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that is not a message we can act on; ``reason`` says why. Log it and go on."""

    line: bytes
    reason: str


Incoming = Response | ErrorResponse | Notification | ServerRequest | Malformed


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: object) -> bool:
    # bool is an int subclass, but `true` is not a JSON-RPC id.
    return isinstance(value, int | str) and not isinstance(value, bool)


class Connection:
    """Framing and request/response correlation for one app-server connection.

    ``send_*`` methods return the exact bytes to write (one line, ``\\n``-terminated);
    :meth:`receive_line` turns one line read from the server into an :data:`Incoming` event.
    The connection never blocks and holds no I/O resources.
    """

    def __init__(self) -> None:
        self._next_id = 0
        # id -> method, so diagnostics can name what an answer belonged to.
        self._pending: dict[int, str] = {}

    @property
    def pending(self) -> KeysView[int]:
        """Ids of our requests that have not been answered yet (a live, read-only view)."""
        return self._pending.keys()

    def pending_method(self, request_id: int) -> str | None:
        """The method of the pending request ``request_id``, or None if it is not pending."""
        return self._pending.get(request_id)

    def send_request(self, method: str, params: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """Allocate an id for a request and frame it.

        ``params`` is always written (``{}`` when None): the app-server rejects a request
        without it, even for parameter-less methods.

        Returns:
            The allocated id (now pending) and the line to write.

        Raises:
            ProtocolError: ``params`` cannot be encoded as JSON (nothing becomes pending).
        """
        request_id = self._next_id
        line = self._frame({"id": request_id, "method": method, "params": _params(params)})
        self._next_id += 1
        self._pending[request_id] = method
        return request_id, line

    def send_notification(self, method: str, params: dict[str, Any] | None = None) -> bytes:
        """Frame a notification (no id, no answer expected)."""
        return self._frame({"method": method, "params": _params(params)})

    def send_result(self, id: RequestId, result: Any) -> bytes:
        """Frame a successful reply to a :class:`ServerRequest`, echoing its id unchanged."""
        _check_id(id)
        return self._frame({"id": id, "result": result})

    def send_error(self, id: RequestId, code: int, message: str, data: Any = None) -> bytes:
        """Frame an error reply to a :class:`ServerRequest` (Codex treats it as a decline)."""
        _check_id(id)
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        return self._frame({"id": id, "error": error})

    def abandon(self, request_id: int) -> bool:
        """Stop waiting for ``request_id`` (timed out or cancelled).

        A late answer to it is then classified as :class:`Malformed` instead of being
        delivered. Returns whether the id was pending.
        """
        return self._pending.pop(request_id, None) is not None

    def abandon_all(self) -> list[int]:
        """Forget every pending request (the peer went away); returns their ids."""
        ids = list(self._pending)
        self._pending.clear()
        return ids

    def receive_line(self, line: bytes) -> Incoming:
        """Classify one line from the server.

        Order (codex-app-server.md §1): ``method`` and ``id`` → :class:`ServerRequest`;
        ``method`` only → :class:`Notification`; ``id`` with ``result`` or ``error`` →
        :class:`Response` / :class:`ErrorResponse`, which pops the id from :attr:`pending`.
        Anything else — invalid JSON, a non-object, an answer to an id that is not pending —
        is :class:`Malformed`; the connection stays usable.

        An answer to a pending id whose ``error`` member is not a proper error object still
        yields an :class:`ErrorResponse` (code :data:`INTERNAL_ERROR` unless a usable code is
        present) so that the caller waiting for it is released rather than left to time out.
        """
        text = line.rstrip(b"\r\n")
        if not text.strip():
            return Malformed(line, "empty line")
        try:
            message = _decoder.decode(text)
        except msgspec.DecodeError as exc:
            return Malformed(line, f"invalid JSON: {exc}")
        if not isinstance(message, dict):
            return Malformed(line, f"not a JSON object: {type(message).__name__}")

        method = message.get("method")
        if method is not None:
            if not isinstance(method, str):
                return Malformed(line, "method is not a string")
            params = message.get("params", {})
            if params is None:
                params = {}
            if not isinstance(params, dict):
                return Malformed(line, f"params of {method} is not an object")
            if "id" in message:
                request_id = message["id"]
                if not _is_id(request_id):
                    return Malformed(line, f"server request {method} has an invalid id")
                return ServerRequest(request_id, method, params)
            emitted = message.get("emittedAtMs")
            return Notification(method, params, emitted if _is_int(emitted) else None)

        if "id" not in message or ("result" not in message and "error" not in message):
            return Malformed(line, "neither a request, a notification nor a response")
        request_id = message["id"]
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            # We only ever allocate integer ids, so any other id cannot be ours.
            return Malformed(line, f"response to an id we never sent: {request_id!r}")
        if self._pending.pop(request_id, None) is None:
            return Malformed(line, f"response to id {request_id} which is not pending")
        if "error" in message:
            return _error_response(request_id, message["error"])
        return Response(request_id, message["result"])

    @staticmethod
    def _frame(message: dict[str, Any]) -> bytes:
        try:
            return _encoder.encode(message) + b"\n"
        except (TypeError, msgspec.EncodeError) as exc:
            raise ProtocolError(f"cannot encode message as JSON: {exc}") from exc


def _params(params: dict[str, Any] | None) -> dict[str, Any]:
    return {} if params is None else params


def _check_id(value: object) -> None:
    if not _is_id(value):
        raise ProtocolError(f"invalid JSON-RPC id: {value!r}")


def _error_response(request_id: int, error: object) -> ErrorResponse:
    if not isinstance(error, dict):
        return ErrorResponse(request_id, INTERNAL_ERROR, f"malformed error member: {error!r}")
    code = error.get("code")
    message = error.get("message")
    return ErrorResponse(
        request_id,
        code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL_ERROR,
        message if isinstance(message, str) else repr(message),
        error.get("data"),
    )
