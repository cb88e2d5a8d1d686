"""The ``codexd`` command line: the everyday commands that drive Codex (sessions, new, send,
interrupt, show, threads, approvals, approve, decline, events) and the operator's (start, status,
config, smoke, console). docs/cli.md describes them all.

Owns: the entry point and dispatch (:mod:`.main`, the console script ``codexd`` and
``python -m codexd_trio``); the operator commands' parsers and the usage text (:mod:`.parsers`);
how an everyday command reaches codexd or a conductor, its exit statuses and ids by prefix
(:mod:`.connect`); events as text (:mod:`.render`, sans-IO) and ``send``'s live stream
(:mod:`.turnprint`, sans-IO); one module per command group with its parsers beside it
(:mod:`.sessions`, :mod:`.send`, :mod:`.conversation`, :mod:`.approvals`, :mod:`.events`);
``status`` (:mod:`.status`), the Trio REPL (:mod:`.console`) and the self-check with the scripted
model (:mod:`.smoke`).

May import: every layer of codexd_trio (it is the top one): ``web`` to serve, ``core`` to run the
Daemon, ``client`` to talk to a running codexd, ``store`` to read its files when it is down, and
:mod:`codexd_trio.testing` (``smoke``). Nothing imports ``cli``. A new ``codexd`` command is a
``cmd_*`` function and its parser (beside it in its group's module; in :mod:`.parsers` for an
operator command), listed in :mod:`.main`'s ``HANDLERS`` and ``ALL_PARSERS``; every module stays
under 450 lines.
"""
