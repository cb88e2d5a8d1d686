"""Atomic file replacement: the one implementation lives in :mod:`codexd_trio.store`
(unique temp name, fsync, rename, fsync of the directory); this name stays for the conductor's
modules that import it."""

from __future__ import annotations

from codexd_trio.store import atomic_write_bytes as write_atomic

__all__ = ["write_atomic"]
