"""The public async client of codexd's local API (HTTP and the event websocket).

Used by the codexd CLI, the console, the conductor and the tests. Every call goes to codexd over
loopback HTTP through one ``httpx.AsyncClient``, which sends plain HTTP through a lean h11
connection pool on Trio sockets (:class:`UpstreamPool`, which the conductor's proxy uses as it
is); the event stream goes through trio-websocket.

Errors are typed at this boundary:

* :class:`CodexdError` — codexd answered with an error envelope (status, code, message, details).
* :class:`CodexdUnavailable` — codexd could not be reached or did not answer in time.
* :class:`StreamOverflow` — the event websocket was closed because this consumer fell behind;
  reconnect with ``after=exc.last_delivered_seq`` to lose nothing.

Layer: above :mod:`codexd_trio.base` only. The client speaks to codexd over HTTP and never
imports ``protocol``, ``store``, ``core`` or ``web``: the CLI and the conductor use it, and so can
any program of a user's. The modules inside (``_http``, ``_ws``, ``_pool``, …) are private.
"""

from codexd_trio.client._http import CodexdClient
from codexd_trio.client._pool import UpstreamAnswer, UpstreamPool
from codexd_trio.client._ws import (
    CodexdError,
    CodexdUnavailable,
    EventStream,
    StreamOverflow,
    open_websocket,
)

__all__ = [
    "CodexdClient",
    "CodexdError",
    "CodexdUnavailable",
    "EventStream",
    "StreamOverflow",
    "UpstreamAnswer",
    "UpstreamPool",
    "open_websocket",
]
