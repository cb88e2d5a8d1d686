"""The conversation half of codexd's client: transcripts, Codex's threads and the thread verbs
(fork, rollback, compact, review, title). A mixin of :class:`~codexd_trio.client.CodexdClient`
(private: use the client)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import msgspec

from codexd_trio.base.contracts import Session
from codexd_trio.base.transcript import (
    RollbackAnswer,
    ThreadPage,
    ThreadView,
    Transcript,
    TranscriptItemView,
)

__all__ = ["ConversationCalls"]


def _seg(value: str) -> str:
    # Ids go into the path: a '/', '?' or '#' in one must not change the route.
    return quote(value, safe="")


class ConversationCalls:
    """``GET …/transcript``, ``GET /v1/codexd/threads`` and the thread verbs."""

    if TYPE_CHECKING:

        async def _call(
            self,
            method: str,
            path: str,
            *,
            json: Any = None,
            params: Mapping[str, str] | None = None,
            headers: Mapping[str, str] | None = None,
        ) -> Any: ...

        @staticmethod
        def _idem(key: str | None) -> dict[str, str] | None: ...

    # ----------------------------------------------------------------------------------------
    # Transcripts

    async def transcript(
        self,
        session_id: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> Transcript:
        """``GET /v1/codexd/sessions/{id}/transcript``: a page of turns.

        ``order="desc"`` with ``limit=N`` is "the last N turns" (newest first). Follow the
        event stream with ``after=transcript.lastSeq`` to see what happens next, nothing
        missed or doubled.

        Raises:
            CodexdError: 404 ``not_found`` (unknown session), 400 ``invalid_request`` (a bad
                ``limit``, ``cursor`` or ``order``).
        """
        params: dict[str, str] = {"order": order}
        if limit is not None:
            params["limit"] = str(limit)
        if cursor is not None:
            params["cursor"] = cursor
        data = await self._call("GET", f"/v1/codexd/sessions/{_seg(session_id)}/transcript",
                                params=params)
        return msgspec.convert(data, Transcript)

    async def transcript_item(self, session_id: str, item_id: str) -> TranscriptItemView:
        """``GET …/transcript/items/{itemId}``: one item whole (a capped output or diff in
        full); 404 ``not_found`` for an unknown session or item."""
        data = await self._call(
            "GET",
            f"/v1/codexd/sessions/{_seg(session_id)}/transcript/items/{_seg(item_id)}",
        )
        return msgspec.convert(data, TranscriptItemView)

    # ----------------------------------------------------------------------------------------
    # Codex's threads

    async def list_threads(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        cwd: str | None = None,
        search: str | None = None,
        archived: bool | None = None,
    ) -> ThreadPage:
        """``GET /v1/codexd/threads``: Codex's threads, newest first, each with the codexd
        session that holds it (``sessionId``) if any."""
        params: dict[str, str] = {}
        for key, value in (("limit", limit), ("cursor", cursor), ("cwd", cwd),
                           ("search", search)):
            if value is not None:
                params[key] = str(value)
        if archived is not None:
            params["archived"] = "true" if archived else "false"
        data = await self._call("GET", "/v1/codexd/threads", params=params)
        return msgspec.convert(data, ThreadPage)

    async def read_thread(
        self, thread_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> ThreadView:
        """``GET /v1/codexd/threads/{threadId}``: the thread and a page of its turns, oldest
        first (read-only); 404 ``not_found`` for a thread Codex does not have."""
        params: dict[str, str] = {}
        if limit is not None:
            params["limit"] = str(limit)
        if cursor is not None:
            params["cursor"] = cursor
        data = await self._call("GET", f"/v1/codexd/threads/{_seg(thread_id)}", params=params)
        return msgspec.convert(data, ThreadView)

    async def adopt_thread(
        self,
        thread_id: str,
        *,
        title: str | None = None,
        approvals: str | None = None,
        idempotency_key: str | None = None,
    ) -> Session:
        """``POST /v1/codexd/sessions {"threadId"}``: a new session that resumes an existing
        thread; its transcript shows the thread's earlier turns."""
        body: dict[str, Any] = {"threadId": thread_id}
        if title is not None:
            body["title"] = title
        if approvals is not None:
            body["approvals"] = approvals
        data = await self._call("POST", "/v1/codexd/sessions", json=body,
                                headers=self._idem(idempotency_key))
        return msgspec.convert(data["session"], Session)

    # ----------------------------------------------------------------------------------------
    # Thread verbs on a session

    async def fork_session(
        self, session_id: str, *, title: str | None = None, idempotency_key: str | None = None
    ) -> Session:
        """``POST …/fork`` (``thread/fork``): a new session with the same history."""
        body: dict[str, Any] = {} if title is None else {"title": title}
        data = await self._call("POST", f"/v1/codexd/sessions/{_seg(session_id)}/fork",
                                json=body, headers=self._idem(idempotency_key))
        return msgspec.convert(data["session"], Session)

    async def rollback_session(
        self, session_id: str, turns: int = 1, *, idempotency_key: str | None = None
    ) -> RollbackAnswer:
        """``POST …/rollback {turns}``: take the last ``turns`` turns out of the history
        (Codex's ``thread/revert``); 409 ``turn_in_progress`` while a turn runs."""
        data = await self._call("POST", f"/v1/codexd/sessions/{_seg(session_id)}/rollback",
                                json={"turns": turns}, headers=self._idem(idempotency_key))
        return msgspec.convert(data, RollbackAnswer)

    async def compact_session(
        self, session_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST …/compact`` (``thread/compact/start``): ``{accepted, sessionId, turnId,
        session}``; the compaction runs as a turn of the session."""
        data: dict[str, Any] = await self._call(
            "POST", f"/v1/codexd/sessions/{_seg(session_id)}/compact", json={},
            headers=self._idem(idempotency_key))
        return data

    async def review_session(
        self,
        session_id: str,
        *,
        base_branch: str | None = None,
        commit: str | None = None,
        instructions: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``POST …/review`` (``review/start``): the uncommitted changes by default, or against
        ``base_branch``, one ``commit``, or free ``instructions``; ``{accepted, sessionId,
        turnId, session}``. The review lands in the transcript as that turn's items."""
        body: dict[str, Any] = {}
        for key, value in (("baseBranch", base_branch), ("commit", commit),
                           ("instructions", instructions)):
            if value is not None:
                body[key] = value
        data: dict[str, Any] = await self._call(
            "POST", f"/v1/codexd/sessions/{_seg(session_id)}/review", json=body,
            headers=self._idem(idempotency_key))
        return data

    async def set_title(
        self, session_id: str, title: str, *, idempotency_key: str | None = None
    ) -> Session:
        """``POST …/title {title}`` (``thread/name/set``): the session with its new title."""
        data = await self._call("POST", f"/v1/codexd/sessions/{_seg(session_id)}/title",
                                json={"title": title}, headers=self._idem(idempotency_key))
        return msgspec.convert(data["session"], Session)
