"""What every part of :class:`~codexd_trio.client.CodexdClient` shares: one ``_call`` (the
client's own, which sends the request and unwraps the envelope) and the ``Idempotency-Key``
header. The client's calls are grouped by subject in mixins over this base (private: use the
client)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Calls"]


class Calls:
    """The base of the client's mixins; :class:`~codexd_trio.client.CodexdClient` provides
    ``_call``."""

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        raise NotImplementedError  # CodexdClient's

    @staticmethod
    def _idem(key: str | None) -> dict[str, str] | None:
        return {"Idempotency-Key": key} if key else None
