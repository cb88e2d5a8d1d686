"""The request being served: its id (``X-Request-Id``) and matched route, as a contextvar.

:class:`~codexd_trio.web.observe.Observe` sets it for each request; Trio copies the context
into every task started from the request's task, so logs and events written while handling the
request (also in ``run_detached`` operations it spawns) see the same id. Work started *later*
by other tasks (the child's reader, timers) does not: pass the id explicitly there.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["CURRENT", "RequestInfo", "accept_request_id", "current_request_id", "new_request_id"]

# Short and printable: it goes into logs, events and response headers verbatim.
_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")


@dataclass
class RequestInfo:
    request_id: str
    method: str
    path: str
    # The route template (``/v1/codexd/sessions/{session_id}``), set once Quart matched it.
    route: str | None = None


CURRENT: ContextVar[RequestInfo | None] = ContextVar("baa_request", default=None)


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


def accept_request_id(raw: bytes | str | None) -> str:
    """The caller's ``X-Request-Id`` if it is short and printable, else a new one."""
    if raw is None:
        return new_request_id()
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    text = text.strip()
    return text if _VALID_ID.fullmatch(text) else new_request_id()


def current_request_id() -> str | None:
    info = CURRENT.get()
    return info.request_id if info is not None else None
