"""Web plumbing shared by every daemon of the node (codexd, conductor, status-api)."""

from codexd_trio.web.callers import CallerGuard, CallerPolicy, guard

__all__ = ["CallerGuard", "CallerPolicy", "guard"]
