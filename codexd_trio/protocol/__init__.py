"""Talking to Codex: the app-server child and the protocol spoken with it.

Owns: the child process supervision (:mod:`.child`: spawn in a new session, stdio pumps, stop
the whole process group; its capped log files in :mod:`.childlog`), the sans-IO JSON-RPC
connection (:mod:`.jsonrpc`), the Trio client that pumps it (:mod:`.appserver`) with the typed
app-server calls (:mod:`.calls`), the websocket transport to an app-server codexd attaches to
(:mod:`.transport`), opening either kind (:mod:`.spawn`) and the protocol's errors
(:mod:`.errors`).

May import: :mod:`codexd_trio.base` (and Trio, trio-websocket, msgspec). Never ``store``,
``core``, ``web``, ``client`` or ``cli``: the protocol knows nothing of sessions on disk or HTTP.
A new app-server call (e.g. ``thread/list``) goes in :mod:`.calls`;
what codexd makes of it goes in :mod:`codexd_trio.core`.
"""
