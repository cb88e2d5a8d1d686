"""codexd's domain and its orchestration.

Owns: the sans-IO session registry and the fold of Codex's notifications into it
(:mod:`.domain`, its first half in ``_book``, its turn queues in ``_queueing`` over the sans-IO
:mod:`.queue`; turn outcomes in :mod:`.turns`), the queue dispatcher (:mod:`.dispatcher`), the
session and turn operations on a child (:mod:`.sessions`), approvals (:mod:`.approvals`), the child
supervisor and its incarnations (:mod:`.supervisor`), the event hub and its subscribers
(:mod:`.hub`, :mod:`.subscription`), status and metrics (:mod:`.status`, :mod:`.metrics`),
codexd's configuration (:mod:`.config`) and the composition root, :class:`.service.Daemon`
(its API operations in ``_operations`` and ``_queue_ops``).

May import: :mod:`codexd_trio.store`, :mod:`codexd_trio.protocol` and :mod:`codexd_trio.base`.
Never ``web``, ``client`` or ``cli`` (nor Quart or Hypercorn): the HTTP layer calls the Daemon,
never the other way round. New domain features (the fold of conversation records, Codex
threads) are modules here.
"""
