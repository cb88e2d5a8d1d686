"""What the clients know: where they go (:class:`Endpoints`), the answers they get, and the
world as they were told it (:class:`World`), which the invariants hold the node to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

_TURN_END = frozenset({"app-server.turn.completed", "app-server.turn.completed.missing"})


@dataclass
class Endpoints:
    """Where the clients go: codexd itself, or a conductor (one, or two sharing etcd)."""

    codexd: str
    codexd_token: str
    conductors: list[str]
    shared_token: str
    session_cwd: str
    # Updated by the leader sampler (etcd): where writes go first.
    leader: str | None = None

    def headers(self, via: str) -> dict[str, str]:
        token = self.codexd_token if via == "codexd" else self.shared_token
        return {"Authorization": f"Bearer {token}"}


@dataclass
class Answer:
    status: int
    body: bytes
    replayed: bool

    def data(self) -> Any:
        try:
            return msgspec.json.decode(self.body).get("data")
        except (msgspec.DecodeError, AttributeError):
            return None

    @property
    def code(self) -> str | None:
        try:
            error = msgspec.json.decode(self.body).get("error")
        except (msgspec.DecodeError, AttributeError):
            return None
        return error.get("code") if isinstance(error, dict) else None


@dataclass
class SessionInfo:
    session_id: str
    approvals: str
    closed: bool = False
    running: str | None = None


@dataclass
class KeyedRecord:
    op: str
    path: str
    body: Any
    answer: tuple[int, bytes] | None = None
    attempts: int = 0


@dataclass
class World:
    """What the clients were told, to hold the node to it."""

    sessions: dict[str, SessionInfo] = field(default_factory=dict)
    # turn id -> (session id, when the 202 came) for every accepted turn.
    turns: dict[str, tuple[str, float]] = field(default_factory=dict)
    keyed: dict[str, KeyedRecord] = field(default_factory=dict)
    # approval id -> the decision a 200 answered with.
    decisions: dict[str, str] = field(default_factory=dict)
    # queue id -> (session id, when the 202 said "queued") for every queued turn.
    queued: dict[str, tuple[str, float]] = field(default_factory=dict)
    # turn id -> the terminal status a transcript first showed for it.
    transcript_status: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    def active(self) -> list[SessionInfo]:
        return [s for s in self.sessions.values() if not s.closed]

    def on_event(self, event: dict[str, Any]) -> None:
        """Follow turns from the stream, so steer/interrupt aim at running ones."""
        session = self.sessions.get(str(event.get("sessionId")))
        if session is None:
            return
        kind, turn_id = event.get("type"), event.get("turnId")
        if kind == "turn.accepted" and not (event.get("detail") or {}).get("settled"):
            session.running = turn_id
        elif kind in _TURN_END and session.running == turn_id:
            session.running = None
        elif kind == "session.closed":
            session.closed = True
