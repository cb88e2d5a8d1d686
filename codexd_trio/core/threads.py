"""Codex's own threads: list and read them, adopt one as a session, and the thread verbs of a
session (fork, rollback, compact, review, title).

Like :mod:`codexd_trio.core.sessions`, every operation runs in the current child's incarnation
and each change is an event in the journal before it is acknowledged: an adopted or forked
session is ``session.created`` followed by one ``turn.imported`` per earlier turn (the fold
records them, so the transcript shows them), a rollback ``session.rolledBack``, a title
``session.titled``; a compaction and a review are turns of the session (``turn.accepted`` with
``detail.origin``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from codexd_trio.base.contracts import CreateSessionRequest, Session, now_iso
from codexd_trio.base.errors import ChildUnavailable, InvalidRequest, NotFound, ThreadInUse
from codexd_trio.base.transcript import (
    ReviewRequest,
    RollbackAnswer,
    ThreadPage,
    ThreadSummary,
    ThreadView,
    TranscriptTurn,
)
from codexd_trio.core.domain import Emit, SessionBook
from codexd_trio.core.items import epoch_iso, turn_from_codex
from codexd_trio.core.sessions import (
    SessionService,
    _call,
    _policy_text,
    _sandbox_text,
    default_title,
)
from codexd_trio.core.supervisor import Incarnation
from codexd_trio.core.transcripts import cap_turn
from codexd_trio.protocol.appserver import AppServerError

__all__ = ["ThreadService"]

# Every kind of thread a person starts (thread/list's default is the interactive ones only,
# which leaves out `codex exec` and the app-server's own threads); sub-agents stay out.
_SOURCE_KINDS = ["cli", "vscode", "exec", "appServer", "unknown"]
# Turns asked of Codex per page while importing a thread's history.
_IMPORT_PAGE = 50
# An imported turn larger than this goes into the journal with its items capped.
_IMPORT_EVENT_BYTES = 8 * 1024 * 1024
# What Codex answers about a thread it does not have.
_UNKNOWN_THREAD = ("thread not loaded", "no rollout found", "invalid thread id",
                   "thread not found")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _source(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value:
        return str(next(iter(value)))
    return None


def _not_found(exc: AppServerError, thread_id: str) -> Exception:
    if any(text in exc.message for text in _UNKNOWN_THREAD):
        return NotFound(f"Codex has no thread {thread_id!r} ({exc.message})", threadId=thread_id)
    return exc


class ThreadService:
    """Threads and the thread verbs over one :class:`SessionBook`.

    Args:
        book: the session state machine.
        sessions: the session operations (``ensure_thread``).
        publish, changed, flush: as for :class:`SessionService`.
        wait_changed: returns once the book changed (a compaction waits for its turn).
        timeout_s: how long a compaction may take to start its turn.
    """

    def __init__(self, book: SessionBook, sessions: SessionService,
                 publish: Callable[[Emit], object], changed: Callable[[], None],
                 flush: Callable[[], Awaitable[None]],
                 wait_changed: Callable[[], Awaitable[None]], *, timeout_s: float) -> None:
        self.book = book
        self.sessions = sessions
        self.publish = publish
        self.changed = changed
        self.flush = flush
        self.wait_changed = wait_changed
        self.timeout_s = timeout_s

    # ---------------------------------------------------------------- reading threads

    def summary(self, thread: dict[str, Any]) -> ThreadSummary:
        thread_id = _str(thread.get("id")) or ""
        held = self.book.session_for_thread(thread_id)
        status = thread.get("status")
        return ThreadSummary(
            threadId=thread_id, name=_str(thread.get("name")),
            preview=_str(thread.get("preview")) or "", cwd=_str(thread.get("cwd")),
            createdAt=epoch_iso(thread.get("createdAt")),
            updatedAt=epoch_iso(thread.get("updatedAt")), source=_source(thread.get("source")),
            model=_str(thread.get("model")), modelProvider=_str(thread.get("modelProvider")),
            status=_str(status.get("type")) if isinstance(status, dict) else _str(status),
            forkedFromId=_str(thread.get("forkedFromId")),
            sessionId=held.sessionId if held is not None else None,
        )

    async def list_threads(self, inc: Incarnation, *, cursor: str | None, limit: int,
                   cwd: str | None, search: str | None, archived: bool | None) -> ThreadPage:
        params: dict[str, Any] = {"limit": limit, "sourceKinds": _SOURCE_KINDS}
        for key, value in (("cursor", cursor), ("cwd", cwd), ("searchTerm", search),
                           ("archived", archived)):
            if value is not None:
                params[key] = value
        try:
            result = await _call(inc, inc.client.thread_list(**params))
        except AppServerError as exc:
            if cursor is not None and exc.code in (-32600, -32602):
                raise InvalidRequest(f"cursor refused by Codex: {exc.message}",
                                     field="cursor") from exc
            raise
        data = result.get("data")
        threads = [self.summary(t) for t in data if isinstance(t, dict)] if isinstance(
            data, list) else []
        return ThreadPage(threads=threads, nextCursor=_str(result.get("nextCursor")))

    async def _turns_page(self, inc: Incarnation, thread_id: str, *, cursor: str | None,
                          limit: int) -> tuple[list[TranscriptTurn], str | None]:
        params: dict[str, Any] = {"limit": limit, "sortDirection": "asc", "itemsView": "full"}
        if cursor is not None:
            params["cursor"] = cursor
        try:
            result = await _call(inc, inc.client.thread_turns_list(thread_id, **params))
        except AppServerError as exc:
            raise _not_found(exc, thread_id) from exc
        data = result.get("data")
        turns = [turn_from_codex(t) for t in data if isinstance(t, dict)] if isinstance(
            data, list) else []
        return turns, _str(result.get("nextCursor"))

    async def read(self, inc: Incarnation, thread_id: str, *, cursor: str | None,
                   limit: int) -> ThreadView:
        try:
            result = await _call(inc, inc.client.thread_read(thread_id))
        except AppServerError as exc:
            raise _not_found(exc, thread_id) from exc
        turns, following = await self._turns_page(inc, thread_id, cursor=cursor, limit=limit)
        return ThreadView(thread=self.summary(result.get("thread") or {}), turns=turns,
                          nextCursor=following)

    async def _history(self, inc: Incarnation, thread_id: str) -> list[TranscriptTurn]:
        turns: list[TranscriptTurn] = []
        cursor: str | None = None
        while True:
            page, cursor = await self._turns_page(inc, thread_id, cursor=cursor,
                                                  limit=_IMPORT_PAGE)
            turns += page
            if cursor is None or not page:
                return turns

    def _import(self, session: Session, turns: list[TranscriptTurn]) -> None:
        for turn in turns:
            if turn.status == "inProgress":
                # Not running here: whatever ran it is gone or elsewhere.
                turn = msgspec.structs.replace(turn, status="interrupted")
            detail = msgspec.to_builtins(turn)
            if len(msgspec.json.encode(detail)) > _IMPORT_EVENT_BYTES:
                detail = msgspec.to_builtins(cap_turn(turn)[0])
            self.publish(Emit("turn.imported", f"turn {turn.turnId} imported from the thread",
                              session_id=session.sessionId, thread_id=session.threadId,
                              turn_id=turn.turnId, detail={"turn": detail}))

    # ---------------------------------------------------------------- new sessions

    def _new_session(self, result: dict[str, Any], thread: dict[str, Any], turns:
                     list[TranscriptTurn], **fields: Any) -> Session:
        now = now_iso()
        last = turns[-1] if turns else None
        text = next((i.text for i in last.items[::-1] if i.type == "agentMessage"),
                    None) if last else None
        return Session(
            sessionId=f"session-{uuid.uuid4()}", threadId=str(thread["id"]),
            cwd=_str(result.get("cwd")) or _str(thread.get("cwd")),
            model=_str(result.get("model")),
            approvalPolicy=_policy_text(result.get("approvalPolicy")),
            sandbox=_sandbox_text(result.get("sandbox")), createdAt=now, updatedAt=now,
            lastTurnId=last.turnId if last else None,
            lastTurnStatus=last.status if last and last.status != "inProgress" else None,
            lastTurnStartedAt=last.startedAt if last else None,
            lastTurnCompletedAt=last.completedAt if last else None,
            lastTurnOutput=text, turnCount=len(turns), threadPersisted=True, **fields,
        )

    async def _record(self, inc: Incarnation, session: Session, turns: list[TranscriptTurn],
                      **detail: Any) -> Session:
        inc.loaded_threads.add(session.threadId)
        created = self.book.add(session)
        created.detail.update(detail)
        self.publish(created)
        self._import(session, turns)
        self.changed()
        await self.flush()
        return session

    async def adopt(self, inc: Incarnation, req: CreateSessionRequest) -> Session:
        """A new session that resumes the existing thread ``req.threadId``."""
        assert req.threadId is not None
        thread_id = req.threadId
        held = self.book.session_for_thread(thread_id)
        if held is not None:
            raise ThreadInUse(f"thread {thread_id} is held by session {held.sessionId}",
                              threadId=thread_id, sessionId=held.sessionId)
        overrides: dict[str, Any] = {k: v for k, v in (("cwd", req.cwd), ("model", req.model),
                                       ("approvalPolicy", req.approvalPolicy),
                                       ("sandbox", req.sandbox)) if v}
        try:
            result = await _call(inc, inc.client.thread_resume(thread_id, **overrides))
        except AppServerError as exc:
            raise _not_found(exc, thread_id) from exc
        thread = result.get("thread") or {"id": thread_id}
        turns = await self._history(inc, thread_id)
        title = req.title or _str(thread.get("name")) or (
            default_title(str(thread.get("preview"))) if thread.get("preview") else None)
        session = self._new_session(result, thread, turns, purpose=req.purpose,
                                    approvals=req.approvals or "decline", title=title)
        if req.title:
            await _call(inc, inc.client.thread_name_set(thread_id, req.title))
        return await self._record(inc, session, turns, adoptedThreadId=thread_id)

    async def fork(self, inc: Incarnation, session_id: str, title: str | None) -> Session:
        """A new session on a copy of the session's thread (``thread/fork``)."""
        parent = await self.sessions.ensure_thread(inc, session_id)
        result = await _call(inc, inc.client.thread_fork(parent.threadId, excludeTurns=True))
        thread = result.get("thread") or {}
        turns = await self._history(inc, str(thread["id"]))
        name = title or (f"{parent.title} (fork)" if parent.title else None)
        if title:
            await _call(inc, inc.client.thread_name_set(str(thread["id"]), title))
        session = self._new_session(result, thread, turns, purpose=parent.purpose,
                                    approvals=parent.approvals, title=name,
                                    forkedFrom=parent.threadId)
        return await self._record(inc, session, turns, forkedFrom=parent.threadId,
                                  forkedFromSession=session_id)

    # ---------------------------------------------------------------- verbs on a session

    async def rollback(self, inc: Incarnation, session_id: str, turns: int) -> RollbackAnswer:
        """Take the last ``turns`` turns out of the thread (``thread/revert`` before the
        ``turns``-th newest)."""
        self.book.begin_turn(session_id)  # 404/409; no turn may start meanwhile
        try:
            session = await self.sessions.ensure_thread(inc, session_id)
            result = await _call(inc, inc.client.thread_turns_list(
                session.threadId, limit=turns, sortDirection="desc"))
            data = result.get("data")
            newest = [str(t["id"]) for t in data if isinstance(t, dict) and "id" in t] \
                if isinstance(data, list) else []
            if len(newest) < turns:
                raise InvalidRequest(
                    f"session {session_id} has {len(newest)} turn(s) to roll back, not {turns}",
                    field="$.turns", path="$.turns", turns=len(newest))
            await _call(inc, inc.client.thread_revert(session.threadId, newest[turns - 1]))
        finally:
            self.book.abort_turn(session_id)
        removed = newest[:turns][::-1]
        self.publish(Emit("session.rolledBack",
                          f"session {session_id}: {turns} turn(s) rolled back",
                          session_id=session_id, thread_id=session.threadId,
                          detail={"removedTurnIds": removed, "beforeTurnId": newest[turns - 1]}))
        self.changed()
        await self.flush()
        return RollbackAnswer(session=self.book.get(session_id), removedTurnIds=removed)

    async def compact(self, inc: Incarnation, session_id: str) -> tuple[Session, str]:
        """Compact the thread's context; the compaction runs as a turn of the session."""
        self.book.begin_turn(session_id)
        self.book.expect_turn(session_id, "compaction")
        try:
            session = await self.sessions.ensure_thread(inc, session_id)
            await _call(inc, inc.client.thread_compact_start(session.threadId))
            # Codex answers before (or after) the turn/started that names the turn.
            with trio.move_on_after(self.timeout_s):
                while self.book.expecting(session_id):
                    await self.wait_changed()
            if self.book.expecting(session_id):
                raise ChildUnavailable(f"Codex did not start the compaction of {session_id} "
                                       f"within {self.timeout_s:g} s", sessionId=session_id)
        except BaseException:
            if self.book.expecting(session_id):
                self.book.abort_turn(session_id)
            raise
        await self.flush()
        session = self.book.get(session_id)
        return session, str(session.lastTurnId)

    async def review(self, inc: Incarnation, session_id: str,
                     req: ReviewRequest) -> tuple[Session, str]:
        """A code review (``review/start``, inline): a turn of the session."""
        self.book.begin_turn(session_id)
        try:
            session = await self.sessions.ensure_thread(inc, session_id)
            result = await _call(inc, inc.client.review_start(session.threadId, req.target()))
            turn_id = str(result["turn"]["id"])
        except BaseException:
            self.book.abort_turn(session_id)
            raise
        session, emit = self.book.accept_turn(session_id, turn_id)
        emit.detail["origin"] = "review"
        emit.detail["target"] = req.target()
        self.publish(emit)
        self.changed()
        await self.flush()
        return session, turn_id

    async def set_title(self, inc: Incarnation, session_id: str, title: str) -> Session:
        """The session's title, and Codex's thread name (``thread/name/set``)."""
        session = await self.sessions.ensure_thread(inc, session_id)
        await _call(inc, inc.client.thread_name_set(session.threadId, title))
        self.publish(self.book.set_title(session_id, title))
        self.changed()
        await self.flush()
        return self.book.get(session_id)
