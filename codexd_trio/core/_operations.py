"""What the API layer asks of :class:`~codexd_trio.core.service.Daemon`: sessions, turns and
approvals, run on the current child (or detached from the request), and the acknowledgement a
201/202 waits for. A mixin only for size: the state is the Daemon's (annotated below).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import trio

from codexd_trio.base.contracts import (
    Approval,
    ApprovalRules,
    ApprovalRulesView,
    ChildStatus,
    CreateSessionRequest,
    Decision,
    InterruptRequest,
    Session,
    SteerRequest,
    TurnRequest,
)
from codexd_trio.base.errors import ChildUnavailable, ShuttingDown, StoreUnavailable
from codexd_trio.base.transcript import (
    ForkRequest,
    ReviewRequest,
    RollbackAnswer,
    RollbackRequest,
    ThreadPage,
    ThreadView,
    TitleRequest,
)
from codexd_trio.core.approval_rules import RuleBook
from codexd_trio.core.approvals import ApprovalBroker, ApprovalLedger
from codexd_trio.core.config import CodexdConfig
from codexd_trio.core.domain import SessionBook
from codexd_trio.core.sessions import SessionService, check_cwd
from codexd_trio.core.supervisor import ChildSupervisor, Incarnation, run_detached
from codexd_trio.core.threads import ThreadService
from codexd_trio.core.transcripts import Transcripts
from codexd_trio.store.documents import StoreWriteError
from codexd_trio.store.eventlog import EventLog
from codexd_trio.store.statedir import StateDir

T = TypeVar("T")


class DaemonOperations:
    """The Daemon's operations (see :class:`~codexd_trio.core.service.Daemon`)."""

    config: CodexdConfig
    accepting: bool
    files: StateDir
    log: EventLog
    book: SessionBook
    sessions: SessionService
    threads: ThreadService
    transcripts: Transcripts
    ledger: ApprovalLedger
    broker: ApprovalBroker
    rules: RuleBook
    supervisor: ChildSupervisor
    _operations: trio.Nursery | None

    @property
    def child(self) -> ChildStatus:
        return self.supervisor.child

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ShuttingDown("codexd is shutting down and accepts no new work")

    async def submit(self, op: Callable[[Incarnation], Awaitable[T]]) -> T:
        """Run ``op`` in the current child's work nursery; a cancel abandons only the wait."""
        self._check_accepting()
        return await self._on_child(op)

    async def _on_child(self, op: Callable[[Incarnation], Awaitable[T]]) -> T:
        try:
            return await self.supervisor.require().run(op)
        except ChildUnavailable as exc:
            # Every child_unavailable names the child's state (CONTRACT), also when the child
            # went away in the middle of the request.
            exc.details.setdefault("child", msgspec.to_builtins(self.child))
            raise

    async def detached(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` in the daemon's operations nursery (a keyed request: the operation and
        the record of its answer) so a client that goes away cannot cut it short."""
        if self._operations is None:
            return await fn()
        return await run_detached(self._operations, fn)

    async def create_session(self, req: CreateSessionRequest) -> Session:
        check_cwd(req.cwd)  # 400 before the child is even asked
        if req.threadId is not None:
            return await self.submit(lambda inc: self.threads.adopt(inc, req))
        return await self.submit(lambda inc: self.sessions.create(inc, req))

    # ------------------------------------------------------------ the conversation (issue 22)

    async def list_threads(self, *, cursor: str | None, limit: int, cwd: str | None,
                           search: str | None, archived: bool | None) -> ThreadPage:
        return await self._on_child(lambda inc: self.threads.list_threads(
            inc, cursor=cursor, limit=limit, cwd=cwd, search=search, archived=archived))

    async def read_thread(self, thread_id: str, *, cursor: str | None,
                          limit: int) -> ThreadView:
        return await self._on_child(
            lambda inc: self.threads.read(inc, thread_id, cursor=cursor, limit=limit))

    async def fork_session(self, session_id: str, req: ForkRequest) -> Session:
        self.book.get(session_id)
        return await self.submit(lambda inc: self.threads.fork(inc, session_id, req.title))

    async def rollback_session(self, session_id: str, req: RollbackRequest) -> RollbackAnswer:
        self.book.check_can_start(session_id)
        return await self.submit(lambda inc: self.threads.rollback(inc, session_id, req.turns))

    async def compact_session(self, session_id: str) -> tuple[Session, str]:
        self.book.check_can_start(session_id)
        return await self.submit(lambda inc: self.threads.compact(inc, session_id))

    async def review_session(self, session_id: str, req: ReviewRequest) -> tuple[Session, str]:
        self.book.check_can_start(session_id)
        return await self.submit(lambda inc: self.threads.review(inc, session_id, req))

    async def set_title(self, session_id: str, req: TitleRequest) -> Session:
        self.book.get(session_id)
        return await self.submit(lambda inc: self.threads.set_title(inc, session_id, req.title))

    async def start_turn(self, req: TurnRequest) -> tuple[Session, str]:
        self.book.check_can_start(req.sessionId)  # 404/409 before the child is needed
        return await self.submit(lambda inc: self.sessions.start_turn(inc, req))

    async def steer_turn(self, req: SteerRequest) -> tuple[Session, str]:
        self.book.check_can_steer(req.sessionId)
        return await self.submit(lambda inc: self.sessions.steer(inc, req))

    async def interrupt_turn(self, req: InterruptRequest) -> tuple[Session, str]:
        self.book.get(req.sessionId)
        return await self._on_child(lambda inc: self.sessions.interrupt(inc, req))

    async def close_session(self, session_id: str) -> Session:
        return await self.sessions.close(session_id)

    def approvals(self, state: str | None = None) -> list[Approval]:
        return self.ledger.list(state)

    def approval(self, approval_id: str) -> Approval:
        return self.ledger.get(approval_id)

    async def decide_approval(
        self, approval_id: str, decision: Decision, decided_by: str | None
    ) -> Approval:
        try:
            approval = await self.broker.decide(approval_id, decision, decided_by or "client")
        except ChildUnavailable as exc:
            exc.details.setdefault("child", msgspec.to_builtins(self.child))
            raise
        finally:
            # Durable before the answer either way: resolved, or expired undelivered. The
            # approval's event is the record (approvals.json is a snapshot of those events,
            # replayed at start); when the disk refuses, 503 after the bound, never a 500.
            await self._acknowledge()
        return approval

    def approval_rules(self, session_id: str | None = None) -> ApprovalRulesView:
        """The approval settings of the node (``None``) or of a session, and what is in force.

        Raises:
            SessionNotFound: unknown session.
        """
        if session_id is not None:
            self.book.get(session_id)
        return self.rules.view(session_id)

    async def set_approval_rules(
        self, session_id: str | None, settings: ApprovalRules
    ) -> ApprovalRulesView:
        """Replace the node's (``None``) or a session's approval settings; durable before the
        answer, as a decision is (a rule a client was told about must survive a crash)."""
        if session_id is None:
            self.rules.set_node(settings)
        else:
            self.book.get(session_id)
            self.rules.set_session(session_id, settings)
        try:
            await self.files.approval_rules.flush()
        except StoreWriteError as exc:
            raise StoreUnavailable(
                f"the approval rules were changed but cannot be written yet: {exc}") from exc
        return self.rules.view(session_id)

    async def _acknowledge(self) -> None:
        """Return once every event published so far is durable: what a 201/202 waits for.

        The answer commits at once; when the disk refuses (full, say), the events stay
        buffered and the log's writer retries them every second, so the answer waits for that
        retry, as long as a request to the child may take (``--request-timeout``). Past it:
        :class:`StoreUnavailable` (503): the change is made and becomes durable once the disk
        has room; it is never reported as a bug (500), which it used to be.

        Cancellation:
            Safe: the events stay buffered; the writer makes them durable.
        """
        seq = self.log.last_seq
        try:
            await self.log.flush()
            return
        except OSError as exc:
            error = exc
        with trio.move_on_after(self.config.request_timeout_s):
            await self.log.wait_durable(seq)
            return
        raise StoreUnavailable(
            f"the event log cannot be written ({error.strerror or error}); the change is kept "
            "and becomes durable once the disk has room", eventsWaiting=self.log.waiting,
        ) from error
