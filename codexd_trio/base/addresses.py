"""Address helpers shared by every daemon's config and web layer.

Standard library only: ``scripts/runtime/render.py`` loads this file by path, without the
project's environment.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["is_loopback", "normalize_origin", "split_host_header"]


def is_loopback(address: str | None) -> bool:
    """Whether a host or peer address is loopback: 127.0.0.0/8, ``::1`` or ``localhost``.

    Accepts what config files hold (``localhost``, ``[::1]``) and what ASGI servers report as
    the peer (``::1%lo`` with a zone); ``None`` or anything unparsable is not loopback.
    """
    if not address:
        return False
    host = address.strip("[]").split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_header(value: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of a ``Host`` header value (lower-cased, IPv6 without brackets).

    Returns ``None`` for a value that is not a host with an optional numeric port.
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
    else:
        host, sep, port_text = value.partition(":")
        rest = sep + port_text
    if not host:
        return None
    if rest == "":
        return host, None
    if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
        return None
    return host, int(rest[1:])


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, or ``None`` if ``origin`` is not an origin.

    ``null`` (sandboxed frames, ``file:`` pages) is not an origin anyone can allow.
    """
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
