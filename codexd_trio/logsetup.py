"""Logging of every daemon: ``--log-format json|text`` (or ``BAA_LOG_FORMAT``).

``json`` (what the launchd and systemd templates set): one JSON object per line on stderr with
``ts``, ``level``, ``logger``, ``msg``, ``requestId`` (the request being served, if any) and
the record's context (``sessionId``, ``turnId``, ``status``, ``durationMs`` … passed as
``extra=``). ``text`` (the default, for a terminal): one readable line per record. Both are
stdlib logging, which is synchronous and safe under Trio.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from codexd_trio.web.context import current_request_id

__all__ = ["LOG_FORMATS", "JsonFormatter", "resolve_log_format", "setup_logging"]

LOG_FORMATS = ("text", "json")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "requestId",
}


class _RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served (``None`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "requestId", None) is None:
            record.requestId = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "requestId": getattr(record, "requestId", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        # default=str: a context value that is not JSON (a Path, an exception) still logs.
        return json.dumps(out, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "requestId", None)
        return f"{line} [{request_id}]" if request_id else line


def resolve_log_format(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    """The flag, else ``BAA_LOG_FORMAT``, else ``text``.

    Raises:
        ValueError: not ``json`` or ``text`` (the message is the one line to show).
    """
    environ = os.environ if env is None else env
    value = (flag or environ.get("BAA_LOG_FORMAT") or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"log format must be json or text, got {value!r} (--log-format or "
                         "BAA_LOG_FORMAT)")
    return value


def setup_logging(log_format: str, *, level: str | None = None) -> None:
    """Send every record of the process to stderr in ``log_format`` (replaces handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("BAA_LOG_LEVEL", "INFO")).upper())
