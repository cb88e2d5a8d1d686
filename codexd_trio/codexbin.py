"""``python -m codexd_trio.codexbin``: the command scripts/setup.sh, .ci/run and the README run.

The locator itself is :mod:`codexd_trio.base.codexbin`; this entry point only keeps the command
short and stable. Import from the base module, not from here.
"""

from __future__ import annotations

from codexd_trio.base.codexbin import main

if __name__ == "__main__":
    raise SystemExit(main())
