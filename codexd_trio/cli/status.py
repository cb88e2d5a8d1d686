"""``codexd status``: what codexd is, from its files and its API, up or down (what it did is
``codexd events``, :mod:`.events`)."""


from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import trio

from codexd_trio.base.contracts import (
    DaemonState,
    Event,
    Identity,
    RecentEvents,
    RecentEventsView,
    SessionRegistry,
)
from codexd_trio.cli.parsers import status_parser
from codexd_trio.core.config import CodexdConfig

# --------------------------------------------------------------------------- status


def _read(path: Path, type_: type[Any]) -> Any:
    from codexd_trio.store.documents import StoreError, read_document

    try:
        return read_document(path, type_)
    except StoreError as exc:
        return {"error": str(exc)}


def _status_data(config: CodexdConfig) -> dict[str, Any]:
    from codexd_trio.client import CodexdClient, CodexdError, CodexdUnavailable

    state_dir = config.codexd_state
    identity = _read(state_dir / "identity.json", Identity)
    state = _read(state_dir / "daemon-state.json", DaemonState)
    registry = _read(state_dir / "session-registry.json", SessionRegistry)
    base = config.local_api_base
    if isinstance(state, DaemonState) and state.resolvedBaseUrl and config.port == 0:
        base = state.resolvedBaseUrl
    api: dict[str, Any] = {"base": base, "reachable": False}
    live: dict[str, Any] = {}

    async def probe() -> None:
        async with CodexdClient(base, timeout=2.0, token=config.token) as client:
            try:
                api["status"] = await client.status()
                api["reachable"] = True
                live["sessions"] = [msgspec.to_builtins(s) for s in await client.list_sessions()]
            except CodexdUnavailable as exc:
                api["error"] = str(exc)
            except CodexdError as exc:
                api["reachable"] = True
                api["error"] = f"{exc.code}: {exc.message}"

    trio.run(probe)
    recent = _read(state_dir / "recent-events.json", RecentEvents)
    # The seed's shape, read from the files whether or not the daemon runs (the daemon keeps
    # them current), plus what the API said: the same answer up or down.
    return {
        "daemon": msgspec.to_builtins(state),
        "sessionRegistry": (
            {"sessions": live["sessions"]} if "sessions" in live
            else msgspec.to_builtins(registry) if isinstance(registry, SessionRegistry)
            else {"sessions": []}
        ),
        "identity": msgspec.to_builtins(identity),
        "recentEvents": (
            api["status"]["snapshot"]["recentEvents"] if "status" in api
            else _recent_view(recent.events if isinstance(recent, RecentEvents) else [])
        ),
        "api": api,
        "running": api["reachable"],
        "files": {
            "stateDir": str(state_dir),
            "logsDir": str(config.codexd_logs),
            "sessionCount": len(registry.sessions) if isinstance(registry, SessionRegistry) else 0,
        },
    }


def _recent_view(events: list[Event]) -> dict[str, Any]:
    """The snapshot's ``recentEvents`` shape, from the file, while the daemon is down."""
    view = RecentEventsView(count=len(events), lastSeq=events[-1].seq if events else 0,
                            events=events)
    out: dict[str, Any] = msgspec.to_builtins(view)
    return out


def _status_exit(data: dict[str, Any]) -> int:
    """See :data:`STATUS_EXIT`."""
    if not data["running"]:
        return 3
    return 1 if data["api"].get("error") else 0


def cmd_status(config: CodexdConfig, extra: list[str]) -> int:
    opts = status_parser().parse_args(extra)
    data = _status_data(config)
    if opts.json:
        print(json.dumps(data, indent=2))
        return _status_exit(data)
    files = data["files"]
    ident = data["identity"] or {}
    dstate = data["daemon"] or {}
    rows: list[tuple[str, str]] = [
        ("api", f"{data['api']['base']} ({'up' if data['running'] else 'down'})"),
        ("daemon id", str(ident.get("daemonId", "-"))),
        ("node id", str(ident.get("nodeId", "-"))),
        ("state dir", files["stateDir"]),
        ("logs dir", files["logsDir"]),
    ]
    live = data["api"].get("status")
    if live:
        snap = live["snapshot"]
        child = snap["daemon"]["child"]
        rows += [
            ("pid", str(snap["daemon"]["pid"])),
            ("started at", str(snap["daemon"]["startedAt"])),
            (
                "child",
                f"{child['status']} (pid {child.get('pid')}, restarts {child.get('restarts')})",
            ),
            ("sessions", f"{snap['sessions']['count']} ({snap['sessions']['activeCount']} active)"),
            ("active turns", str(len(snap.get("activeTurns", [])))),
            ("last event seq", str(snap["recentEvents"]["lastSeq"])),
        ]
    else:
        child = (dstate.get("child") or {}) if isinstance(dstate, dict) else {}
        rows += [
            ("last pid", str(dstate.get("pid", "-")) if isinstance(dstate, dict) else "-"),
            ("last update", str(dstate.get("updatedAt", "-")) if isinstance(dstate, dict) else "-"),
            ("child (last known)", str(child.get("status", "-"))),
            ("sessions", str(files["sessionCount"])),
        ]
        if data["api"].get("error"):
            rows.append(("api error", data["api"]["error"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return _status_exit(data)
