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
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from codexd_trio.base.addresses import is_loopback
from codexd_trio.web.callers import Refusal, bearer_matches
from conductor_trio.config import ConductorConfig

__all__ = [
    "CODEX_PREFIX",
    "SHARED_TOKEN_SETTING",
    "WRITE_METHODS",
    "Caller",
    "codex_needs_credential",
    "codex_refusal",
    "shared_token_refusal",
]

# The proxied routes (the conductor's own view is ``/v1/codex``, without the slash).
CODEX_PREFIX = "/v1/codex/"
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
    if config.exposed and caller.method in WRITE_METHODS:
        # Beyond loopback (a tailnet, a LAN) anyone who can reach the port could otherwise start
        # full-access sessions.
        return shared_token_refusal(config, caller)
    return None


def shared_token_refusal(config: ConductorConfig, caller: Caller) -> Refusal | None:
    """The shared token when one is configured, else loopback callers only (``/v1/system/*``
    writes, and ``/v1/codex/*`` writes of an exposed conductor over a token-less codexd)."""
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
