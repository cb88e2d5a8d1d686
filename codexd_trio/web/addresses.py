"""Address helpers shared by every daemon's config and web layer."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


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
