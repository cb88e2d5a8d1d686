"""Request bodies for tests that send more than a server accepts."""

from __future__ import annotations

import json

import httpx


class OneChunk(httpx.AsyncByteStream):
    """A request body sent as one chunk, with its ``Content-Length`` known up front.

    Why not ``content=bytes``: httpx wraps any body in an async *generator*. When the server
    answers early (413 with ``Connection: close``), httpcore abandons the body mid-iteration and
    never closes it, so the generator is finalized later by the garbage collector, outside its
    task (``PytestUnraisableExceptionWarning``). A plain async iterator has nothing to finalize.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._sent = False

    def __aiter__(self) -> OneChunk:
        return self

    async def __anext__(self) -> bytes:
        if self._sent:
            raise StopAsyncIteration
        self._sent = True
        return self.data


async def _post_bytes(http: httpx.AsyncClient, path: str, data: bytes) -> httpx.Response:
    headers = {"content-length": str(len(data)), "content-type": "application/json"}
    request = http.build_request("POST", path, headers=headers)
    request.stream = OneChunk(data)
    return await http.send(request)


async def post_json(http: httpx.AsyncClient, path: str, body: object) -> httpx.Response:
    """POST ``body`` as JSON through :class:`OneChunk`: safe to cancel mid-request (a test that
    plays a client giving up must not leave httpx's body generator to the garbage collector)."""
    return await _post_bytes(http, path, json.dumps(body).encode())


async def post_oversized(http: httpx.AsyncClient, path: str, limit: int = 1024 * 1024
                         ) -> httpx.Response:
    """POST a JSON object just over ``limit`` bytes to ``path`` (its ``input`` is padding)."""
    return await _post_bytes(http, path, b'{"input": "' + b"x" * (limit + 10) + b'"}')
