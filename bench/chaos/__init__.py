"""Chaos and soak harness: a real node under load and faults, its invariants checked as it runs.

``python -m bench.chaos --quick`` (≤ 60 s, CI) or ``--minutes N`` (a soak) starts a whole node
as separate processes, each in its own process group — the scripted model
(``python -m codexd_trio.testing --prompted``), codexd with its real Codex child, the conductor
(two of them sharing a real etcd with ``--etcd``) and the status-api — and then, from a seeded
random generator whose seed is printed so a run can be replayed:

* clients (:mod:`bench.chaos.clients`, one table of actions) create sessions, start turns (some
  keyed, some retried with the same key), steer, interrupt, decide approvals and read pages,
  through codexd and through the conductor;
* subscribers (:mod:`bench.chaos.streams`) follow the event stream, normal, slow, chatty or
  dropping and resuming with ``after=``, through codexd and through the conductor's relay;
* fault lanes (:mod:`bench.chaos.faults`, one table of faults) SIGKILL and SIGSTOP/SIGCONT the
  Codex child, codexd, the conductor and etcd, cut client connections mid-request and
  mid-stream, and fill and heal the disk that holds codexd's state and logs
  (:mod:`bench.chaos.disk`).

Invariants are checked while it runs from what the clients see and at the end from the files
(:mod:`bench.chaos.checks`); the report (:mod:`bench.chaos.report`) is one JSON document with
every figure and violation, and a PNG plot over time (:mod:`bench.chaos.plot`).
"""
