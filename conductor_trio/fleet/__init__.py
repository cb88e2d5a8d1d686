"""The fleet (issue 28): many nodes, one API on every node.

Owns: the node registration and the session-owner records in etcd (:mod:`.registry`), the
calls one conductor makes to the others, in parallel and each under a deadline (:mod:`.peers`),
the sans-IO parts — records, placement, the merged pages and their cursors (:mod:`.records`,
:mod:`.merge`) — and the :class:`~.fleet.Fleet` that puts them together for the web layer's
``/v1/fleet/*`` routes and the service's registration loop (:mod:`.fleet`).

May import: ``contracts``, ``health``, ``lease`` (the etcd gateway), ``config`` and below,
codexd's ``base``. Never the web layer, the service or Quart. See ``docs/fleet.md``.
"""
