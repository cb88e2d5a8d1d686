"""Talking to Codex: the app-server child and the protocol spoken with it.

Owns: the child process supervision (:mod:`.child`: spawn in a new session, stdio pumps, stop
the whole process group), the sans-IO JSON-RPC connection (:mod:`.jsonrpc`), the Trio client
that pumps it (:mod:`.appserver`), the websocket transport to an app-server codexd attaches to
(:mod:`.transport`), opening either kind (:mod:`.spawn`) and the protocol's errors
(:mod:`.errors`).

May import: :mod:`codexd_trio.base` (and Trio, trio-websocket, msgspec). Never ``store``,
``core``, ``web``, ``client`` or ``cli``: the protocol knows nothing of sessions on disk or HTTP.
A new app-server call (e.g. ``thread/list``) goes in :mod:`.appserver` (or a sibling module here);
what codexd makes of it goes in :mod:`codexd_trio.core`.
"""
