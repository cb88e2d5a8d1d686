"""Sending one notification to one sink with Apprise, in a worker thread.

Apprise's calls block (``requests``), so :func:`send` runs them with
``trio.to_thread.run_sync`` under the notifier's own :class:`trio.CapacityLimiter`: a slow or
dead sink can hold only those threads, never the proxy's or the event log's.

Actions travel the way each kind of sink can carry them:

* ``ntfy://`` / ``ntfys://``: Apprise's ntfy plugin takes ``click`` (the deep link) and
  ``actions`` (sent as ntfy's ``X-Actions`` header) as URL parameters, so the notification gets
  ``http`` buttons that POST to the action links (``Content-Type: application/json``, body
  ``{}``, as every POST to the conductor must be) and a ``view`` button to the console;
* ``json://`` / ``jsons://``: Apprise adds ``:key=value`` URL parameters to the JSON body, so a
  webhook gets ``click``, ``accept``, ``decline`` and ``notificationId`` as fields;
* anything else: plain links in the text (every sink can carry those).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import trio

from conductor_trio.notify.messages import Message
from conductor_trio.sinks import NotifySink

__all__ = ["send", "sink_url"]

_NTFY = ("ntfy", "ntfys")
_JSON = ("json", "jsons")
# Apprise's own time-outs per request are its defaults (a few seconds); this bounds a whole
# send (retries inside a plugin included) so one stuck sink cannot keep its thread for long.
SEND_TIMEOUT_S = 60.0


def _with_params(url: str, params: dict[str, str]) -> str:
    query = "&".join(f"{quote(k, safe=':')}={quote(v, safe='')}" for k, v in params.items())
    return url + ("&" if "?" in url else "?") + query if query else url


def _ntfy_actions(message: Message) -> str:
    # ntfy's short form: "<action>, <label>, <url>, key=value, ...; ..." (at most 3 actions).
    parts = [f"http, {a.label}, {a.url}, method=POST, headers.Content-Type=application/json, "
             f"body={{}}, clear=true" for a in message.actions if a.kind == "http"]
    if message.click:
        parts.append(f"view, Open console, {message.click}")
    return "; ".join(parts[:3])


def sink_url(sink: NotifySink, message: Message, entry_id: str) -> tuple[str, str]:
    """The Apprise URL for this message (the sink's, with its parameters) and the body."""
    lines = [message.body]
    if sink.scheme in _NTFY:
        params = {"click": message.click} if message.click else {}
        if actions := _ntfy_actions(message):
            params["actions"] = actions
        return _with_params(sink.url, params), "\n".join(lines)
    if message.click:
        lines.append(f"Open: {message.click}")
    lines += [f"{a.label}: {a.url}" for a in message.actions]
    if sink.scheme in _JSON:
        params = {":notificationId": entry_id, ":kind": message.kind}
        if message.click:
            params[":click"] = message.click
        params.update({f":{a.label.lower()}": a.url for a in message.actions})
        return _with_params(sink.url, params), "\n".join(lines)
    return sink.url, "\n".join(lines)


class _PerThread(logging.Handler):
    """Collects Apprise's warnings per thread: the reason a send failed, for ``/v1/status``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: dict[int, list[str]] = {}
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._mutex:
            if record.thread in self.records:
                self.records[record.thread].append(record.getMessage())

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        ident = threading.get_ident()
        with self._mutex:
            self.records[ident] = []
        try:
            yield self.records[ident]
        finally:
            with self._mutex:
                self.records.pop(ident, None)


_capture = _PerThread()
logging.getLogger("apprise").addHandler(_capture)


_loaded = threading.Lock()


def _apprise() -> Any:
    """Apprise, its plugins loaded once (a large import: only where notifications are sent).

    Loading the plugins imports ``imghdr`` (deprecated in Python 3.11, for the e-mail plugin's
    PGP support), which warns once per process: nothing a person can act on, so it is silenced
    while they load.
    """
    with _loaded:
        import apprise

        if not getattr(_apprise, "done", False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                apprise.Apprise().add("json://localhost")
            _apprise.done = True  # type: ignore[attr-defined]
        return apprise


def _send_blocking(url: str, title: str, body: str) -> str | None:
    """Send with Apprise; ``None`` on success, else why not (worker thread)."""
    try:
        apprise = _apprise()
        with _capture.capture() as said:
            notifier = apprise.Apprise()
            if not notifier.add(url):
                return "Apprise does not understand this URL (see apprise --details)"
            ok = notifier.notify(title=title, body=body)
    except Exception as exc:  # a plugin's bug must not stop the notifier (nor the conductor)
        return f"Apprise failed: {type(exc).__name__}: {exc}"[:500]
    if ok:
        return None
    return "; ".join(dict.fromkeys(said))[:500] or "the sink refused the notification"


async def send(sink: NotifySink, message: Message, entry_id: str,
               limiter: trio.CapacityLimiter) -> str | None:
    """Send ``message`` to ``sink``: ``None`` when it was accepted, else the error.

    **Cancellation:** abandons the wait; the thread finishes the send on its own (at most one
    more delivery, which the outbox's at-least-once design allows).
    """
    url, body = sink_url(sink, message, entry_id)
    with trio.move_on_after(SEND_TIMEOUT_S):
        return await trio.to_thread.run_sync(
            _send_blocking, url, message.title, body, limiter=limiter, abandon_on_cancel=True)
    return f"no answer within {SEND_TIMEOUT_S:.0f} s"
