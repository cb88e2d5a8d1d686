"""Notifications (issue 25): approvals reach their person.

Owns: what a notification says (:mod:`.messages`, sans-IO), the durable outbox
(:mod:`.outbox`), sending with Apprise in worker threads (:mod:`.send`), and the notifier that
reads codexd's event stream from its persisted cursor and runs one sender per sink
(:mod:`.notifier`).

May import: :mod:`conductor_trio.auth` (the approvals' action links), ``contracts``, ``config``
and below, codexd's ``client`` and ``base``. Never the web layer, the service or Quart.
"""
