"""Calls from this conductor to the fleet's conductors (itself included, at its own bound
address): every call carries the node credential — the fleet's shared token — and a deadline.

A fleet route runs only for a caller this conductor authenticated (``conductor_trio.web``);
the caller's own credential is never passed on: a peer sees this conductor's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import msgspec
import trio

__all__ = ["PeerAnswer", "Peers"]

# Request headers a forwarded call keeps (hop-by-hop, Host and the caller's Authorization stay).
FORWARD_HEADERS = ("Content-Type", "Accept", "Idempotency-Key")


@dataclass(frozen=True)
class PeerAnswer:
    """What one node answered, or why it did not (``status`` None)."""

    node: str
    status: int | None = None
    content: bytes = b""
    headers: Mapping[str, str] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def data(self) -> object:
        """The envelope's ``data`` of a 2xx JSON answer (``None`` otherwise)."""
        if not self.ok:
            return None
        try:
            body = msgspec.json.decode(self.content)
        except msgspec.DecodeError:
            return None
        return body.get("data") if isinstance(body, dict) else None


class Peers:
    """The HTTP client of the fleet's conductors.

    Args:
        token: the node credential sent as ``Authorization: Bearer`` (``None``: no fleet
            credential; only this node is called, and only where it needs none).
        transport: an httpx transport (tests).

    **Resource handling:** one pooled ``httpx.AsyncClient``; :meth:`aclose` closes it.
    """

    def __init__(self, token: str | None, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Deadlines are scopes at the call sites; httpx's own timeouts would fight them.
        self._client = httpx.AsyncClient(headers=headers, timeout=None, transport=transport,
                                         limits=httpx.Limits(max_keepalive_connections=64))

    async def call(self, node: str, base: str, method: str, path: str, *,
                   deadline_s: float, body: bytes | None = None,
                   headers: Mapping[str, str] | None = None) -> PeerAnswer:
        """One call to ``base + path``; never raises for a node that fails or is too slow."""
        with trio.move_on_after(deadline_s):
            try:
                answer = await self._client.request(method, base + path, content=body,
                                                    headers=dict(headers or {}))
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                # InvalidURL: a registration's address no client could use (etcd is shared).
                return PeerAnswer(node, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
            return PeerAnswer(node, answer.status_code, answer.content, answer.headers)
        return PeerAnswer(node, error=f"no answer within {deadline_s:g} s")

    async def fan_out(self, targets: Mapping[str, str], path: str | Mapping[str, str], *,
                      deadline_s: float) -> dict[str, PeerAnswer]:
        """``GET`` ``path`` (or each node's own path) on every ``{node: base}`` at once; every
        node has its answer or its error by ``deadline_s``."""
        answers: dict[str, PeerAnswer] = {}

        async def ask(node: str, base: str) -> None:
            own = path if isinstance(path, str) else path[node]
            answers[node] = await self.call(node, base, "GET", own, deadline_s=deadline_s)

        async with trio.open_nursery() as nursery:
            for node, base in targets.items():
                nursery.start_soon(ask, node, base)
        return answers

    async def first_with(self, targets: Mapping[str, str], path: str, *, deadline_s: float
                         ) -> tuple[PeerAnswer | None, Sequence[PeerAnswer]]:
        """Ask every node for ``path`` at once; the first 200 (the others are cancelled), and
        the answers of the nodes that did not answer (their errors)."""
        found: list[PeerAnswer] = []
        failed: list[PeerAnswer] = []

        async with trio.open_nursery() as nursery:
            async def ask(node: str, base: str) -> None:
                answer = await self.call(node, base, "GET", path, deadline_s=deadline_s)
                if answer.status == 200:
                    found.append(answer)
                    nursery.cancel_scope.cancel(reason="found")
                elif answer.status is None or answer.status >= 500:
                    failed.append(answer)

            for node, base in targets.items():
                nursery.start_soon(ask, node, base)
        return (found[0] if found else None), failed

    async def aclose(self) -> None:
        await self._client.aclose()
