"""Session and turn operations: the RPCs to the app-server and the records they leave.

Every operation that talks to the child takes the :class:`~codexd_trio.core.supervisor.Incarnation`
it runs in (it is submitted there by the daemon): all its RPCs go to that one child, the threads
it loads are that child's, and it runs in the incarnation's work nursery, so an HTTP client that
goes away cannot cancel it between Codex accepting a turn and codexd recording it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from codexd_trio.base.contracts import (
    CreateSessionRequest,
    InterruptRequest,
    Session,
    SteerRequest,
    TurnInput,
    TurnRequest,
    input_items,
    now_iso,
)
from codexd_trio.base.errors import ChildUnavailable, InvalidRequest
from codexd_trio.core.domain import DomainError, Emit, NoActiveTurn, SessionBook, TurnMismatch
from codexd_trio.core.supervisor import Incarnation
from codexd_trio.protocol.appserver import AppServerError, ChildExited, RequestTimeout

log = logging.getLogger("codexd")

_SANDBOX_NAMES = {
    "readOnly": "read-only",
    "workspaceWrite": "workspace-write",
    "dangerFullAccess": "danger-full-access",
}


class SessionService:
    """Sessions and turns over one :class:`SessionBook`.

    Args:
        book: the sans-IO session state machine.
        publish: hands an event to the hub.
        changed: called after the book changed (saves the registry snapshot).
        flush: waits until every published event is durable (answers wait for it).
    """

    def __init__(
        self,
        book: SessionBook,
        publish: Callable[[Emit], object],
        changed: Callable[[], None],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.book = book
        self.publish = publish
        self.changed = changed
        self.flush = flush
        self._thread_locks: dict[str, trio.Lock] = {}

    async def create(self, inc: Incarnation, req: CreateSessionRequest) -> Session:
        result = await _call(
            inc, inc.client.thread_start(
                **_thread_params(req.cwd, req.model, req.approvalPolicy, req.sandbox))
        )
        thread = result.get("thread") or {}
        now = now_iso()
        session = Session(
            sessionId=f"session-{uuid.uuid4()}",
            threadId=str(thread["id"]),
            purpose=req.purpose,
            cwd=result.get("cwd") or thread.get("cwd"),
            model=result.get("model"),
            approvalPolicy=_policy_text(result.get("approvalPolicy")),
            sandbox=_sandbox_text(result.get("sandbox")),
            approvals=req.approvals or "decline",
            createdAt=now,
            updatedAt=now,
            title=req.title,
        )
        inc.loaded_threads.add(session.threadId)
        self.publish(self.book.add(session))
        self.changed()
        await self.flush()
        return session

    async def ensure_thread(self, inc: Incarnation, session_id: str) -> Session:
        """Make sure the session's thread is loaded in ``inc``'s child.

        After a child or codexd restart the thread is resumed with ``thread/resume``; a thread
        that never ran a turn was never persisted by Codex, so it is re-created transparently
        (new ``threadId`` recorded, ``session.rethreaded`` emitted).
        """
        async with self._thread_locks.setdefault(session_id, trio.Lock()):
            session = self.book.get(session_id)
            if session.threadId in inc.loaded_threads:
                return session
            params = _thread_params(session.cwd, session.model, session.approvalPolicy, None)
            if session.threadPersisted:
                try:
                    await _call(inc, inc.client.thread_resume(session.threadId, **params))
                except AppServerError as exc:
                    if "no rollout found" not in exc.message:
                        raise
                    log.warning("thread %s cannot be resumed: %s", session.threadId, exc.message)
                else:
                    inc.loaded_threads.add(session.threadId)
                    self.publish(
                        Emit(
                            "session.resumed",
                            f"session {session_id} re-attached to thread {session.threadId}",
                            session_id=session_id,
                            thread_id=session.threadId,
                        )
                    )
                    return session
            sandbox = session.sandbox if session.sandbox in _SANDBOX_NAMES.values() else None
            params = _thread_params(session.cwd, session.model, session.approvalPolicy, sandbox)
            result = await _call(inc, inc.client.thread_start(**params))
            thread_id = str(result["thread"]["id"])
            reason = "the thread never ran a turn, so Codex did not persist it"
            if session.threadPersisted:
                reason = "Codex has no rollout for the thread"
            self.publish(self.book.rethread(session_id, thread_id, reason))
            inc.loaded_threads.add(thread_id)
            self.changed()
            return self.book.get(session_id)

    async def start_turn(self, inc: Incarnation, req: TurnRequest) -> tuple[Session, str]:
        self.book.begin_turn(req.sessionId)
        try:
            session = await self.ensure_thread(inc, req.sessionId)
            result = await _call(
                inc, inc.client.turn_start(session.threadId, input_items(req.input))
            )
            turn_id = str(result["turn"]["id"])
        except BaseException:
            # Only reached when Codex did not accept the turn, or its child is gone (the
            # operation is not cancelled by the HTTP client): no turn runs that we do not know.
            self.book.abort_turn(req.sessionId)
            raise
        session = self.accept(req.sessionId, turn_id, req.input)
        self.changed()
        await self.flush()
        return session, turn_id

    def accept(self, session_id: str, turn_id: str, input: TurnInput,
               before: Callable[[], Emit] | None = None) -> Session:
        """Record that Codex accepted turn ``turn_id`` with ``input``, a direct turn and a
        queued one alike: ``turn.accepted`` with what was sent (for the transcript; Codex's
        userMessage item says it too, but only once the turn got that far) after ``before``'s
        event (a queued turn's ``turn.dequeued``), and the first prompt as the session's
        default title."""
        session, emit = self.book.accept_turn(session_id, turn_id)
        emit.detail["input"] = input_items(input)
        if before is not None:
            self.publish(before())
        self.publish(emit)
        if session.title is None and (text := _input_text(input)):
            self.publish(self.book.set_title(session_id, default_title(text), source="default"))
            session = self.book.get(session_id)
        return session

    async def send_turn_start(self, inc: Incarnation, session: Session, input: TurnInput) -> str:
        """Send ``turn/start`` for a turn the caller has reserved (``begin_turn``) and recorded;
        returns Codex's turn id (the queue dispatcher's half of :meth:`start_turn`)."""
        result = await _call(inc, inc.client.turn_start(session.threadId, input_items(input)))
        return str(result["turn"]["id"])

    async def steer(self, inc: Incarnation, req: SteerRequest) -> tuple[Session, str]:
        session = self.book.check_can_steer(req.sessionId)
        assert session.currentTurnId is not None
        expected = req.expectedTurnId or session.currentTurnId
        try:
            result = await _call(
                inc, inc.client.turn_steer(
                    session.threadId, input_items(req.input), expected_turn_id=expected)
            )
        except AppServerError as exc:
            raise _map_turn_error(exc, req.sessionId, session.currentTurnId) from exc
        turn_id = str(result.get("turnId") or expected)
        self.publish(
            Emit("turn.steered", f"turn {turn_id} steered", session_id=req.sessionId,
                 thread_id=session.threadId, turn_id=turn_id)
        )
        return self.book.get(req.sessionId), turn_id

    async def interrupt(self, inc: Incarnation, req: InterruptRequest) -> tuple[Session, str]:
        session = self.book.get(req.sessionId)
        if session.currentTurnId is None:
            raise NoActiveTurn(
                f"session {req.sessionId} has no turn to interrupt", sessionId=req.sessionId
            )
        turn_id = req.turnId or session.currentTurnId
        try:
            await _call(inc, inc.client.turn_interrupt(session.threadId, turn_id))
        except AppServerError as exc:
            raise _map_turn_error(exc, req.sessionId, session.currentTurnId) from exc
        self.publish(
            Emit("turn.interrupt.requested", f"interrupt requested for turn {turn_id}",
                 session_id=req.sessionId, thread_id=session.threadId, turn_id=turn_id)
        )
        return self.book.get(req.sessionId), turn_id

    async def close(self, session_id: str) -> Session:
        """Close a session: it keeps its history but accepts no more turns; its queued turns
        are cancelled (``turn.queue.removed``, reason ``session_closed``)."""
        if self.book.get(session_id).status != "closed":
            for emit in self.book.close_session(session_id):
                self.publish(emit)
            self.changed()
            await self.flush()
        return self.book.get(session_id)


def default_title(text: str, chars: int = 80) -> str:
    """The first prompt as a title: one line, at most ``chars`` characters, cut at a word."""
    line = " ".join(text.split())
    if len(line) <= chars:
        return line
    cut = line[: chars - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > chars // 2 else cut).rstrip() + "…"


def _input_text(value: str | list[dict[str, Any]]) -> str:
    if isinstance(value, str):
        return value
    return " ".join(str(i["text"]) for i in value
                    if isinstance(i, dict) and isinstance(i.get("text"), str))


def check_cwd(cwd: str | None) -> None:
    """A session's ``cwd`` must be an existing directory: Codex would only warn and run the
    session somewhere else, and codexd must not create directories on a client's say-so."""
    if cwd is None:
        return
    path = Path(cwd)
    if not path.is_absolute():
        raise InvalidRequest(f"cwd must be an absolute path, got {cwd!r}", field="$.cwd",
                             path="$.cwd")
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise InvalidRequest(f"cwd {cwd!r} {what}", field="$.cwd", path="$.cwd")


async def _call(inc: Incarnation, awaitable: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        return await awaitable
    except ChildExited as exc:
        raise ChildUnavailable(
            f"the codex app-server exited during the request ({exc})", incarnation=inc.number
        ) from exc
    except RequestTimeout as exc:
        raise ChildUnavailable(
            f"the codex app-server did not answer in time ({exc})", incarnation=inc.number
        ) from exc


def _thread_params(
    cwd: str | None, model: str | None, approval_policy: str | None, sandbox: str | None
) -> dict[str, Any]:
    given = {"cwd": cwd, "model": model, "approvalPolicy": approval_policy, "sandbox": sandbox}
    return {k: v for k, v in given.items() if v}


def _sandbox_text(value: Any) -> str | None:
    """The app-server echoes the sandbox as an object; sessions show the plain mode name."""
    if isinstance(value, dict):
        kind = value.get("type")
        return _SANDBOX_NAMES.get(str(kind), str(kind)) if kind else None
    return str(value) if value is not None else None


def _policy_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _map_turn_error(exc: AppServerError, session_id: str, current: str | None) -> DomainError:
    text = exc.message
    if "no active turn" in text:
        return NoActiveTurn(
            f"session {session_id} has no active turn ({text})", sessionId=session_id
        )
    if "expected active turn id" in text:
        return TurnMismatch(
            f"the turn id does not match the active turn ({text})",
            sessionId=session_id,
            currentTurnId=current,
        )
    raise exc
