"""conductor and status-api: the node's local API over codexd.

Layers, top to bottom (import-linter checks them, see ``[tool.importlinter]`` in pyproject):
``cli`` and ``node_up`` (commands) → ``status_api`` → ``web`` (the HTTP app) → ``service`` (the
Conductor: probes, views, loops) and ``metrics`` → ``contracts``, ``health`` and ``hold`` (the
mode's hold on codexd's turn queues) → ``lease`` and ``mode`` → ``config`` and ``_process``.
From codexd_trio it uses the client, the base layer and the shared web plumbing, never codexd's
core, store or protocol.
"""

__version__ = "0.1.0"
