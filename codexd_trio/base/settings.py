"""Rules for reading settings that every daemon shares: API bases, codexd's token, allowed
origins and hosts. A bad value raises :class:`ConfigError`, whose message is one line for a
person (the CLIs print it and exit 2).

Used by codexd's configuration (:mod:`codexd_trio.core.config`), the conductor's and the
status-api's (:mod:`conductor_trio.config`) and ``scripts/up.sh``'s node launcher.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from codexd_trio.base import tokenfile
from codexd_trio.base.addresses import normalize_origin, split_host_header

__all__ = [
    "SHARED_TOKEN_ENV",
    "SHARED_TOKEN_FILE_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "ConfigError",
    "parse_hosts",
    "parse_origins",
    "read_token_file",
    "resolve_codexd_token",
    "resolve_shared_token",
    "split_base",
]


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message is one line for a person."""


def split_base(base: str) -> tuple[str, int]:
    """``(host, port)`` of an ``http://host:port`` API base; :class:`ConfigError` otherwise.

    Shared by codexd, the conductor and the status-api.
    """
    parts = urlsplit(base)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"an API base must look like http://127.0.0.1:4319, got {base!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"an API base must not have a path or query, got {base!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"an API base has an invalid port: {base!r}") from None
    if port is None:
        raise ConfigError(f"an API base needs an explicit port, got {base!r}")
    return parts.hostname, port


TOKEN_ENV = "BAA_CODEXD_TOKEN"
TOKEN_FILE_ENV = "BAA_CODEXD_TOKEN_FILE"


def read_token_file(path: str | os.PathLike[str], *, what: str) -> str:
    """The token in ``path`` (:mod:`codexd_trio.base.tokenfile`'s rule).

    Raises:
        ConfigError: unreadable, empty, or readable by other users.
    """
    try:
        return tokenfile.read_token_file(path, what=what)
    except tokenfile.TokenFileError as exc:
        raise ConfigError(str(exc)) from None


def resolve_codexd_token(
    env: Mapping[str, str] | None = None, *, token_file: str | None = None
) -> tuple[str | None, str]:
    """codexd's bearer token and where it came from (``file``, ``env`` or ``none``).

    Read the same way by codexd, the conductor, the CLI and the runtime scripts:
    ``token_file`` (a flag), else ``$BAA_CODEXD_TOKEN_FILE``, else ``$BAA_CODEXD_TOKEN``.
    """
    environ = os.environ if env is None else env
    path = token_file or environ.get(TOKEN_FILE_ENV)
    if path:
        return read_token_file(path, what="codexd token"), "file"
    token = environ.get(TOKEN_ENV, "").strip()
    return (token, "env") if token else (None, "none")


SHARED_TOKEN_ENV = "BAA_SHARED_TOKEN"
SHARED_TOKEN_FILE_ENV = "BAA_SHARED_TOKEN_FILE"


def resolve_shared_token(
    env: Mapping[str, str] | None = None, *, token_file: str | None = None
) -> tuple[str | None, str]:
    """The conductor's shared token and where it came from (``file``, ``env`` or ``none``).

    Read the same way by the conductor and by whatever calls it (the ``codexd`` and
    ``conductor`` commands, ``scripts/up.sh``'s demo turn): ``token_file`` (a flag), else
    ``$BAA_SHARED_TOKEN_FILE``, else ``$BAA_SHARED_TOKEN``.

    Raises:
        ConfigError: the file cannot be read or is empty.
    """
    environ = os.environ if env is None else env
    path = token_file or environ.get(SHARED_TOKEN_FILE_ENV)
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the shared token file {path}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"the shared token file {path} is empty")
        return token, "file"
    token = environ.get(SHARED_TOKEN_ENV, "").strip()
    return (token, "env") if token else (None, "none")


def parse_origins(values: Sequence[str], *, variable: str) -> tuple[str, ...]:
    """Allowed origins from repeated flags or a comma-separated variable, each checked."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            origin = normalize_origin(item)
            if origin is None:
                raise ConfigError(
                    f"{variable}: {item.strip()!r} is not an origin like http://host:port"
                )
            out.append(origin)
    return tuple(out)


def parse_hosts(values: Sequence[str], *, variable: str) -> tuple[str, ...]:
    """Allowed ``Host`` names from repeated flags or a comma-separated variable, each checked.

    A host is a bare name or address (``mini.local``, ``10.0.0.7``, ``[fd7a::1]``): no scheme,
    port or path, since the guard compares it with the ``Host`` header's host part.
    """
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            parsed = split_host_header(item)
            if parsed is None or parsed[1] is not None or any(c in parsed[0] for c in "/@?#\\ "):
                raise ConfigError(
                    f"{variable}: {item.strip()!r} is not a host name like mini.local, "
                    "10.0.0.7 or [fd7a::1] (no scheme, port or path)"
                )
            out.append(parsed[0])
    return tuple(out)
