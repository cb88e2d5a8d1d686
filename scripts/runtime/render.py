#!/usr/bin/env python3
"""Render, check and probe the node's service-manager files (launchd plists, systemd units).

Shared by the shell scripts in ``scripts/runtime/``. Standard library only, so it runs with any
Python 3.11+ before the project's ``.venv`` exists (the scripts prefer ``.venv/bin/python``).

Subcommands:

``render``  fill the templates in ``launchd/`` or ``systemd/`` from one configuration and write
            the installed copies into ``--out-dir`` (or print them with ``--stdout``). Prints a
            manifest on stdout: ``file<TAB>service<TAB>path`` and ``dir<TAB>path`` lines (the
            directories an install must create), and ``sockdir<TAB>path`` with the codex
            app-server service (the folder of its socket, to create when missing).
``check``   static checks of rendered files; one line per problem on stdout, exit 1 if any.
``probe``   runtime probes of a running node over HTTP; one ``ok``/``FAIL`` line per probe.
            codexd is called with its bearer token when the node has one; the token is never
            printed and never passed on a command line.

The codex app-server service (``codex-app-server``) is rendered only on request
(``--server-strategy external --external-app-server``): one long-lived ``codex app-server --listen
<endpoint>`` that codexd attaches to instead of spawning its own child.

Exit status: 0 fine, 1 problems found, 2 bad usage or bad configuration (one line on stderr).

This file is the entry point only; the jobs are the modules of ``baa_runtime/`` beside it:
``config`` (the configuration and each service's environment), ``render`` (plists and units),
``check`` and ``check_peers`` (static checks), ``probe`` (a running node), ``cli`` (the commands),
with what they share in ``common``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run by path (``python scripts/runtime/render.py``, also with -S and before .venv exists): the
# package beside this file is found whatever the interpreter's own path settings.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baa_runtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
