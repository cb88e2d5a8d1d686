"""The jobs of ``scripts/runtime/render.py``: configuration (:mod:`.config`), rendering
(:mod:`.render`), static checks (:mod:`.check`, :mod:`.check_peers`), probes of a running node
(:mod:`.probe`) and the command line (:mod:`.cli`); :mod:`.common` holds what they share.

Standard library only: the runtime scripts run it with any Python 3.11+ before the project's
``.venv`` exists. What it shares with the daemons (the Codex binary locator, the loopback rule,
the token-file rule) it loads by path from ``codexd_trio/base/``, never by importing the package.
"""
