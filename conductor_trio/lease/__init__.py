"""The leader lease: which conductor of a node (or of several nodes) leads.

Owns: the lease records and the store-backed keeper — a file on one machine, or memory in tests
(:mod:`.file`: ``LeaseHolder``, ``LeaseRole``, ``LeaseKeeper``, ``FileLeaseStore``) — and the etcd
keeper (:mod:`.etcd`: campaign, keep-alive, watch, fencing) over etcd's JSON gateway
(:mod:`.etcd_gateway`).

May import: :mod:`conductor_trio.config` and :mod:`codexd_trio.base`. Never the conductor's
``service``, ``web`` or ``contracts`` (the contracts embed the lease's records, not the other way
round).
"""
