"""How the everyday commands reach codexd, and how each way of failing becomes one line and an
exit status.

A command talks to codexd directly (``--local-api-base``, codexd's token) or, with
``--via-conductor URL`` / ``$BAA_CODEXD_VIA_CONDUCTOR``, to a conductor's ``/v1/codex/*`` with
the conductor's shared token (``BAA_SHARED_TOKEN_FILE``, else ``BAA_SHARED_TOKEN``): the same
client calls either way (:class:`CodexdClient`'s ``api_root``).

Session and approval ids may be given as a unique prefix, as git takes commit ids:
``session-8f3a…``, ``8f3a`` and ``session-8f3a`` all name the session whose id starts so.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import trio

from codexd_trio.base.contracts import Approval, Session
from codexd_trio.base.settings import ConfigError, resolve_shared_token, split_base
from codexd_trio.client import CodexdClient, CodexdError, CodexdUnavailable
from codexd_trio.core.config import CodexdConfig

# Exit statuses shared by the everyday commands (docs/cli.md, "Exit status").
EXIT_OK = 0
EXIT_FAILED = 1  # codexd answered with an error of its own (5xx), or refused the token
EXIT_USAGE = 2  # bad input: usage, an unknown or ambiguous id, a refused request (4xx)
EXIT_UNREACHABLE = 3  # codexd (or the conductor) did not answer, or went away mid-command
EXIT_INTERRUPTED = 4  # send: the turn was interrupted
EXIT_SIGINT = 130  # Ctrl-C

VIA_ENV = "BAA_CODEXD_VIA_CONDUCTOR"
CODEXD_ROOT = "/v1/codexd"
CONDUCTOR_ROOT = "/v1/codex"
# What an id the user typed may look like before it goes into a URL path.
_ID_TEXT = re.compile(r"\A[A-Za-z0-9._:-]{1,200}\Z")

CONNECTION_HELP = """\
connection (flag / environment variable / default):
  --local-api-base URL  BAA_CODEXD_LOCAL_API_BASE  http://127.0.0.1:4319 (codexd)
  --token-file PATH     BAA_CODEXD_TOKEN_FILE      none (or BAA_CODEXD_TOKEN): codexd's token
  --via-conductor URL   BAA_CODEXD_VIA_CONDUCTOR   none; else go through the conductor at URL
                        (its /v1/codex/* routes) with its shared token, BAA_SHARED_TOKEN_FILE
                        (or BAA_SHARED_TOKEN)"""


class CliFailure(Exception):
    """A command cannot go on: ``message`` is its one line, ``status`` its exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where the calls go: codexd itself or a conductor in front of it."""

    base_url: str
    api_root: str
    token: str | None
    via_conductor: bool

    def describe(self) -> str:
        return f"the conductor at {self.base_url}" if self.via_conductor else \
            f"codexd at {self.base_url}"

    def client(self, *, timeout: float = 30.0) -> CodexdClient:
        return CodexdClient(self.base_url, timeout=timeout, token=self.token,
                            api_root=self.api_root)


def resolve_target(
    config: CodexdConfig, via: str | None, env: Mapping[str, str] | None = None
) -> Target:
    """The target of a command: ``--via-conductor`` (or its variable), else codexd.

    Raises:
        ConfigError: a conductor URL that is not ``http://host:port``, or an unreadable
            shared-token file.
    """
    environ = os.environ if env is None else env
    url = (via or environ.get(VIA_ENV, "")).strip().rstrip("/")
    if not url:
        return Target(config.local_api_base, CODEXD_ROOT, config.token, False)
    try:
        split_base(url)
    except ConfigError as exc:
        raise ConfigError(f"--via-conductor: {exc}") from None
    token, _ = resolve_shared_token(environ)
    return Target(url, CONDUCTOR_ROOT, token, True)


def error_status(exc: CodexdError) -> int:
    """A refusal of the request itself (unknown id, busy session, paused node) is bad input;
    an error of codexd's own or a refused token is a failure."""
    return EXIT_USAGE if 400 <= exc.status < 500 and exc.status not in (401, 403) else \
        EXIT_FAILED


def error_line(exc: CodexdError) -> str:
    """One line for an error envelope: codexd's sentence and its code."""
    message = exc.message.strip().splitlines()[0] if exc.message.strip() else exc.code
    return f"{message} ({exc.code})"


def fail(message: str, status: int = EXIT_USAGE) -> int:
    print(f"codexd: {message}", file=sys.stderr, flush=True)
    return status


def run_client(target: Target, command: Callable[[CodexdClient], Awaitable[int]]) -> int:
    """Run ``command`` with a connected client on a fresh Trio loop; every failure is one
    line on stderr and its exit status (module constants).

    Ctrl-C (SIGINT) cancels the command and then raises :class:`KeyboardInterrupt` here, once
    the loop has ended (callers turn it into exit status 130). Left to Trio's default, the
    interrupt is raised wherever the loop happens to be — inside a websocket's reader task,
    halfway through a library's bookkeeping — and ``codexd events --follow`` could be left
    running after it, idle, never exiting. A cancellation unwinds every task through its own
    clean-up instead.
    """

    async def main() -> int | None:
        interrupted = False
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            try:
                async with trio.open_nursery() as nursery:

                    async def on_ctrl_c() -> None:
                        nonlocal interrupted
                        async for _ in signals:
                            interrupted = True
                            nursery.cancel_scope.cancel(reason="Ctrl-C")
                            return

                    nursery.start_soon(on_ctrl_c, name="Ctrl-C")
                    try:
                        async with target.client() as client:
                            return await command(client)
                    finally:
                        nursery.cancel_scope.cancel(reason="the command ended")
            except BaseExceptionGroup as group:
                # The command's own error (the Ctrl-C task never raises): as it was raised.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
        # Only a Ctrl-C's cancellation gets here: the command's own ending returned above.
        assert interrupted
        return None

    try:
        status = trio.run(main)
        if status is None:
            raise KeyboardInterrupt
        return status
    except CliFailure as exc:
        return fail(exc.message, exc.status)
    except CodexdUnavailable as exc:
        return fail(f"{target.describe()} is not reachable: {exc}", EXIT_UNREACHABLE)
    except CodexdError as exc:
        return fail(error_line(exc), error_status(exc))


# --------------------------------------------------------------------------- ids


def short_id(full: str, *, length: int = 8) -> str:
    """``session-8f3a2c1d-…`` → ``8f3a2c1d``: what the tables show and a prefix accepts."""
    _, sep, rest = full.partition("-")
    return (rest if sep and full.split("-", 1)[0] in ("session", "approval") else full)[:length]


def abbreviations(ids: Iterable[str], *, minimum: int = 8) -> dict[str, str]:
    """The shortest prefix of each id's :func:`short_id` (at least ``minimum`` characters)
    that no other id in ``ids`` shares, as git abbreviates commits."""
    bare = {full: short_id(full, length=10_000) for full in ids}
    out: dict[str, str] = {}
    for full, text in bare.items():
        length = min(minimum, len(text))
        while length < len(text) and any(
            other != full and value.startswith(text[:length]) for other, value in bare.items()
        ):
            length += 1
        out[full] = text[:length]
    return out


def _matches(full: str, text: str, kind: str) -> bool:
    return full.startswith(text) or full.startswith(f"{kind}-{text}")


def pick(ids: Iterable[str], text: str, kind: str) -> str:
    """The one id that ``text`` names (an exact id or a unique prefix).

    Raises:
        CliFailure: none matches, or several do (exit status 2).
    """
    candidates = list(ids)
    if text in candidates:
        return text
    found = sorted(full for full in candidates if _matches(full, text, kind))
    if not found or not text:
        raise CliFailure(f"no {kind} matches {text!r}")
    if len(found) > 1:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise CliFailure(f"{text!r} matches {len(found)} {kind}s: {shown}; type more of it")
    return found[0]


async def find_session(client: CodexdClient, text: str) -> Session:
    """The session ``text`` names (its id or a unique prefix of it).

    Raises:
        CliFailure: no session matches, or several do (exit status 2).
    """
    if _ID_TEXT.match(text):
        try:
            session, _ = await client.get_session(text)
            return session
        except CodexdError as exc:
            if exc.status != 404:
                raise
    else:
        raise CliFailure(f"no session matches {text!r}")
    sessions = {s.sessionId: s for s in await client.list_sessions()}
    return sessions[pick(sessions, text, "session")]


async def find_approval(client: CodexdClient, text: str) -> Approval:
    """The approval ``text`` names (its id or a unique prefix of it); see :func:`find_session`."""
    if not _ID_TEXT.match(text):
        raise CliFailure(f"no approval matches {text!r}")
    approvals = {a.approvalId: a for a in await client.list_approvals()}
    return approvals[pick(approvals, text, "approval")]
