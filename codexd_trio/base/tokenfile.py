"""Reading a token file: one rule for codexd, the conductor, the CLI and the runtime scripts.

Standard library only: ``scripts/runtime/render.py`` loads this file on its own (importing the
package would need ``.venv``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["TokenFileError", "read_token_file"]


class TokenFileError(ValueError):
    """The token file is unreadable, empty, or readable by other users (one line to show)."""


def read_token_file(path: str | os.PathLike[str], *, what: str) -> str:
    """The token in ``path``; the file must be readable by its owner only (mode 600 or 400).

    The message never contains the token.

    Raises:
        TokenFileError: unreadable, empty, or readable by other users.
    """
    try:
        mode = os.stat(path).st_mode
        token = Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        raise TokenFileError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise TokenFileError(
            f"the {what} file {path} is readable by other users "
            f"(mode {stat.S_IMODE(mode):03o}); run: chmod 600 {path}"
        )
    if not token:
        raise TokenFileError(f"the {what} file {path} is empty")
    return token
