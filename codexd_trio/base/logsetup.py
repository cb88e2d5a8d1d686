"""Logging of every daemon: ``--log-format json|text`` (or ``BAA_LOG_FORMAT``).

``json`` (what the launchd and systemd templates set): one JSON object per line with
``ts``, ``level``, ``logger``, ``msg``, ``requestId`` (the request being served, if any) and
the record's context (``sessionId``, ``turnId``, ``status``, ``durationMs`` … passed as
``extra=``). ``text`` (the default, for a terminal): one readable line per record. Both are
stdlib logging, which is synchronous and safe under Trio. Records go to stderr, or with
``--log-file`` (``BAA_CODEXD_LOG_FILE``, ``BAA_CONDUCTOR_LOG_FILE``, ``BAA_STATUS_API_LOG_FILE``;
the service templates set it) to a file that rolls over by size.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codexd_trio.base.context import current_request_id

__all__ = [
    "LOG_FILE_BACKUPS", "LOG_FILE_MAX_BYTES", "LOG_FORMATS", "JsonFormatter", "resolve_log_file",
    "resolve_log_format", "setup_logging",
]

LOG_FORMATS = ("text", "json")
# A log file (--log-file) rolls over at this size and keeps this many older files: a daemon that
# runs for months under launchd (whose StandardErrorPath nothing rotates) stays within ~128 MiB.
LOG_FILE_MAX_BYTES = 32 * 1024 * 1024
LOG_FILE_BACKUPS = 3
# Libraries whose INFO lines are per request: kept to their warnings (see setup_logging).
_CHATTY_LIBRARIES = ("httpx", "httpcore")
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


def resolve_log_file(flag: str | None, variable: str,
                     env: Mapping[str, str] | None = None) -> Path | None:
    """The flag, else the daemon's own variable (``BAA_CODEXD_LOG_FILE`` …), else ``None``
    (stderr). A per-daemon name: daemons started from one shell must not share a file."""
    environ = os.environ if env is None else env
    value = (flag or environ.get(variable) or "").strip()
    return Path(value).expanduser().absolute() if value else None


def setup_logging(log_format: str, *, level: str | None = None, log_file: Path | None = None,
                  max_bytes: int = LOG_FILE_MAX_BYTES, backups: int = LOG_FILE_BACKUPS) -> None:
    """Send every record of the process to stderr, or to ``log_file`` (rolled over past
    ``max_bytes``, ``backups`` older files kept), in ``log_format`` (replaces handlers).

    Raises:
        OSError: the log file cannot be opened (the message is the one line to show).
    """
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
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
    # httpx logs every request it sends at INFO: one line per proxied request (and per probe),
    # formatted and written on the hot path, repeating what the access log already says. Only
    # its warnings, unless the daemon logs at DEBUG.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
