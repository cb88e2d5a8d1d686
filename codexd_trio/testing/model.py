"""A scripted OpenAI Responses-API provider on loopback, for driving the real ``codex app-server``.

Codex POSTs ``{base_url}/responses`` once per model call and reads a Server-Sent-Events body
(see ``shared/codex-app-server.md`` §10). :class:`ScriptedModel` answers each such POST with the
next :data:`Scenario` from a FIFO (or :attr:`ScriptedModel.default`, an :class:`Echo`, when the
FIFO is empty) and records every request it receives.

The module is split the house way: turning a scenario into a *plan* (status line, headers and a list
of steps: send these bytes, pause, mark "streaming", hang, ...) is pure and synchronous
(:func:`~codexd_trio.testing.plans.plan_response`; the scenario types are
:mod:`~codexd_trio.testing.scenarios`); :func:`serve_scripted_model` only parses requests with
``h11`` and plays plans onto sockets. Responses are written by hand rather than through ``h11``
because ``h11`` would chunk an HTTP/1.1 body without a length, and the observed-good shape is a
close-delimited body (``Connection: close``, no ``content-length``); owning the bytes also lets a
scenario hang or drop the connection at any point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import msgspec
import trio

from codexd_trio.testing.plans import (
    Ids,
    MarkStreaming,
    Pause,
    Plan,
    RecordedRequest,
    Send,
    json_plan,
    plan_response,
)
from codexd_trio.testing.scenarios import Compaction, Echo, Review, Scenario

__all__ = [
    "ScriptedModel",
    "open_scripted_model",
    "serve_scripted_model",
]

RESPONSES_PATH = "/v1/responses"
_MAX_BODY = 64 * 1024 * 1024
_RECEIVE_CHUNK = 65536

# --------------------------------------------------------------------------------------------
# The server


class ScriptedModel:
    """Handle of a running scripted model server (created by :func:`serve_scripted_model`).

    Attributes:
        base_url: ``http://HOST:PORT/v1``, the provider ``base_url`` for ``config.toml``.
        port: The bound TCP port.
        requests: Every request received, in arrival order (any path, any method); only the
            newest ``keep_requests`` when that is set.
        request_count: How many requests were received in all.
        keep_requests: None (keep every request, the default) or how many to keep.
        default: Played when the FIFO is empty; :class:`Echo` unless changed.
        compaction: Answers Codex's compaction requests (:class:`Compaction`).
        review: Answers the review sub-agent's requests (:class:`Review`).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}/v1"
        self.requests: list[RecordedRequest] = []
        # How many requests arrived in all; ``requests`` keeps the newest ``keep_requests``
        # of them (None: every one, what tests read). A model that serves for hours (the
        # standalone server) must not keep every body it was sent.
        self.request_count = 0
        self.keep_requests: int | None = None
        self.default: Scenario = Echo()
        # What answers Codex's compaction and review requests (never taken from the FIFO).
        self.compaction: Scenario = Compaction()
        self.review: Scenario = Review()
        self._queue: list[Scenario] = []
        self._followups: dict[str, tuple[object, Scenario]] = {}
        self._ids = Ids()
        self._changed = trio.Event()
        self._streaming = 0
        self._release = trio.Event()
        self._held = 0

    # -- scripting ------------------------------------------------------------------------

    def script(self, *scenarios: Scenario) -> None:
        """Append scenarios to the FIFO; each answers one ``POST /v1/responses``."""
        self._queue.extend(scenarios)

    @property
    def pending(self) -> int:
        """How many scripted scenarios have not been played yet."""
        return len(self._queue)

    async def wait_requests(self, n: int) -> None:
        """Return once at least ``n`` requests have been received (recorded) in total.

        **Cancellation:** safe at any point; wrap in ``trio.fail_after`` at the call site.
        """
        while self.request_count < n:
            await self._changed.wait()

    @property
    def streaming(self) -> int:
        """Number of responses currently "streaming" (see :meth:`wait_streaming`)."""
        return self._streaming

    async def wait_streaming(self) -> None:
        """Return once some response is streaming *now*.

        A response counts as streaming from the moment its first bytes of model output have been
        written to the socket until that response ends: for :class:`Streamed` and :class:`Echo`
        after ``response.created``, ``output_item.added`` and the first ``output_text.delta``
        were sent (or ``output_item.added`` when there are no deltas); for :class:`Hang` after
        ``response.created`` was sent. "Written" means handed to the kernel; Codex may not have
        processed it yet. A stream that has already finished does not count, so use this with
        slow streams (``Streamed(..., delay=...)``) or :class:`Hang`, e.g. before
        ``turn/interrupt`` or ``turn/steer``. Returns at once if a stream is in progress.

        **Cancellation:** safe at any point; wrap in ``trio.fail_after`` at the call site.
        """
        while self._streaming == 0:
            await self._changed.wait()

    async def wait_idle(self) -> None:
        """Return once no response is streaming (e.g. after Codex abandoned a stream).

        **Cancellation:** safe at any point; wrap in ``trio.fail_after`` at the call site.
        """
        while self._streaming:
            await self._changed.wait()

    async def wait_held(self) -> None:
        """Return once some response waits for :meth:`release_hangs` *now* (a :class:`Hang`,
        or a :class:`Streamed` at its ``hold_after``): releasing it then cannot be missed.

        **Cancellation:** safe at any point; wrap in ``trio.fail_after`` at the call site.
        """
        while self._held == 0:
            await self._changed.wait()

    def release_hangs(self) -> None:
        """End every currently hanging :class:`Hang` response by closing its connection.

        Codex sees a clean end of body without ``response.completed``. Hangs that start after this
        call hang again.
        """
        self._release.set()
        self._release = trio.Event()

    # -- internals --------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _record(self, request: RecordedRequest) -> None:
        self.requests.append(request)
        self.request_count += 1
        if self.keep_requests is not None and len(self.requests) > self.keep_requests:
            del self.requests[: len(self.requests) - self.keep_requests]
        self._notify()

    def _set_streaming(self, delta: int) -> None:
        self._streaming += delta
        self._notify()

    def _choose(self, request: RecordedRequest) -> Plan:
        last = request.last_input_item()
        scenario: Scenario | None = None
        if last.get("type") in ("function_call_output", "custom_tool_call_output"):
            found = self._followups.get(str(last.get("call_id")))
            if found is not None:
                group, scenario = found
                for key in [k for k, (g, _) in self._followups.items() if g is group]:
                    del self._followups[key]
        if scenario is None and request.is_compaction:
            # Not from the FIFO: a test scripts its turns, Codex adds these on its own.
            scenario = self.compaction
        elif scenario is None and request.is_review:
            scenario = self.review
        if scenario is None:
            scenario = self._queue.pop(0) if self._queue else self.default
        plan, call_ids, then = plan_response(scenario, request, self._ids)
        if then is not None:
            group = object()
            for call_id in call_ids:
                self._followups[call_id] = (group, then)
        return plan

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            request = await _read_request(stream)
            if request is None:
                return
            self._record(request)
            if request.method == "POST" and request.path == RESPONSES_PATH:
                plan = self._choose(request)
            else:
                error = {"message": f"no route for {request.method} {request.path}"}
                plan = json_plan(404, {"error": {**error, "type": "not_found"}})
            await self._play(stream, plan)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The client went away mid-response: that is its right, not a server failure.
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _play(self, stream: trio.SocketStream, plan: Plan) -> None:
        async with trio.open_nursery() as nursery:
            # Codex never sends anything after its request, so EOF (or a reset) on the read
            # side means it abandoned the response (interrupt, steer, shutdown): stop playing.
            nursery.start_soon(_cancel_on_eof, stream, nursery.cancel_scope)
            marked = False
            try:
                await stream.send_all(plan.head)
                for step in plan.steps:
                    if isinstance(step, Send):
                        await stream.send_all(step.data)
                    elif isinstance(step, Pause):
                        await trio.sleep(step.seconds)
                    elif isinstance(step, MarkStreaming):
                        if not marked:
                            marked = True
                            self._set_streaming(+1)
                    else:
                        release = self._release
                        self._held += 1
                        self._notify()
                        try:
                            await release.wait()
                        finally:
                            self._held -= 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # Handled here, not in _handle: out of a nursery it would be an ExceptionGroup.
                pass
            finally:
                if marked:
                    self._set_streaming(-1)
            nursery.cancel_scope.cancel(reason="response played")


async def _cancel_on_eof(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    try:
        while await stream.receive_some(_RECEIVE_CHUNK):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel(reason="client closed the connection")


async def _read_request(stream: trio.SocketStream) -> RecordedRequest | None:
    """Parse one request with h11; ``None`` if the client closed or sent garbage.

    A malformed request gets a 400 JSON answer before ``None`` is returned.
    """
    conn = h11.Connection(h11.SERVER)
    start: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            plan = json_plan(400, {"error": {"message": str(exc), "type": "bad_request"}})
            await stream.send_all(
                b"".join([plan.head, *(s.data for s in plan.steps if isinstance(s, Send))])
            )
            return None
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(_RECEIVE_CHUNK))
        elif isinstance(event, h11.Request):
            start = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                return None
        elif isinstance(event, h11.EndOfMessage):
            break
        else:  # ConnectionClosed or PAUSED before a full request
            return None
    assert start is not None
    headers: dict[str, str] = {}
    for raw_name, raw_value in start.headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    target = start.target.decode("latin-1")
    raw = bytes(body)
    decoded: dict[str, Any] = {}
    if raw:
        try:
            parsed = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            parsed = None
        if isinstance(parsed, dict):
            decoded = parsed
    return RecordedRequest(
        path=target.split("?", 1)[0],
        headers=headers,
        body=decoded,
        method=start.method.decode("latin-1"),
        raw=raw,
    )


async def serve_scripted_model(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[ScriptedModel] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a scripted model until cancelled; a ``nursery.start`` target.

    Args:
        host: Address to bind (loopback by default).
        port: TCP port; ``0`` picks a free one (read it from the handle).
        task_status: Receives the :class:`ScriptedModel` once the socket is listening.

    **Cancellation:** cancelling stops the listener and every connection at once; clients see
    their connections closed.

    **Resource handling:** owns the listening socket and all accepted connections; each
    connection is closed after one response.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = listeners[0].socket.getsockname()[1]
    model = ScriptedModel(host, bound_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, model._handle, listeners)
        task_status.started(model)


@asynccontextmanager
async def open_scripted_model(
    *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[ScriptedModel]:
    """Run :func:`serve_scripted_model` for the duration of the ``async with`` block.

    **Cancellation:** leaving the block (normally or by exception) cancels the server.

    **Resource handling:** owns a nursery; enter and leave it in the same task.
    """
    async with trio.open_nursery() as nursery:
        model: ScriptedModel = await nursery.start(
            lambda task_status: serve_scripted_model(host=host, port=port, task_status=task_status)
        )
        try:
            yield model
        finally:
            nursery.cancel_scope.cancel(reason="scripted model closed")
