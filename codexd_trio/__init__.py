"""codexd: the Trio supervisor of one real ``codex app-server`` child."""

__version__ = "0.1.0"
