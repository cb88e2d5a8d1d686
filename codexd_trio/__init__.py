"""codexd: the Trio supervisor of one real ``codex app-server`` child.

Layers, top to bottom (import-linter checks them, see ``[tool.importlinter]`` in pyproject):
``cli`` → ``web`` (HTTP) and ``client`` and ``testing`` → ``core`` (domain, Daemon) → ``store``
(files) and ``protocol`` (Codex) → ``base``. Each subpackage's docstring says what it owns and
what it may import; ``docs/design-notes.md`` has the map.
"""

__version__ = "0.1.0"
