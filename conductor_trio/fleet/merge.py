"""Merged pages across nodes (sans-IO): the fleet's sessions newest activity first, its
approvals newest first, and their opaque cursors.

**Sessions.** Every codexd pages its sessions by ``(updatedAt, sessionId)``, newest first
(``order=activity``), below a key. The same key orders every node's sessions, and session ids
are unique across nodes (uuid4), so the fleet's order is that key over the union: a page asks
every node for ``limit`` sessions below the last key shown, merges, and keeps ``limit``. The
fleet's cursor is that last key; each node gets it as its own activity cursor. Nothing is
listed twice and nothing skipped (a session active again while a person pages moves to the top,
as on one node). A node that does not answer is left out of that page and named in ``nodes``;
once it answers again its sessions below the cursor appear on the pages still to come.

codexd's activity cursor is ``a<epoch seconds repr>:<sessionId>`` in URL-safe base64 without
padding (``codexd_trio.web.envelope.encode_key_cursor``, epoch seconds from
``codexd_trio.store.sessiontable.activity_time``); the conductor may not import codexd's store
or web layers, so :func:`node_cursor` builds the same text and a unit test pins it to
codexd's functions.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

__all__ = [
    "BadCursor",
    "activity_time",
    "decode_fleet_cursor",
    "encode_fleet_cursor",
    "merge_approvals",
    "merge_sessions",
    "node_cursor",
]


class BadCursor(ValueError):
    """A cursor this API did not hand out."""


class _Key(msgspec.Struct, frozen=True, array_like=True):
    updated_at: str
    item_id: str


def activity_time(updated_at: str) -> float:
    """``updatedAt`` as epoch seconds (0 for a value that is not an ISO time), as codexd."""
    try:
        return datetime.fromisoformat(updated_at).timestamp()
    except ValueError:
        return 0.0


def _unpadded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def node_cursor(updated_at: str, session_id: str) -> str:
    """codexd's ``order=activity`` cursor for the key ``(updatedAt, sessionId)``."""
    return _unpadded(f"a{activity_time(updated_at)!r}:{session_id}".encode())


def encode_fleet_cursor(updated_at: str, item_id: str) -> str:
    return _unpadded(b"f" + msgspec.json.encode(_Key(updated_at, item_id)))


def decode_fleet_cursor(raw: str | None) -> tuple[str, str] | None:
    """The key a fleet cursor stands for (``None``: the first page).

    Raises:
        BadCursor: not one this API handed out.
    """
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        if not text.startswith(b"f"):
            raise BadCursor(raw)
        key = msgspec.json.decode(text[1:], type=_Key)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise BadCursor(raw) from exc
    return key.updated_at, key.item_id


def _session_key(item: Mapping[str, Any]) -> tuple[float, str]:
    return activity_time(str(item.get("updatedAt") or "")), str(item.get("sessionId") or "")


def merge_sessions(pages: Mapping[str, tuple[list[dict[str, Any]], bool]], limit: int
                   ) -> tuple[list[dict[str, Any]], str | None]:
    """``pages``: per node, its page (newest activity first) and whether it has more. Returns
    the merged page, each session with ``node`` added, and the cursor of the next page."""
    merged: list[tuple[tuple[float, str], str, dict[str, Any]]] = []
    for node, (items, _) in pages.items():
        merged.extend((_session_key(item), node, item) for item in items)
    merged.sort(key=lambda entry: entry[0], reverse=True)
    page = merged[:limit]
    more = len(merged) > limit or any(has_more for _, has_more in pages.values())
    out = [{**item, "node": node} for _, node, item in page]
    if not more or not page:
        return out, None
    last = page[-1][2]
    return out, encode_fleet_cursor(str(last.get("updatedAt") or ""),
                                    str(last.get("sessionId") or ""))


def merge_approvals(pages: Mapping[str, Iterable[dict[str, Any]]], limit: int,
                    after: tuple[str, str] | None) -> tuple[list[dict[str, Any]], str | None]:
    """Every node's approvals (codexd lists them whole), newest ``createdAt`` first, below the
    cursor's key; ``limit`` of them and the next cursor."""
    merged: list[tuple[tuple[float, str], str, dict[str, Any]]] = []
    below = None if after is None else (activity_time(after[0]), after[1])
    for node, items in pages.items():
        for item in items:
            key = (activity_time(str(item.get("createdAt") or "")),
                   str(item.get("approvalId") or ""))
            if below is None or key < below:
                merged.append((key, node, item))
    merged.sort(key=lambda entry: entry[0], reverse=True)
    page = merged[:limit]
    out = [{**item, "node": node} for _, node, item in page]
    if len(merged) <= limit or not page:
        return out, None
    last = page[-1][2]
    return out, encode_fleet_cursor(str(last.get("createdAt") or ""),
                                    str(last.get("approvalId") or ""))
