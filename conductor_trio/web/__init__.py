"""The conductor's HTTP layer: its Quart-Trio app and everything only HTTP needs.

Owns: the app and its routes (:mod:`.app`, with :func:`.app.serve_conductor`, which runs the
conductor with Hypercorn), who may call ``/v1/codex/*`` (:mod:`.access`), the proxy and the event
relay to codexd (:mod:`.proxy`), the OpenAPI operations of the conductor and the status-api
(:mod:`.api_doc`), the status page renderer (:mod:`.status_page`) and the operator console's
assets (:mod:`.console`, package data).

May import: :mod:`conductor_trio.service` and everything below it, and from codexd_trio its shared
web plumbing (:mod:`codexd_trio.web`), its client, its OpenAPI operations
(:mod:`codexd_trio.web.api_doc`, to describe the proxied routes) and :mod:`codexd_trio.base`. With
the status-api and the CLI, the only part of the conductor that imports Quart or Hypercorn. New
routes (device pairing, notifications, fleet views) are modules here that call their own packages
(``conductor_trio/auth/``, ``notify/``, ``fleet/``).
"""
