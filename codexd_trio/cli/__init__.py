"""The ``codexd`` command line: start, status, config, events, smoke, console.

Owns: the commands (:mod:`.main`, the console script ``codexd`` and ``python -m codexd_trio``),
their parsers (:mod:`.parsers`), ``status`` and ``events`` (:mod:`.status`), the Trio REPL
(:mod:`.console`) and the self-check with the scripted model (:mod:`.smoke`).

May import: every layer of codexd_trio (it is the top one): ``web`` to serve, ``core`` to run the
Daemon, ``client`` to talk to a running codexd, ``store`` to read its files when it is down, and
:mod:`codexd_trio.testing` (``smoke``). Nothing imports ``cli``. A new ``codexd`` command is a
parser in :mod:`.parsers` and a ``cmd_*`` function (in its own module when it is more than a few
lines).
"""
