"""Re-exports of the shared web layer (:mod:`codexd_trio.web`) under the names the conductor's
modules used before it was shared; new code imports from :mod:`codexd_trio.web` directly."""

from __future__ import annotations

from codexd_trio.web.addresses import is_loopback
from codexd_trio.web.app import serve_app
from codexd_trio.web.envelope import envelope as ok
from codexd_trio.web.envelope import error

__all__ = ["error", "is_loopback", "ok", "serve_app"]
