"""The HTTP layer: web plumbing shared by every daemon of the node, and codexd's routes.

Shared (codexd, conductor, status-api):

* :mod:`~codexd_trio.web.app`: :func:`~codexd_trio.web.app.install` (JSON errors, body draining,
  ``/metrics``, ``/openapi.json``, the middlewares) and the Hypercorn serve helper;
* :mod:`~codexd_trio.web.envelope`: the envelope, the one error envelope, the code → status table;
* :mod:`~codexd_trio.web.callers`: who may call (``CallerGuard``);
* :mod:`~codexd_trio.web.websockets`: reading (and dropping) what a stream's client sends;
* :mod:`~codexd_trio.web.observe`: request ids, HTTP metrics, the access log;
* :mod:`~codexd_trio.web.openapi`: the OpenAPI document built from the routes.

codexd's own: :mod:`~codexd_trio.web.routes` (the Quart-Trio routes over the Daemon, and
``serve_api``), :mod:`~codexd_trio.web.queue_routes` (the turn queue and the hold) and
:mod:`~codexd_trio.web.api_doc` (their OpenAPI operations).

May import: :mod:`codexd_trio.core` (codexd's routes call the Daemon), ``store``, ``protocol`` and
:mod:`codexd_trio.base`; never ``client`` or ``cli``. Of codexd_trio, only this package imports
Quart or Hypercorn (in the conductor: its ``web``, ``status_api`` and CLI). New routes (conversation
records, threads, the turn queue) go in a module here beside :mod:`~codexd_trio.web.routes`, with
their operations in :mod:`~codexd_trio.web.api_doc`.
"""

from codexd_trio.web.callers import CallerGuard, CallerPolicy, guard

__all__ = ["CallerGuard", "CallerPolicy", "guard"]
