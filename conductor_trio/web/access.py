"""Who may use the conductor's guarded routes: the conductor's rows of CONTRACT.md "Who may call".

Plain functions over the configuration and what the caller sent (no web framework), so the rules
are tested on their own; :mod:`conductor_trio.web.app` applies them before a ``/v1/codex/*`` request
or relay websocket reaches a route, and on ``/v1/system/*`` writes.

* ``/v1/codex/*`` when codexd has a token (``BAA_CODEXD_TOKEN[_FILE]``): every call — reads,
  writes, the relay websocket — needs the caller's own credential, the shared token
  (``BAA_SHARED_TOKEN[_FILE]``), wherever the conductor listens. The conductor attaches codexd's
  token to what it forwards, so a caller it did not authenticate would borrow that token: another
  user of the machine would run turns as the node. Without a shared token configured, nobody can
  present one, and every such call is refused with a message naming the setting.
* ``/v1/codex/*`` when codexd has no token: codexd itself trusts loopback, and so does the
  conductor on loopback; an exposed conductor (tailnet, LAN) needs the shared token for writes.
* ``/v1/system/*`` writes: the shared token when one is configured, else loopback callers only.
* ``/v1/fleet/*`` (issue 28): the conductor calls other nodes (and itself) with the shared
  token, so a caller must present its own credential — the shared token or a device token —
  whenever a shared token is configured, reads included; with etcd and no shared token the
  fleet has no node credential and every fleet route is refused. One node without a shared
  token: the same rules as ``/v1/codex/*`` (the fleet is then this node alone).

Device tokens (issue 25, :mod:`conductor_trio.auth.devices`) count wherever the shared token
does for ``/v1/codex/*``, and for ``/v1/system/*`` only on devices granted ``system``. A device
token that is revoked or unknown is refused on every route that checks callers, even where no
credential is needed, so a revoked phone learns so at once. Pairing codes (``POST /v1/pair``)
and action links (``/v1/actions/*``) are credentials of their own, checked by their routes.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from codexd_trio.base.addresses import is_loopback, split_host_header
from codexd_trio.web.callers import LOOPBACK_NAMES, Refusal, bearer_matches
from conductor_trio.auth.devices import Device, DeviceStore, is_device_token
from conductor_trio.config import ConductorConfig

__all__ = [
    "CODEX_PREFIX",
    "FLEET_PREFIX",
    "SHARED_TOKEN_SETTING",
    "WRITE_METHODS",
    "Caller",
    "caller_address",
    "codex_access",
    "codex_needs_credential",
    "codex_refusal",
    "device_access",
    "fleet_access",
    "request_address",
    "shared_token_refusal",
]

class _Headers(Protocol):
    def get(self, key: str) -> str | None: ...


# The proxied routes (the conductor's own view is ``/v1/codex``, without the slash).
CODEX_PREFIX = "/v1/codex/"
# The fleet's routes (issue 28).
FLEET_PREFIX = "/v1/fleet/"
# What an operator sets to give the conductor its shared token (the file form is preferred).
SHARED_TOKEN_SETTING = "BAA_SHARED_TOKEN_FILE"
# The methods that change something under /v1/codex/* (DELETE: removing a queued turn).
WRITE_METHODS = frozenset({"POST", "DELETE"})


@dataclass(frozen=True)
class Caller:
    """What a request or websocket upgrade presents.

    Args:
        method: the HTTP method, or ``WS`` for a websocket upgrade.
        authorization: the ``Authorization`` header, if any.
        query_tokens: the ``?token=`` values of a websocket upgrade (browsers cannot set headers
            on one); ignored on HTTP requests, where a token in the URL would end up in logs and
            browser history.
        remote_addr: the peer address.
    """

    method: str
    authorization: str | None = None
    query_tokens: Sequence[str] = ()
    remote_addr: str | None = None

    def presents(self, token: str) -> bool:
        """Whether the caller carries ``token`` (constant-time comparisons)."""
        if bearer_matches(self.authorization, token):
            return True
        if self.method != "WS" or not self.query_tokens:
            return False
        return hmac.compare_digest(self.query_tokens[-1].encode(), token.encode())

    def credential(self) -> str | None:
        """The bearer credential presented (``?token=`` only on a websocket upgrade)."""
        scheme, _, given = (self.authorization or "").partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            return given.strip()
        if self.method == "WS" and self.query_tokens:
            return self.query_tokens[-1]
        return None


def device_access(devices: DeviceStore | None, caller: Caller
                  ) -> tuple[Device | None, Refusal | None]:
    """The live device whose token ``caller`` presents, or why its device token is refused;
    ``(None, None)`` when it presents none."""
    given = caller.credential()
    if devices is None or given is None or not is_device_token(given):
        return None, None
    device, why = devices.check(given)
    if why == "ok":
        return device, None
    if why == "revoked" and device is not None:
        return None, Refusal(
            401, "unauthorized",
            "This device was revoked: its token no longer works. Pair it again with "
            "`conductor pair` if it should have access.",
            reason="device_revoked", deviceId=device.id)
    return None, Refusal(
        401, "unauthorized",
        "Unknown device token: pair this device with `conductor pair`.",
        reason="device_unknown")


def codex_access(config: ConductorConfig, caller: Caller, devices: DeviceStore | None = None
                 ) -> tuple[Device | None, Refusal | None]:
    """Whether ``caller`` may use ``/v1/codex/*``: the device it came as (if any), or why not.

    Every device may operate Codex (scope ``codex``)."""
    device, refused = device_access(devices, caller)
    if refused is not None or device is not None:
        return device, refused
    return None, codex_refusal(config, caller)


def fleet_access(config: ConductorConfig, caller: Caller, devices: DeviceStore | None = None
                 ) -> tuple[Device | None, Refusal | None]:
    """Whether ``caller`` may use ``/v1/fleet/*``: the device it came as (if any), or why not.

    A fleet route calls conductors with the node credential (the shared token): it must never
    do so for a caller it has not authenticated."""
    device, refused = device_access(devices, caller)
    if refused is not None or device is not None:
        return device, refused
    token = config.shared_token
    if token is not None:
        if caller.presents(token):
            return None, None
        return None, Refusal(
            401, "unauthorized",
            "/v1/fleet/* needs Authorization: Bearer <BAA_SHARED_TOKEN> or a device token "
            "(websocket: the same header, or ?token=).", header="Authorization")
    if config.lease_endpoints:
        return None, Refusal(
            401, "unauthorized",
            f"The fleet's nodes call each other with the shared token, and this conductor has "
            f"none: configure {SHARED_TOKEN_SETTING} (the same token on every node).",
            setting=SHARED_TOKEN_SETTING)
    return None, codex_refusal(config, caller)


def codex_needs_credential(config: ConductorConfig) -> bool:
    """Whether every ``/v1/codex/*`` call needs the caller's own credential (codexd has a
    token the conductor must not lend)."""
    return config.codexd_token is not None


def codex_refusal(config: ConductorConfig, caller: Caller) -> Refusal | None:
    """Why ``caller`` may not use ``/v1/codex/*`` (401 ``unauthorized``), or ``None``."""
    if codex_needs_credential(config):
        if config.shared_token is None:
            return Refusal(
                401,
                "unauthorized",
                "codexd has a token, so /v1/codex/* needs the caller's own credential, and this "
                f"conductor has none to check: configure {SHARED_TOKEN_SETTING} (the shared "
                "token) and send it as Authorization: Bearer <token>.",
                setting=SHARED_TOKEN_SETTING,
            )
        if caller.presents(config.shared_token):
            return None
        return Refusal(
            401,
            "unauthorized",
            "/v1/codex/* needs Authorization: Bearer <BAA_SHARED_TOKEN> (websocket: the same "
            "header, or ?token=).",
            header="Authorization",
        )
    if (config.exposed or not is_loopback(caller.remote_addr)) and caller.method in WRITE_METHODS:
        # Beyond loopback (a tailnet, a LAN) anyone who can reach the port could otherwise start
        # full-access sessions; so also through a proxy on this machine (`tailscale serve`),
        # whose callers only look local (caller_address).
        return shared_token_refusal(config, caller)
    return None


def caller_address(remote_addr: str | None, host: str | None, forwarded_for: str | None
                   ) -> str | None:
    """The caller's address as the access rules may trust it: ``None`` (not loopback) for a
    request that came through a proxy — one that says so (``X-Forwarded-For``, which
    ``tailscale serve`` sets) or that names a host other than a loopback name (an allowed
    tailnet name reaching a loopback conductor). Every tailnet device would otherwise pass as
    a local caller."""
    if forwarded_for:
        return None
    parsed = split_host_header(host) if host else None
    if parsed is not None and parsed[0] not in LOOPBACK_NAMES and not is_loopback(parsed[0]):
        return None
    return remote_addr


def shared_token_refusal(config: ConductorConfig, caller: Caller,
                         devices: DeviceStore | None = None) -> Refusal | None:
    """The shared token when one is configured, else loopback callers only (``/v1/system/*``
    writes, and ``/v1/codex/*`` writes of an exposed conductor over a token-less codexd).

    With ``devices``: a device granted ``system`` may too; any other device token is refused.
    """
    device, refused = device_access(devices, caller)
    if refused is not None:
        return refused
    if device is not None:
        if "system" in device.scopes:
            return None
        return Refusal(
            401, "unauthorized",
            "This device was not granted /v1/system/* (pair it with `conductor pair --grant "
            "system`, or use the shared token).",
            reason="not_granted", deviceId=device.id)
    token = config.shared_token
    if token is None:
        if is_loopback(caller.remote_addr):
            return None
        return Refusal(
            401,
            "unauthorized",
            "No shared token is configured: only loopback callers may do this.",
            remote_addr=caller.remote_addr,
        )
    if caller.presents(token):
        return None
    return Refusal(
        401,
        "unauthorized",
        "This route needs Authorization: Bearer <BAA_SHARED_TOKEN>.",
        header="Authorization",
    )


def request_address(remote_addr: str | None, headers: _Headers) -> str | None:
    """:func:`caller_address` of a request's (or an upgrade's) peer and headers."""
    return caller_address(remote_addr, headers.get("Host"), headers.get("X-Forwarded-For"))
