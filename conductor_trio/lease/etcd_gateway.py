"""etcd v3's JSON gateway (``/v3/...``) over httpx, for the etcd lease keeper
(:mod:`conductor_trio.lease.etcd`): calls with failover across endpoints, and watches.

Wire details: keys and values are base64, int64 fields are JSON strings, fields equal to their
zero value are omitted (``succeeded`` is absent on a failed transaction, ``type`` on a PUT event),
and a keep-alive answer without ``TTL`` means the lease is gone.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from conductor_trio.lease.file import LeaseStoreError

__all__ = ["EtcdGateway", "EtcdUnavailable", "as_int", "b64"]


class EtcdUnavailable(LeaseStoreError):
    """No etcd endpoint answered (in time)."""


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def as_int(value: Any) -> int:
    """An etcd int64 (a JSON string; absent means 0)."""
    return int(value) if value is not None else 0


class EtcdGateway:
    """A small client of etcd's v3 JSON gateway over several endpoints.

    Every call tries the endpoint that answered last, then the others in order; an endpoint that
    refuses, fails or does not answer within ``request_timeout_s`` is skipped.

    Args:
        endpoints: ``host:port`` strings.
        request_timeout_s: bound on one request to one endpoint.
        transport: an httpx transport (tests pass an in-process gateway double).

    **Resource handling:** owns one ``httpx.AsyncClient``; :meth:`aclose` closes it.
    """

    def __init__(self, endpoints: Sequence[str], *, request_timeout_s: float = 2.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [f"http://{e}" for e in endpoints]
        self.request_timeout_s = request_timeout_s
        # Timeouts are scopes at the call sites; httpx's own would fight them.
        self._client = httpx.AsyncClient(transport=transport, timeout=None)
        self._current = 0

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._current + i) % n for i in range(n)]

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` and return the decoded answer.

        An endpoint whose answer is not etcd's (not JSON, not an object, neither a result nor an
        etcd error: an HTML page, ``404 page not found``) or says it cannot serve (5xx) is
        skipped like one that refuses or stays silent.

        Raises:
            EtcdUnavailable: no endpoint gave a usable answer in time.
            LeaseStoreError: etcd answered with an error (``{"error", "code"}``).
        """
        errors: list[str] = []
        for index in self._order():
            url = self.endpoints[index] + path
            with trio.move_on_after(self.request_timeout_s):
                try:
                    # A streaming read: the keep-alive endpoint answers one line and then keeps
                    # the stream open, so reading "the whole body" would wait forever.
                    async with self._client.stream("POST", url, json=body) as response:
                        line = await _first_line(response)
                except httpx.HTTPError as exc:
                    errors.append(f"{url}: {type(exc).__name__} {exc}".rstrip())
                    continue
                answer, unusable = _etcd_answer(response.status_code, line)
                if answer is None:
                    # Not etcd's gateway speaking (a member without it answers "404 page not
                    # found", a load balancer an HTML 502) or a member that cannot serve (no
                    # quorum, shutting down): try another one.
                    errors.append(f"{url}: {unusable}")
                    continue
                self._current = index
                error = _etcd_error(answer)
                if error is not None:
                    raise LeaseStoreError(f"etcd: {error}")
                return answer
            errors.append(f"{url}: no answer within {self.request_timeout_s:g} s")
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    @asynccontextmanager
    async def watch(self, key: str, start_revision: int) -> AsyncIterator[
            AsyncIterator[dict[str, Any]]]:
        """A watch on ``key`` from ``start_revision``: yields the stream's ``result`` objects.

        Raises:
            EtcdUnavailable: no endpoint accepted the watch.

        **Resource handling:** the streaming response is closed when the context exits.
        """
        body = {"create_request": {"key": b64(key), "start_revision": str(start_revision)}}
        errors: list[str] = []
        for index in self._order():
            url = self.endpoints[index] + "/v3/watch"
            try:
                with trio.fail_after(self.request_timeout_s):
                    response = await self._client.send(
                        self._client.build_request("POST", url, json=body), stream=True)
            except (httpx.HTTPError, trio.TooSlowError) as exc:
                errors.append(f"{url}: {type(exc).__name__} {exc}".rstrip())
                continue
            try:
                if response.status_code != 200:
                    errors.append(f"{url}: HTTP {response.status_code}")
                    continue
                self._current = index
                results = _results(response, url)
                try:
                    yield results
                finally:
                    with trio.CancelScope(shield=True):
                        await results.aclose()
                return
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await response.aclose()
        raise EtcdUnavailable("no etcd endpoint accepted the watch: " + "; ".join(errors))

    async def aclose(self) -> None:
        await self._client.aclose()


@asynccontextmanager
async def _body(response: httpx.Response) -> AsyncIterator[AsyncIterator[bytes]]:
    """The body's chunks, closed on exit even when not read to the end.

    httpx's ``aiter_*`` are async generators stacked on the stream's own; leaving one
    unfinished (a watch we stop, a keep-alive stream we read one line of) leaves them to the
    garbage collector, which Trio reports as a ResourceWarning. So iterate the stream itself
    and close that iterator here. The gateway does not compress, so raw bytes are the body.
    """
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):  # pragma: no cover - sync transport
        raise TypeError("an async response is needed")
    chunks = stream.__aiter__()
    try:
        yield chunks
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()


async def _first_line(response: httpx.Response, *, linger_s: float = 0.5) -> bytes:
    """The first line of the body (unary answers have no newline: the whole body).

    The gateway ends the keep-alive stream right after its answer (our request body ends), so
    after the first line we read on to the end for up to ``linger_s``: a body read to its end
    leaves no half-read httpx/httpcore generator behind. If a gateway kept it open, the line
    is returned anyway.
    """
    buffer = b""
    async with _body(response) as chunks:
        async for chunk in chunks:
            buffer += chunk
            if b"\n" in buffer:
                with trio.move_on_after(linger_s):
                    async for _ in chunks:
                        pass
                return buffer.split(b"\n", 1)[0]
    return buffer


def _etcd_error(answer: dict[str, Any]) -> str | None:
    """The message of an etcd gateway error answer, else None. etcd 3.4/3.5 answer
    ``{"error", "message", "code"}``; newer gateways ``{"code", "message", "details"}``."""
    if not isinstance(answer.get("code"), int):
        return None
    message = answer.get("error") or answer.get("message")
    return message if isinstance(message, str) else None


def _etcd_answer(status: int, line: bytes) -> tuple[dict[str, Any] | None, str]:
    """``(answer, "")`` when ``line`` (the body's first line, HTTP ``status``) is etcd's
    gateway answering, else ``(None, why it is of no use)``.

    etcd answers JSON objects: a unary result carries ``header``, a streamed one ``result``,
    an error ``code`` and a message (with a 4xx status such as 404 for a lease not found).
    """
    try:
        answer = json.loads(line)
    except ValueError:
        return None, f"HTTP {status}, not JSON: {line[:80]!r}"
    if not isinstance(answer, dict):
        return None, f"HTTP {status}, not a JSON object: {line[:80]!r}"
    if status >= 500 and "result" not in answer:
        return None, f"HTTP {status} {_etcd_error(answer) or line[:80]!r}"
    if _etcd_error(answer) is not None:
        return answer, ""
    if 200 <= status < 300 and ("header" in answer or "result" in answer):
        return answer, ""
    return None, f"HTTP {status}, not an etcd answer: {line[:80]!r}"


def _decode(line: bytes, url: str) -> dict[str, Any]:
    try:
        answer = json.loads(line)
    except ValueError as exc:
        raise EtcdUnavailable(f"{url}: not JSON: {line[:80]!r}") from exc
    if not isinstance(answer, dict):
        raise EtcdUnavailable(f"{url}: not a JSON object: {line[:80]!r}")
    return answer


async def _results(response: httpx.Response, url: str) -> AsyncGenerator[dict[str, Any], None]:
    buffer = b""
    try:
        async with _body(response) as chunks:
            async for chunk in chunks:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    answer = _decode(line, url)
                    if "error" in answer:
                        raise LeaseStoreError(f"etcd watch: {answer['error']}")
                    result = answer.get("result")
                    if isinstance(result, dict):
                        yield result
    except httpx.HTTPError as exc:
        raise EtcdUnavailable(f"{url}: watch broke: {type(exc).__name__} {exc}") from exc
