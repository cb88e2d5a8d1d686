"""The conversation's wire shapes: a session's transcript, its items, Codex's own threads, and the
request bodies of the thread verbs (issue 22).

A transcript is what a reader needs of each turn: what was sent, what Codex did (its completed
items, shaped per kind) and how the turn ended. It comes from codexd's own per-turn records
(``codexd_trio.store.conversation``), so it does not depend on the child or on the raw event log.

Items are one flat :class:`TranscriptItem` with ``type`` and ``id`` always set and the fields of
its kind (``omit_defaults``: a kind's absent fields are not sent). A kind codexd does not shape
(``mcpToolCall``, ``webSearch``, ``plan``, ``contextCompaction``, a kind of a newer Codex) is
passed through: its ``type`` and ``id``, and Codex's other fields verbatim in ``data``. A flat
struct rather than a tagged union: msgspec cannot put a catch-all beside tagged structs, and a
client must decode a kind it has never heard of.

The records and answers are read tolerantly by clients (every field beyond the identity has a
default); the request bodies forbid unknown fields like every other request.
"""

from __future__ import annotations

from typing import Any

import msgspec

from codexd_trio.base.contracts import Session, TurnError, TurnStatus

__all__ = [
    "ITEM_CAP_BYTES",
    "FileChange",
    "ForkRequest",
    "ReviewRequest",
    "RollbackAnswer",
    "RollbackRequest",
    "ThreadPage",
    "ThreadSummary",
    "ThreadView",
    "TitleRequest",
    "Transcript",
    "TranscriptItem",
    "TranscriptItemView",
    "TranscriptTurn",
]

# What one item of a transcript page may carry of a command's output, of its diffs (all changes
# together), of a text, or of a passed-through item's data; the whole item is at
# GET /v1/codexd/sessions/{id}/transcript/items/{itemId}.
ITEM_CAP_BYTES = 64 * 1024


class FileChange(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One file of a ``fileChange`` item (or of a file-change approval).

    ``diff`` is always a unified diff with ``---``/``+++`` headers: Codex sends bare hunks for
    an update and the raw content of an added (or deleted) file; codexd writes the headers and,
    for an added or deleted file, the hunk.
    """

    path: str
    # add, delete, update, or move (an update with movePath); a newer Codex's word is kept.
    kind: str
    movePath: str | None = None
    diff: str = ""
    truncated: bool = False
    # The whole diff's size in bytes (UTF-8), whether or not it was cut here.
    diffBytes: int = 0


class TranscriptItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item of a turn. The fields per ``type``:

    * ``userMessage``: ``text`` (the text parts joined), ``content`` (the input items as sent);
    * ``agentMessage``: ``text`` (whole, not deltas); ``plan``: ``text``;
    * ``reasoning``: ``summary`` (the summary parts joined by blank lines);
    * ``commandExecution``: ``command``, ``cwd``, ``status``, ``exitCode``, ``durationMs``,
      ``output`` (aggregated; capped), ``truncated``, ``outputBytes``;
    * ``fileChange``: ``status``, ``changes`` (each capped; ``truncated`` if any was);
    * ``approval``: ``approvalId`` (also the ``id``), ``kind`` (``commandExecution`` or
      ``fileChange``), ``itemId`` (the item it asks about), ``command``/``cwd``/``reason`` or
      ``changes``, ``status`` (``pending``, ``resolved``, ``expired``), ``decision``,
      ``decidedBy``, ``decidedAt``;
    * anything else: ``data`` (Codex's item without ``type`` and ``id``; dropped when it is over
      the cap, with ``truncated`` and ``dataBytes``).

    ``truncated`` says that something was cut to :data:`ITEM_CAP_BYTES`; the full item is at
    ``GET …/transcript/items/{id}``.
    """

    type: str
    id: str
    text: str | None = None
    content: list[dict[str, Any]] | None = None
    summary: str | None = None
    command: str | None = None
    cwd: str | None = None
    status: str | None = None
    exitCode: int | None = None
    durationMs: int | None = None
    output: str | None = None
    outputBytes: int | None = None
    changes: list[FileChange] | None = None
    approvalId: str | None = None
    kind: str | None = None
    itemId: str | None = None
    reason: str | None = None
    decision: str | None = None
    decidedBy: str | None = None
    decidedAt: str | None = None
    data: dict[str, Any] | None = None
    dataBytes: int | None = None
    # Set (true or false) on the kinds that can be cut: commandExecution, fileChange, text and
    # passed-through kinds once they are over the cap.
    truncated: bool | None = None


class TranscriptTurn(msgspec.Struct, frozen=True, kw_only=True):
    """One turn: what was sent, its items in order, how it ended.

    ``status`` is ``inProgress`` only for the running turn (its completed items so far); a turn
    that ended without Codex saying so (the child or codexd died) is ``failed`` with an ``error``
    whose ``code`` says why (``child_exited``, ``daemon_restarted``, ``daemon_stopped``).
    ``origin`` says who started it: ``turn`` (a client's turn), ``review``, ``compaction``,
    ``codex`` (Codex on its own), ``imported`` (from the thread's history when the session
    adopted or forked it).
    """

    turnId: str
    status: TurnStatus
    startedAt: str | None = None
    completedAt: str | None = None
    input: list[dict[str, Any]] = msgspec.field(default_factory=list)
    error: TurnError | None = None
    # Codex's tokenUsage of the turn (``total``, ``last``, ``modelContextWindow``), as sent.
    tokenUsage: dict[str, Any] | None = None
    items: list[TranscriptItem] = msgspec.field(default_factory=list)
    origin: str = "turn"


class Transcript(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/codexd/sessions/{id}/transcript``: a page of turns.

    ``lastSeq`` is the event seq the page reflects: follow the event stream with
    ``after=lastSeq`` and nothing is missed or shown twice.
    """

    sessionId: str
    turns: list[TranscriptTurn]
    nextCursor: str | None = None
    lastSeq: int = 0
    # Turns waiting to run after the last one (the turn queue, issue 23, fills it); None when
    # codexd has no queue for the session.
    queue: list[dict[str, Any]] | None = None


class TranscriptItemView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET …/transcript/items/{itemId}``: one item whole (nothing cut)."""

    sessionId: str
    turnId: str
    item: TranscriptItem


# --------------------------------------------------------------------------------------------
# Codex's own threads


class ThreadSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One of Codex's threads (``thread/list``, ``thread/read``), whoever started it.

    ``sessionId`` is the codexd session that holds the thread, if any. Times are ISO-8601 UTC.
    """

    threadId: str
    name: str | None = None
    preview: str = ""
    cwd: str | None = None
    createdAt: str | None = None
    updatedAt: str | None = None
    # Where it was started: cli, vscode (codexd's own threads), exec, appServer, ...
    source: str | None = None
    model: str | None = None
    modelProvider: str | None = None
    # notLoaded, idle, active, systemError (as Codex reports it).
    status: str | None = None
    forkedFromId: str | None = None
    sessionId: str | None = None


class ThreadPage(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/codexd/threads``: newest first; ``nextCursor`` is Codex's, passed through."""

    threads: list[ThreadSummary]
    nextCursor: str | None = None


class ThreadView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/codexd/threads/{threadId}``: the thread and a page of its turns, oldest first,
    in the transcript's shapes (read-only: the thread is not resumed)."""

    thread: ThreadSummary
    turns: list[TranscriptTurn]
    nextCursor: str | None = None


class RollbackAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """``POST …/rollback``: the session, and the turns taken out of its history (newest last)."""

    session: Session
    removedTurnIds: list[str]


# --------------------------------------------------------------------------------------------
# Request bodies (clients -> codexd). Unknown fields are a 400.


class ForkRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/codexd/sessions/{id}/fork``: a new session on a copy of the thread."""

    title: str | None = None


class RollbackRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST …/rollback``: take the last ``turns`` turns out of the thread's history (Codex's
    ``thread/revert``; files the turns changed stay as they are)."""

    turns: int = 1

    def __post_init__(self) -> None:
        if self.turns < 1:
            raise ValueError("Expected `int` >= 1 - at `$.turns`")


class ReviewRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST …/review``: review the uncommitted changes (nothing given), the changes against
    ``baseBranch``, one ``commit``, or by free ``instructions`` (at most one of the three)."""

    baseBranch: str | None = None
    commit: str | None = None
    instructions: str | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("baseBranch", "commit", "instructions") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"Expected at most one of baseBranch, commit, instructions - at "
                             f"`$.{given[1]}`")

    def target(self) -> dict[str, Any]:
        """Codex's ``ReviewTarget`` for ``review/start``."""
        if self.baseBranch:
            return {"type": "baseBranch", "branch": self.baseBranch}
        if self.commit:
            return {"type": "commit", "sha": self.commit}
        if self.instructions:
            return {"type": "custom", "instructions": self.instructions}
        return {"type": "uncommittedChanges"}


class TitleRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST …/title``: the session's title (Codex's thread name)."""

    title: str

    def __post_init__(self) -> None:
        if not self.title.strip():
            raise ValueError("Expected text with a non-space character - at `$.title`")
