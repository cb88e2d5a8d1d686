"""Notification sinks as configured (issue 25): ``[kind,...]URL`` entries from the flags, the
environment and a secrets file. Below :mod:`conductor_trio.config` (which reads them), so a bad
entry is a one-line configuration error at start; the notifier (:mod:`conductor_trio.notify`)
uses the parsed :class:`NotifySink` values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from codexd_trio.base.settings import ConfigError
from codexd_trio.base.tokenfile import TokenFileError, read_token_file

__all__ = ["DEFAULT_NOTIFY_KINDS", "NOTIFY_KINDS", "NotifySink", "notify_sinks", "parse_sink"]

# What a notification can be about (issue 25). A sink listens to DEFAULT_NOTIFY_KINDS unless
# its entry names its own: ``[approval,turn]ntfys://ntfy.sh/my-topic``.
NOTIFY_KINDS = ("approval", "turn.completed", "turn.failed", "turn.interrupted",
                "child.failed", "node", "queue.stopped")
DEFAULT_NOTIFY_KINDS = ("approval", "turn.failed", "child.failed", "node", "queue.stopped")
_KIND_ALIASES = {"turn": ("turn.completed", "turn.failed", "turn.interrupted"),
                 "all": NOTIFY_KINDS}


@dataclass(frozen=True)
class NotifySink:
    """One notification target: an Apprise URL (secrets included: never shown) and the kinds
    of notification it gets."""

    url: str = field(repr=False)
    kinds: tuple[str, ...] = DEFAULT_NOTIFY_KINDS

    @property
    def id(self) -> str:
        """A stable short id (a hash of the URL): outbox entries and metrics name it."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:12]

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0].lower()


def parse_sink(entry: str, *, source: str) -> NotifySink:
    """``[kind,kind]URL`` or ``URL`` → :class:`NotifySink`.

    Raises:
        ConfigError: no ``scheme://``, or an unknown kind (the message never shows the URL,
            which may hold a secret).
    """
    text = entry.strip()
    kinds: tuple[str, ...] = DEFAULT_NOTIFY_KINDS
    if text.startswith("["):
        names, sep, text = text[1:].partition("]")
        if not sep:
            raise ConfigError(f"{source}: a sink's filter [kind,...] is not closed")
        chosen: list[str] = []
        for name in (n.strip() for n in names.split(",") if n.strip()):
            if name in _KIND_ALIASES:
                chosen.extend(_KIND_ALIASES[name])
            elif name in NOTIFY_KINDS:
                chosen.append(name)
            else:
                raise ConfigError(f"{source}: unknown notification kind {name!r}; known: "
                                  f"{', '.join((*NOTIFY_KINDS, *_KIND_ALIASES))}")
        kinds = tuple(dict.fromkeys(chosen))
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme or not rest or any(c.isspace() for c in text):
        raise ConfigError(f"{source}: a notification URL must look like scheme://..., "
                          f"got one starting {text[:8]!r}")
    return NotifySink(url=text, kinds=kinds)


def notify_sinks(flags: Sequence[str] | None, file_flag: str | None,
                  env: Mapping[str, str]) -> tuple[NotifySink, ...]:
    """``--notify-url`` (repeatable) else ``BAA_NOTIFY_URLS`` (whitespace-separated), plus the
    lines of ``--notify-urls-file`` / ``BAA_NOTIFY_URLS_FILE`` (mode 600, ``#`` comments)."""
    entries = [(e, "--notify-url") for e in flags or ()] or [
        (e, "BAA_NOTIFY_URLS") for e in env.get("BAA_NOTIFY_URLS", "").split()]
    path = file_flag or env.get("BAA_NOTIFY_URLS_FILE")
    if path:
        try:
            # The same rule as the token files: secrets readable by the owner only.
            text = read_token_file(path, what="notification URLs")
        except TokenFileError as exc:
            raise ConfigError(str(exc)) from None
        entries += [(line, path) for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    sinks = tuple(parse_sink(entry, source=source) for entry, source in entries)
    return tuple({sink.id: sink for sink in sinks}.values())
