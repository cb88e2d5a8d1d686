"""Local HTTP receivers standing in for notification sinks: a webhook for Apprise's ``json://``
and an ntfy server for ``ntfy://`` (it keeps the ``X-Actions`` and ``X-Click`` headers, where
ntfy's action buttons travel). Each records every POST; ``refuse`` makes it answer 503 (a sink
that is down) until cleared."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from codexd_trio.web.app import install_errors, serve_app


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    accepted: bool


@dataclass
class Receiver:
    url: str = ""
    refuse: bool = False
    posts: list[Post] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def hostport(self) -> str:
        return self.url.removeprefix("http://")

    @property
    def accepted(self) -> list[Post]:
        return [p for p in self.posts if p.accepted]

    async def wait_for(self, match: Callable[[Post], bool], count: int = 1) -> list[Post]:
        """The accepted posts that ``match``, once there are ``count`` (bound it by a scope)."""
        while len(found := [p for p in self.accepted if match(p)]) < count:
            await self._changed.wait()
        return found


@asynccontextmanager
async def open_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = QuartTrio("notify_receiver")
    install_errors(app, name="receiver", log=logging.getLogger("receiver"),
                   max_body_bytes=1024 * 1024)

    @app.post("/", defaults={"rest": ""})
    @app.post("/<path:rest>")
    async def hook(rest: str) -> Response:
        raw = await request.get_data(as_text=False)
        assert isinstance(raw, bytes)
        receiver.posts.append(Post("/" + rest, {k.lower(): v for k, v in request.headers.items()},
                                   json.loads(raw or b"{}"), not receiver.refuse))
        receiver._changed.set()
        receiver._changed = trio.Event()
        if receiver.refuse:
            return Response("down for maintenance", status=503)
        return Response('{"success": true}', content_type="application/json")

    async with trio.open_nursery() as nursery:
        receiver.url = await nursery.start(serve_app, app, "127.0.0.1", 0)
        try:
            yield receiver
        finally:
            nursery.cancel_scope.cancel(reason="receiver closing")


def ntfy_actions(header: str) -> list[list[str]]:
    """ntfy's short ``X-Actions`` form: ``action, label, url, key=value...; ...``."""
    return [[part.strip() for part in action.split(",")] for action in header.split(";")]
