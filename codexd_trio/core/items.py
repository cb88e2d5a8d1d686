"""Codex's items in the transcript's shapes, read tolerantly; unified diffs; the per-item caps.
Pure functions, no state (the fold that uses them is :mod:`codexd_trio.core.conversation`).

What Codex sends is never decoded into a closed type: each member is read with a type check,
and an item kind codexd does not shape is passed through with its ``type`` (Codex's fields in
``data``), so a newer Codex's items still show.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from codexd_trio.base.contracts import TurnError, TurnStatus
from codexd_trio.base.transcript import ITEM_CAP_BYTES, FileChange, TranscriptItem, TranscriptTurn
from codexd_trio.core.turns import turn_error, turn_outcome

__all__ = [
    "approval_item",
    "cap_item",
    "epoch_iso",
    "shape_item",
    "turn_from_codex",
    "unified_diff",
]

_json = msgspec.json.Encoder()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def epoch_iso(seconds: Any) -> str | None:
    """Codex's epoch seconds (``turn.startedAt``, ``thread.createdAt``) as ISO-8601 UTC."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return None
    try:
        stamp = datetime.fromtimestamp(float(seconds), UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Diffs


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True) if text else []


def _hunk(lines: list[str], sign: str) -> str:
    body = "".join(sign + line if line.endswith("\n") else sign + line + "\n\\ No newline at "
                   "end of file\n" for line in lines)
    count = len(lines)
    if sign == "+":
        return f"@@ -0,0 +{1 if count else 0},{count} @@\n{body}"
    return f"@@ -{1 if count else 0},{count} +0,0 @@\n{body}"


def unified_diff(path: str, kind: str, diff: str, move_path: str | None = None) -> str:
    """A unified diff with ``---``/``+++`` headers for one change of a ``fileChange``.

    Codex (0.171, observed) sends an update as bare hunks (``@@ -1,3 +1,3 @@`` …) and an added
    file as its raw content; a deleted file's ``diff`` is its old content. A diff that already
    has headers is kept as it is.
    """
    if diff.startswith(("--- ", "diff --git ")):
        return diff
    name = path.lstrip("/")
    if kind == "add":
        return f"--- /dev/null\n+++ b/{name}\n" + (_hunk(_lines(diff), "+") if diff else "")
    if kind == "delete":
        return f"--- a/{name}\n+++ /dev/null\n" + (_hunk(_lines(diff), "-") if diff else "")
    target = (move_path or path).lstrip("/")
    return f"--- a/{name}\n+++ b/{target}\n" + diff


def _change(raw: Any) -> FileChange | None:
    if not isinstance(raw, dict):
        return None
    path = _str(raw.get("path")) or ""
    kind_raw = raw.get("kind")
    kind = "update"
    move_path: str | None = None
    if isinstance(kind_raw, dict):
        kind = _str(kind_raw.get("type")) or "update"
        move_path = _str(kind_raw.get("move_path")) or _str(kind_raw.get("movePath"))
    elif isinstance(kind_raw, str):
        kind = kind_raw
    if kind == "update" and move_path:
        kind = "move"
    diff = unified_diff(path, kind, _str(raw.get("diff")) or "", move_path)
    return FileChange(path=path, kind=kind, movePath=move_path, diff=diff,
                      diffBytes=len(diff.encode()))


def changes_of(raw: Any) -> list[FileChange]:
    """The ``changes`` of a ``fileChange`` item (unified diffs, nothing cut)."""
    if not isinstance(raw, list):
        return []
    return [c for c in (_change(entry) for entry in raw) if c is not None]


# --------------------------------------------------------------------------------------------
# Items

_SHAPED = frozenset({"userMessage", "agentMessage", "plan", "reasoning", "commandExecution",
                     "fileChange"})
# Members of Codex's items that are bookkeeping, not content (dropped from passed-through data).
_NOISE = frozenset({"type", "id", "startedAtMs", "completedAtMs"})


def _texts(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(
        part["text"] for part in content
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"),
                                                                                   str)
    )


def _summary(value: Any) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return ""
    parts: list[str] = []
    for part in value:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return "\n\n".join(parts)


def shape_item(item: dict[str, Any]) -> TranscriptItem:
    """One of Codex's ``ThreadItem``s in the transcript's shape, whole (nothing cut)."""
    kind = _str(item.get("type")) or "unknown"
    item_id = _str(item.get("id")) or ""
    if kind == "userMessage":
        content = item.get("content")
        items = [c for c in content if isinstance(c, dict)] if isinstance(content, list) else []
        return TranscriptItem(type=kind, id=item_id, text=_texts(content), content=items)
    if kind in ("agentMessage", "plan"):
        return TranscriptItem(type=kind, id=item_id, text=_str(item.get("text")) or "")
    if kind == "reasoning":
        return TranscriptItem(type=kind, id=item_id, summary=_summary(item.get("summary")))
    if kind == "commandExecution":
        output = _str(item.get("aggregatedOutput")) or ""
        return TranscriptItem(
            type=kind, id=item_id, command=_str(item.get("command")), cwd=_str(item.get("cwd")),
            status=_str(item.get("status")), exitCode=_int(item.get("exitCode")),
            durationMs=_int(item.get("durationMs")), output=output,
            outputBytes=len(output.encode()), truncated=False,
        )
    if kind == "fileChange":
        return TranscriptItem(type=kind, id=item_id, status=_str(item.get("status")),
                              changes=changes_of(item.get("changes")), truncated=False)
    data = {k: v for k, v in item.items() if k not in _NOISE}
    return TranscriptItem(type=kind, id=item_id, data=data)


def approval_item(approval: dict[str, Any], changes: list[FileChange] | None) -> TranscriptItem:
    """An ``approval`` item from an approval record (``approval.*`` events' ``detail``).

    A file-change request carries no diff (Codex sends it with ``item/started`` of the
    ``fileChange``): ``changes`` are that item's.
    """
    params = approval.get("params") if isinstance(approval.get("params"), dict) else {}
    assert isinstance(params, dict)
    approval_id = _str(approval.get("approvalId")) or ""
    kind = _str(approval.get("kind")) or "unknown"
    return TranscriptItem(
        type="approval", id=approval_id, approvalId=approval_id, kind=kind,
        itemId=_str(approval.get("itemId")),
        command=_str(params.get("command")) if kind == "commandExecution" else None,
        cwd=_str(params.get("cwd")) if kind == "commandExecution" else None,
        reason=_str(params.get("reason")),
        changes=changes if kind == "fileChange" else None,
        status=_str(approval.get("state")) or "pending",
        decision=_str(approval.get("decision")), decidedBy=_str(approval.get("decidedBy")),
        decidedAt=_str(approval.get("resolvedAt")),
    )


# --------------------------------------------------------------------------------------------
# Caps


def _cut_text(text: str, limit: int) -> str:
    """The first and last ``limit / 2`` bytes of ``text`` around a line saying what was cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    half = limit // 2
    head = data[:half].decode(errors="ignore")
    tail = data[-half:].decode(errors="ignore")
    omitted = len(data) - len(head.encode()) - len(tail.encode())
    return f"{head}\n[… {omitted} bytes omitted …]\n{tail}"


def _cut_head(text: str, limit: int) -> str:
    return text.encode()[:max(0, limit)].decode(errors="ignore")


def cap_item(item: TranscriptItem, limit: int = ITEM_CAP_BYTES) -> tuple[TranscriptItem, bool]:
    """``(the item as a page carries it, whether anything was cut)``."""
    replace = msgspec.structs.replace
    if item.type == "commandExecution" and item.output is not None:
        if (item.outputBytes or 0) <= limit:
            return item, False
        return replace(item, output=_cut_text(item.output, limit), truncated=True), True
    if item.changes:
        total = sum(c.diffBytes for c in item.changes)
        if total <= limit:
            return item, False
        budget, changes = limit, []
        for change in item.changes:
            if change.diffBytes <= budget:
                changes.append(change)
                budget -= change.diffBytes
            else:
                changes.append(replace(change, diff=_cut_head(change.diff, budget),
                                       truncated=True))
                budget = 0
        return replace(item, changes=changes, truncated=True), True
    for name in ("text", "summary"):
        value = getattr(item, name)
        if isinstance(value, str) and len(value) > limit // 4 and len(value.encode()) > limit:
            return replace(item, **{name: _cut_text(value, limit)}, truncated=True), True
    if item.data is not None:
        size = len(_json.encode(item.data))
        if size > limit:
            return replace(item, data=None, dataBytes=size, truncated=True), True
    return item, False


# --------------------------------------------------------------------------------------------
# Turns


def turn_from_codex(turn: dict[str, Any], *, origin: str = "imported") -> TranscriptTurn:
    """A turn of ``thread/read`` / ``thread/turns/list`` (``itemsView: full``) as a transcript
    turn, whole."""
    raw_items = turn.get("items")
    items = [shape_item(i) for i in raw_items if isinstance(i, dict)] if isinstance(
        raw_items, list) else []
    status: TurnStatus
    raw_status = turn.get("status")
    error: TurnError | None = None
    if raw_status == "inProgress":
        status = "inProgress"
    else:
        status, _ = turn_outcome(turn)
        if turn.get("error"):
            error = turn_error(turn.get("error"))
    first_user = next((i for i in items if i.type == "userMessage"), None)
    return TranscriptTurn(
        turnId=_str(turn.get("id")) or "",
        status=status,
        startedAt=epoch_iso(turn.get("startedAt")),
        completedAt=epoch_iso(turn.get("completedAt")),
        input=list(first_user.content or []) if first_user is not None else [],
        error=error,
        items=items,
        origin=origin,
    )
