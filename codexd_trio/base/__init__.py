"""The bottom layer: process-level plumbing and the shapes every other layer shares.

Owns: the wire and file shapes (:mod:`.contracts`) and the domain error codes (:mod:`.errors`); the
settings rules every daemon shares (:mod:`.settings`: API bases, codexd's token, origins, hosts);
durable file primitives (:mod:`.files`); the worker-thread limiters (:mod:`.limiters`); the ready
line, signals and exception unwrapping of a daemon process (:mod:`.process`); logging setup and the
request-id context variable (:mod:`.logsetup`, :mod:`.context`); the per-app Prometheus registry
(:mod:`.metrics`); token files (:mod:`.tokenfile`), the loopback and origin rules
(:mod:`.addresses`) and the Codex binary locator (:mod:`.codexbin`).

May import: the standard library, ``trio``, ``msgspec`` and ``prometheus_client`` — nothing
else of the project (checked by import-linter, see pyproject's ``[tool.importlinter]``).
``tokenfile``, ``addresses`` and ``codexbin`` stay standard-library only:
``scripts/runtime/render.py`` loads them by file path, before the project's ``.venv`` exists.
"""
