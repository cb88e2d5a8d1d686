"""The conductor's and status-api's process helpers (most are shared with codexd)."""

from __future__ import annotations

import sys

from codexd_trio.base.process import first_leaf, print_ready, stop_on_signal

__all__ = ["fail", "first_leaf", "print_ready", "stop_on_signal"]


def fail(prog: str, message: str, status: int) -> int:
    """Print ``prog: message`` as one line on stderr and return ``status``."""
    sys.stderr.write(f"{prog}: {message}\n")
    sys.stderr.flush()
    return status
