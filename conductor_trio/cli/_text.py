"""What ``conductor status`` and ``pause|resume|drain`` print for a person (``--json`` prints
the envelope instead). Pure functions over the answers' ``data``."""

from __future__ import annotations

from typing import Any

__all__ = ["mode_text", "status_text"]


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "".join(f"{key.ljust(width)}  {value}\n" for key, value in rows)


def _uptime(seconds: float) -> str:
    s = int(seconds)
    parts = [(s // 86400, "d"), (s % 86400 // 3600, "h"), (s % 3600 // 60, "m"), (s % 60, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


def _mode_text(mode: dict[str, Any]) -> str:
    text = str(mode.get("mode", "?"))
    extras = [f"reason {mode['reason']!r}" if mode.get("reason") else "",
              f"by {mode['requested_by']}" if mode.get("requested_by") else "",
              f"since {mode['updated_at']}" if mode.get("updated_at") else ""]
    extra = ", ".join(e for e in extras if e)
    return f"{text} ({extra})" if extra else text


def _turns_text(turns: list[dict[str, Any]] | None, count: int | None) -> str:
    if turns is None:
        return "unknown (codexd not reachable)"
    if not turns:
        return "none running"
    listed = ", ".join(f"{t.get('sessionId')} (turn {t.get('turnId')})" for t in turns[:3])
    return f"{count if count is not None else len(turns)} running: {listed}" + (
        ", ..." if len(turns) > 3 else "")


def status_text(data: dict[str, Any]) -> str:
    """``GET /v1/status`` for a person (the same facts as the status page)."""
    node, lease, codexd = data.get("node") or {}, data.get("lease") or {}, data.get("codexd") or {}
    child = codexd.get("child") or {}
    sessions = data.get("sessions") or {}
    role = f"{data.get('role')} ({lease.get('store')} lease, term {lease.get('term')}, " \
           f"held by {lease.get('holder_id') or 'nobody'})"
    reach = "up" if codexd.get("reachable") else f"down ({codexd.get('error') or 'no answer'})"
    if child:
        reach += f", child {child.get('status')} (pid {child.get('pid')}, " \
                 f"restarts {child.get('restarts')})"
    rows = [
        ("conductor", f"{node.get('local_api')} (node {node.get('node_id')}, pid "
                      f"{node.get('pid')}, up {_uptime(float(node.get('uptime_s') or 0))}, "
                      f"version {node.get('version')})"),
        ("role", role),
        ("mode", _mode_text(data.get("mode") or {})),
        ("codexd", f"{codexd.get('base_url')} {reach}"),
        ("sessions", f"{sessions.get('count')} ({sessions.get('active_count')} active)"
                     if sessions.get("count") is not None else "unknown"),
        ("turns", _turns_text(data.get("active_turns"), None)),
        ("last event", str(data.get("last_event_seq") if data.get("last_event_seq") is not None
                           else "-")),
    ]
    rows += [("warning", w) for w in data.get("warnings") or []]
    return _rows(rows)


def mode_text(data: dict[str, Any]) -> str:
    """A ``/v1/system/*`` answer for a person: the mode now and what it means for the turns."""
    rows = [("mode", _mode_text(data)), ("role", str(data.get("role"))),
            ("turns", _turns_text(data.get("active_turns"), data.get("active_turn_count")))]
    if data.get("mode") == "draining":
        rows.append(("drained", "yes: no turn is running" if data.get("drained")
                     else "not yet: running turns finish first (conductor status)"))
    if not data.get("codexd_reachable"):
        rows.append(("codexd", "not reachable"))
    return _rows(rows)
