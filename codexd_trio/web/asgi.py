"""Answering a request at the ASGI level, in front of Quart: the pieces the fast paths share
(codexd's ``POST /v1/codexd/turn``, :mod:`codexd_trio.web.turns`; the conductor's relays,
:mod:`conductor_trio.web.fastpath`).

A fast path answers only the ordinary case and hands everything else to Quart; these helpers
read what it needs from the ASGI scope, take the body, and send a complete answer.
"""

from __future__ import annotations

from typing import Any

from quart import Response

from codexd_trio.web.callers import Receive, Send

__all__ = ["Headers", "plain_length", "read_body", "send_answer", "send_response"]


class Headers:
    """The request headers, looked up case-insensitively (first value wins, as in Quart)."""

    def __init__(self, raw: Any) -> None:
        self._map: dict[str, str] = {}
        for name, value in raw or ():
            self._map.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))

    def get(self, key: str) -> str | None:
        return self._map.get(key.lower())


def plain_length(headers: Headers, limit: int) -> bool:
    """Whether the body comes with a plain ``Content-Length`` within ``limit`` (no chunked
    body, no length missing or malformed: those are Quart's to answer, 413 included)."""
    if headers.get("Transfer-Encoding") is not None:
        return False
    length = headers.get("Content-Length")
    return length is None or (length.isascii() and length.isdigit() and int(length) <= limit)


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body (its length is already known to be within the limit), or
    ``None`` when the client disconnected."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_answer(send: Send, status: int, body: bytes, content_type: str,
                      extra: list[tuple[str, str]]) -> None:
    """Send a whole answer: the status, ``Content-Type``, ``Content-Length``, ``extra``."""
    headers = [(b"content-type", content_type.encode("latin-1")),
               (b"content-length", str(len(body)).encode("ascii"))]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_response(send: Send, response: Response) -> None:
    """Send a Quart ``response`` (an envelope built by the routes' own functions) whole."""
    body = await response.get_data(as_text=False)
    extra = [(name, value) for name, value in response.headers.items()
             if name.lower() not in ("content-type", "content-length")]
    await send_answer(send, response.status_code, body,
                      response.headers.get("Content-Type", "application/json"), extra)
