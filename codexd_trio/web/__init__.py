"""Web plumbing shared by every daemon of the node (codexd, conductor, status-api).

* :mod:`~codexd_trio.web.app`: :func:`~codexd_trio.web.app.install` (JSON errors, body draining,
  ``/metrics``, ``/openapi.json``, the middlewares) and the Hypercorn serve helper;
* :mod:`~codexd_trio.web.envelope`: the envelope, the one error envelope, the code → status table;
* :mod:`~codexd_trio.web.callers`: who may call (``CallerGuard``);
* :mod:`~codexd_trio.web.websockets`: reading (and dropping) what a stream's client sends;
* :mod:`~codexd_trio.web.observe`, :mod:`~codexd_trio.web.context`: request ids, metrics,
  access log;
* :mod:`~codexd_trio.web.metrics`, :mod:`~codexd_trio.web.openapi`,
  :mod:`~codexd_trio.web.addresses`.

This package's ``__init__`` imports no web framework: :mod:`codexd_trio.config` uses
:mod:`~codexd_trio.web.addresses` and :mod:`~codexd_trio.web.callers`.
"""

from codexd_trio.web.callers import CallerGuard, CallerPolicy, guard

__all__ = ["CallerGuard", "CallerPolicy", "guard"]
