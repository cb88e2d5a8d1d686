"""The status-api: a read-only status view over the conductor, its own daemon.

``python -m conductor_trio.status_api start`` (launchd, systemd, ``scripts/up.sh``) and the
``status-api`` console script run :func:`.service.main`.

May import: the conductor's ``web`` (the status page renderer and the OpenAPI operations it
shares with the conductor), ``health``, ``config``, ``contracts`` and codexd_trio's web plumbing
and base. Nothing imports it.
"""
