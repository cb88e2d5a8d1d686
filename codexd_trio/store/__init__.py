"""Files on disk: everything codexd keeps under ``state/codexd/`` and ``logs/codexd/``.

Owns: atomic JSON documents with coalescing writers (:mod:`.documents`), the durable event log
with group commit, rotation and replay (:mod:`.eventlog`, with its file helpers in
``_eventlog_files`` and its writing half in ``_eventlog_commit``), the session table and the
registry snapshot (:mod:`.sessiontable`), the idempotency journal (:mod:`.idempotency`, with
``_idempotency_journal`` and ``_idempotency_records``) and the state dir that opens them all
together (:mod:`.statedir`).

May import: :mod:`codexd_trio.base` (and Trio, msgspec). Never ``protocol``, ``core``, ``web``,
``client`` or ``cli``: what the store needs from above (the configuration) comes in as a
structural type (:class:`.statedir.StateConfig`). A new kind of record on disk (e.g. per-turn
conversation records) is a module here; what it means is folded in :mod:`codexd_trio.core`.
"""
