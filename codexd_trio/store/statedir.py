"""codexd's files: the state documents under ``state/codexd/`` and the event log under
``logs/codexd/``, opened together (synchronously, before the nursery tree starts)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Protocol

from codexd_trio import __version__
from codexd_trio.base.contracts import (
    ApprovalBook,
    ApprovalRulesBook,
    ChildStatus,
    DaemonState,
    Identity,
    QueueHold,
    RecentEvents,
    SessionRegistry,
    now_iso,
)
from codexd_trio.store.conversation import ConversationStore
from codexd_trio.store.documents import JsonDocument, read_document
from codexd_trio.store.eventlog import EventLog
from codexd_trio.store.idempotency import IdempotencyStore
from codexd_trio.store.sessiontable import open_registry


class StateConfig(Protocol):
    """What the state dir needs of codexd's configuration (``core.config.CodexdConfig`` has it):
    a structural type, so the store layer does not import the layer above it."""

    @property
    def codexd_state(self) -> Path: ...
    @property
    def codexd_logs(self) -> Path: ...
    @property
    def node_id(self) -> str: ...
    @property
    def repo_root(self) -> Path: ...
    @property
    def event_log_segment_mb(self) -> int: ...
    @property
    def event_log_segments(self) -> int: ...
    @property
    def conversation_segment_mb(self) -> int: ...
    @property
    def conversation_segments(self) -> int: ...


class StateDir:
    """Every document codexd persists, plus the event log.

    **Resource handling:** the documents are written by their own ``run`` tasks (started by the
    daemon's root nursery); :meth:`close` releases the event log's file.
    """

    def __init__(self, config: StateConfig) -> None:
        state, logs = config.codexd_state, config.codexd_logs
        state.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        # The seed's stdoutLogPath exists from the first start, even while the child has written
        # nothing but JSON-RPC (which is not logged there).
        (logs / "stdout.log").touch(exist_ok=True)
        identity = read_document(state / "identity.json", Identity)
        self.identity = JsonDocument(
            state / "identity.json",
            Identity,
            identity
            or Identity(
                daemonId=f"codexd-{uuid.uuid4()}",
                nodeId=config.node_id,
                repoRoot=str(config.repo_root),
                createdAt=now_iso(),
                version=__version__,
            ),
        )
        if identity is None:
            self.identity.write_now()
        # A snapshot: the event log is the journal that makes acknowledgements durable. Read
        # one session at a time into the daemon's session table (the first consumer of
        # ``registry_sessions``), which then writes it through ``registry.capture``.
        registry = open_registry(state / "session-registry.json")
        self.registry_seq, self.registry_sessions = registry.last_seq, registry.sessions
        # The turn queues, snapshotted with the sessions (the journal's queue events follow).
        self.registry_queue = registry.queue
        self.registry = JsonDocument(
            state / "session-registry.json", SessionRegistry,
            SessionRegistry(lastSeq=self.registry_seq), pretty=False, coalesce_s=1.0,
        )
        recent = read_document(state / "recent-events.json", RecentEvents)
        # A cache of the ring (the durable log has every event): rewritten at most once a second.
        self.recent = JsonDocument(
            state / "recent-events.json", RecentEvents, recent or RecentEvents(),
            coalesce_s=1.0, pretty=False,
        )
        # The queue hold (issue 23): set by the conductor while the node is paused or draining;
        # durable, so a restarted codexd does not start queued turns the node holds.
        hold = read_document(state / "hold.json", QueueHold)
        self.hold = JsonDocument(state / "hold.json", QueueHold, hold or QueueHold())
        # A snapshot of the approval events, stamped with the seq it reflects (no file yet:
        # every approval event in the log is after it).
        approvals = read_document(state / "approvals.json", ApprovalBook)
        self.approvals = JsonDocument(
            state / "approvals.json", ApprovalBook, approvals or ApprovalBook(lastSeq=0),
            pretty=False,
        )
        rules = read_document(state / "approval-rules.json", ApprovalRulesBook)
        self.approval_rules = JsonDocument(
            state / "approval-rules.json", ApprovalRulesBook, rules or ApprovalRulesBook()
        )
        # Append-only journal; its first open imports and removes the old idempotency.json.
        self.idempotency = IdempotencyStore.open(state / "idempotency.jsonl")
        self.daemon = JsonDocument(
            state / "daemon-state.json",
            DaemonState,
            DaemonState(
                started=False, startedAt=None, pid=os.getpid(), child=ChildStatus(),
                updatedAt=now_iso(),
            ),
        )
        try:
            self.log = EventLog.open(
                logs / "events.jsonl",
                segment_bytes=config.event_log_segment_mb * 1024 * 1024,
                retain_segments=config.event_log_segments,
            )
        except BaseException:
            self.idempotency.journal.close()
            raise
        try:
            # Beside the event log: one record per settled turn, folded from the log.
            self.conversation = ConversationStore.open(
                logs / "conversation",
                segment_bytes=config.conversation_segment_mb * 1024 * 1024,
                retain_segments=config.conversation_segments,
            )
        except BaseException:
            self.idempotency.journal.close()
            self.log.close()
            raise

    @property
    def documents(self) -> list[JsonDocument[Any]]:
        return [
            self.identity, self.registry, self.recent, self.approvals, self.daemon, self.hold,
            self.identity, self.registry, self.recent, self.approvals, self.daemon,
            self.approval_rules,
        ]

    def close(self) -> None:
        """Release the journals' files (writing anything still buffered). Idempotent."""
        try:
            self.idempotency.journal.close()
        finally:
            try:
                self.log.close()
            finally:
                self.conversation.close()
