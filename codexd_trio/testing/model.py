"""A scripted OpenAI Responses-API provider on loopback, for driving the real ``codex app-server``.

Codex POSTs ``{base_url}/responses`` once per model call and reads a Server-Sent-Events body
(see ``shared/codex-app-server.md`` §10). :class:`ScriptedModel` answers each such POST with the
next :data:`Scenario` from a FIFO (or :attr:`ScriptedModel.default`, an :class:`Echo`, when the
FIFO is empty) and records every request it receives.

The module is split the house way: turning a scenario into a *plan* (status line, headers and a
list of steps: send these bytes, pause, mark "streaming", hang, ...) is pure and synchronous
(:func:`plan_response`); :func:`serve_scripted_model` only parses requests with ``h11`` and plays
plans onto sockets. Responses are written by hand rather than through ``h11`` because ``h11``
would chunk an HTTP/1.1 body without a length, and the observed-good shape is a close-delimited
body (``Connection: close``, no ``content-length``); owning the bytes also lets a scenario hang or
drop the connection at any point.
"""

from __future__ import annotations

import http
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import h11
import msgspec
import trio

__all__ = [
    "Drop",
    "Echo",
    "ExecCommand",
    "ExecCommands",
    "Failed",
    "Hang",
    "HttpError",
    "Plain",
    "Prompted",
    "RecordedRequest",
    "Scenario",
    "ScriptedModel",
    "Streamed",
    "open_scripted_model",
    "plan_response",
    "scenario_for_prompt",
    "serve_scripted_model",
]

RESPONSES_PATH = "/v1/responses"
_MAX_BODY = 64 * 1024 * 1024
_RECEIVE_CHUNK = 65536

# --------------------------------------------------------------------------------------------
# Scenarios: one is played per POST /v1/responses


@dataclass(frozen=True)
class Plain:
    """A complete assistant message in one ``response.output_item.done`` (no deltas)."""

    text: str = "ok"


@dataclass(frozen=True)
class Streamed:
    """An assistant message streamed as ``response.output_text.delta`` events.

    ``delay`` seconds are slept between deltas; a positive delay makes a "slow stream" that a test
    can interrupt or steer (see :meth:`ScriptedModel.wait_streaming`).
    """

    deltas: Sequence[str]
    delay: float = 0.0

    def __post_init__(self) -> None:
        # Frozen dataclasses are hashable; a list field would make that a lie.
        object.__setattr__(self, "deltas", tuple(self.deltas))


@dataclass(frozen=True)
class Hang:
    """``response.created``, then silence until the client goes away or ``release_hangs()``."""


@dataclass(frozen=True)
class HttpError:
    """A non-200 answer with an OpenAI-style JSON error body (500, 429, 401, 400, ...)."""

    status: int = 500
    message: str = "mock failure"


@dataclass(frozen=True)
class Drop:
    """``response.created``, then the connection is closed without ``response.completed``."""


@dataclass(frozen=True)
class Failed:
    """``response.created`` then a ``response.failed`` event carrying ``message``."""

    message: str = "scripted failure"


@dataclass(frozen=True)
class ExecCommand:
    """One ``exec_command`` function call; the POST carrying its output is answered with ``then``.

    The follow-up is matched by ``call_id`` (the last input item of the next request is the
    ``function_call_output``), so it does not consume the FIFO and is not played if Codex never
    calls back (for example after an approval ``cancel``).
    """

    cmd: str
    then: Scenario = Plain("done")
    call_id: str | None = None
    sandbox_permissions: str | None = None
    justification: str | None = None


@dataclass(frozen=True)
class ExecCommands:
    """Several ``exec_command`` calls in ONE response (parallel approvals); one shared ``then``."""

    cmds: Sequence[str]
    then: Scenario = Plain("done")

    def __post_init__(self) -> None:
        object.__setattr__(self, "cmds", tuple(self.cmds))


@dataclass(frozen=True)
class Echo:
    """Streams ``prefix`` + the last user message text in deltas of ``chunk`` characters."""

    prefix: str = "echo: "
    chunk: int = 8


@dataclass(frozen=True)
class Prompted:
    """Plays the scenario the turn's prompt names (see :func:`scenario_for_prompt`).

    For a model process that nobody scripts (``python -m codexd_trio.testing --prompted``, the
    chaos harness): whoever writes the prompt chooses the latency and the outcome. A prompt
    without a directive is echoed, as :class:`Echo` does.
    """


Scenario: TypeAlias = (
    Plain | Streamed | Hang | HttpError | Drop | Failed | ExecCommand | ExecCommands | Echo
    | Prompted
)

# ``WORD[ N[ N]]: text`` at the start of the prompt; the numbers are optional.
_DIRECTIVE = re.compile(
    r"\A(ECHO|SLOW|STREAM|SHELL|FAIL|HTTP|DROP|HANG)((?: \d{1,6}){0,2}):[ ]?(.*)\Z", re.DOTALL
)
# Bounds, so a typo cannot make the model stream for an hour.
_MAX_DELTAS = 10_000
_MAX_DELAY_MS = 60_000


def scenario_for_prompt(text: str) -> Scenario:
    """The scenario a prompt asks for (pure; unit-tested).

    Directives (the rest of the prompt after ``:`` is ``text``):

    * ``ECHO: text`` (or no directive at all) — :class:`Echo` of the whole prompt.
    * ``SLOW MS N: text`` — ``text`` in ``N`` deltas ``MS`` milliseconds apart (defaults 100,
      10): a turn that is still streaming when a client steers or interrupts it.
    * ``STREAM N: text`` — ``N`` deltas (default 100) at once: a burst of events.
    * ``SHELL: command`` — one ``exec_command`` call (an approval when the session's policy
      asks for one), then ``ran: command``.
    * ``FAIL: message`` — ``response.failed``; ``HTTP STATUS: message`` — a non-200 answer
      (default 500); ``DROP:`` — the connection closes mid-response; ``HANG:`` — silence until
      the client goes away.
    """
    found = _DIRECTIVE.match(text)
    if found is None:
        return Echo()
    word, raw_numbers, rest = found.groups()
    numbers = [int(n) for n in raw_numbers.split()]

    def number(index: int, default: int, bound: int) -> int:
        return min(numbers[index], bound) if len(numbers) > index else default

    if word == "SLOW":
        delay_ms, count = number(0, 100, _MAX_DELAY_MS), max(1, number(1, 10, _MAX_DELTAS))
        return Streamed(_split(rest or "slow", count), delay=delay_ms / 1000)
    if word == "STREAM":
        count = max(1, number(0, 100, _MAX_DELTAS))
        piece = rest[:16] or "x"
        return Streamed([f"{piece}{i} " for i in range(count)])
    if word == "SHELL":
        command = rest.strip() or "true"
        return ExecCommand(command, then=Plain(f"ran: {command}"))
    if word == "FAIL":
        return Failed(rest or "scripted failure")
    if word == "HTTP":
        return HttpError(number(0, 500, 599), rest or "scripted failure")
    if word == "DROP":
        return Drop()
    if word == "HANG":
        return Hang()
    return Echo()


def _split(text: str, count: int) -> list[str]:
    """``text`` in ``count`` non-empty pieces (padded with dots when it is too short)."""
    text = text.ljust(count, ".")
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        pieces.append(text[start:end])
        start = end
    return pieces

# --------------------------------------------------------------------------------------------
# Recorded requests


@dataclass
class RecordedRequest:
    """One HTTP request as the scripted model received it.

    ``headers`` has lower-cased names (repeated headers joined with ``", "``); ``body`` is the
    decoded JSON object, or ``{}`` when the body was not a JSON object (``raw`` keeps the bytes).
    """

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    method: str = "POST"
    raw: bytes = b""

    def _input(self) -> list[Any]:
        items = self.body.get("input")
        return items if isinstance(items, list) else []

    def user_texts(self) -> list[str]:
        """Texts of all user-role messages in ``body["input"]``, in order.

        Each ``input_text`` part is one entry (a message whose content is a plain string counts
        as one part). This includes Codex's own user-role context messages such as
        ``<environment_context>``; the prompt of the current turn is normally the last entry.
        """
        texts: list[str] = []
        for item in self._input():
            if not isinstance(item, dict) or item.get("role") != "user":
                continue
            if item.get("type", "message") != "message":
                continue
            content = item.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(
                    part["text"]
                    for part in content
                    if isinstance(part, dict)
                    and part.get("type") == "input_text"
                    and isinstance(part.get("text"), str)
                )
        return texts

    def last_input_item(self) -> dict[str, Any]:
        """The last element of ``body["input"]`` (``{}`` if there is none)."""
        items = self._input()
        last = items[-1] if items else {}
        return last if isinstance(last, dict) else {}

    def function_call_outputs(self) -> list[dict[str, Any]]:
        """All ``function_call_output`` / ``custom_tool_call_output`` items, in order.

        This is what the model "saw" of tool results, e.g. the rejection text after a declined
        approval.
        """
        return [
            item
            for item in self._input()
            if isinstance(item, dict)
            and item.get("type") in ("function_call_output", "custom_tool_call_output")
        ]

    @property
    def thread_id(self) -> str | None:
        """The Codex thread id, from the ``thread-id`` or ``session-id`` header."""
        return self.headers.get("thread-id") or self.headers.get("session-id")


# --------------------------------------------------------------------------------------------
# Sans-IO: scenario -> plan


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class MarkStreaming:
    """From here until the response ends, the response counts as "streaming"."""


@dataclass(frozen=True)
class HangUntilReleased:
    """Send nothing more until the client goes away or ``release_hangs()`` is called."""


Step: TypeAlias = Send | Pause | MarkStreaming | HangUntilReleased


@dataclass(frozen=True)
class Plan:
    """What to write for one request. The connection is closed after the last step."""

    head: bytes
    steps: tuple[Step, ...]


@dataclass
class Ids:
    """Per-server counters, so ids are unique across the whole conversation."""

    _resp: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _msg: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _call: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def resp(self) -> str:
        return f"resp-{next(self._resp)}"

    def msg(self) -> str:
        return f"msg-{next(self._msg)}"

    def call(self) -> int:
        return next(self._call)


_encoder = msgspec.json.Encoder()


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE frame, ``event: <type>`` + ``data: <json>``."""
    event = str(payload["type"]).encode()
    return b"".join((b"event: ", event, b"\ndata: ", _encoder.encode(payload), b"\n\n"))


def _head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {status} {phrase}".rstrip()]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_SSE_HEAD = _head(
    200,
    [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("connection", "close")],
)

_USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 15,
}


def json_plan(status: int, body: dict[str, Any]) -> Plan:
    """A complete non-streaming JSON answer."""
    data = _encoder.encode(body)
    head = _head(
        status,
        [
            ("content-type", "application/json"),
            ("content-length", str(len(data))),
            ("connection", "close"),
        ],
    )
    return Plan(head, (Send(data),))


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_exceeded"
    if status in (401, 403):
        return "invalid_request_error" if status == 403 else "authentication_error"
    if status < 500:
        return "invalid_request_error"
    return "server_error"


def _message_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "id": item_id,
        "content": [{"type": "output_text", "text": text}],
    }


def _streamed_steps(ids: Ids, deltas: Sequence[str], delay: float) -> list[Step]:
    item_id = ids.msg()
    steps: list[Step] = [
        Send(
            sse(
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {"type": "message", "role": "assistant", "id": item_id, "content": []},
                }
            )
        )
    ]
    if not deltas:
        steps.append(MarkStreaming())
    for index, delta in enumerate(deltas):
        if index and delay > 0:
            steps.append(Pause(delay))
        steps.append(
            Send(
                sse(
                    {
                        "type": "response.output_text.delta",
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": delta,
                    }
                )
            )
        )
        if index == 0:
            steps.append(MarkStreaming())
    steps.append(
        Send(
            sse(
                {
                    "type": "response.output_item.done",
                    "output_index": 0,
                    "item": _message_item(item_id, "".join(deltas)),
                }
            )
        )
    )
    return steps


def _exec_item(
    ids: Ids,
    cmd: str,
    call_id: str | None,
    sandbox_permissions: str | None = None,
    justification: str | None = None,
) -> tuple[str, dict[str, Any]]:
    number = ids.call()
    call_id = call_id or f"call-{number}"
    arguments: dict[str, Any] = {"cmd": cmd}
    if sandbox_permissions is not None:
        arguments["sandbox_permissions"] = sandbox_permissions
    if justification is not None:
        arguments["justification"] = justification
    item = {
        "type": "function_call",
        "id": f"fc-{number}",
        "call_id": call_id,
        "name": "exec_command",
        "arguments": _encoder.encode(arguments).decode(),
    }
    return call_id, item


def plan_response(
    scenario: Scenario, request: RecordedRequest, ids: Ids
) -> tuple[Plan, list[str], Scenario | None]:
    """Turn one scenario into the bytes and pauses that answer ``request``.

    Args:
        scenario: What to play.
        request: The request being answered (:class:`Echo` reads its last user text).
        ids: Id counters shared by the whole server.

    Returns:
        ``(plan, call_ids, then)``: the plan to play, and for tool-call scenarios the call ids
        emitted plus the scenario that should answer the follow-up POST (else ``[]``, ``None``).
    """
    if isinstance(scenario, Prompted):
        if request.last_input_item().get("type") in ("function_call_output",
                                                     "custom_tool_call_output"):
            # A tool result whose follow-up is unknown (played already, or the call came from
            # an older model process): finish the turn, never replay the directive.
            scenario = Plain("done")
        else:
            texts = request.user_texts()
            scenario = scenario_for_prompt(texts[-1] if texts else "")
    if isinstance(scenario, HttpError):
        body = {
            "error": {
                "message": scenario.message,
                "type": _error_type(scenario.status),
                "code": None,
            }
        }
        return json_plan(scenario.status, body), [], None

    resp_id = ids.resp()
    created = Send(sse({"type": "response.created", "response": {"id": resp_id}}))
    completed = Send(
        sse({"type": "response.completed", "response": {"id": resp_id, "usage": _USAGE}})
    )
    steps: list[Step] = [created]
    call_ids: list[str] = []
    then: Scenario | None = None

    if isinstance(scenario, Plain):
        item = _message_item(ids.msg(), scenario.text)
        steps += [Send(sse({"type": "response.output_item.done", "item": item})), completed]
    elif isinstance(scenario, Streamed):
        steps += [*_streamed_steps(ids, scenario.deltas, scenario.delay), completed]
    elif isinstance(scenario, Echo):
        texts = request.user_texts()
        text = scenario.prefix + (texts[-1] if texts else "")
        size = max(1, scenario.chunk)
        deltas = [text[i : i + size] for i in range(0, len(text), size)]
        steps += [*_streamed_steps(ids, deltas, 0.0), completed]
    elif isinstance(scenario, Hang):
        steps += [MarkStreaming(), HangUntilReleased()]
    elif isinstance(scenario, Drop):
        pass
    elif isinstance(scenario, Failed):
        failed = {
            "type": "response.failed",
            "response": {
                "id": resp_id,
                "error": {"code": "server_error", "message": scenario.message},
            },
        }
        steps.append(Send(sse(failed)))
    elif isinstance(scenario, ExecCommand):
        call_id, item = _exec_item(
            ids,
            scenario.cmd,
            scenario.call_id,
            scenario.sandbox_permissions,
            scenario.justification,
        )
        call_ids.append(call_id)
        then = scenario.then
        steps += [Send(sse({"type": "response.output_item.done", "item": item})), completed]
    elif isinstance(scenario, ExecCommands):
        for index, cmd in enumerate(scenario.cmds):
            call_id, item = _exec_item(ids, cmd, None)
            call_ids.append(call_id)
            done = {"type": "response.output_item.done", "output_index": index, "item": item}
            steps.append(Send(sse(done)))
        then = scenario.then
        steps.append(completed)
    else:  # pragma: no cover - exhaustive over Scenario
        raise TypeError(f"not a scenario: {scenario!r}")
    return Plan(_SSE_HEAD, tuple(steps)), call_ids, then


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
        self._queue: list[Scenario] = []
        self._followups: dict[str, tuple[object, Scenario]] = {}
        self._ids = Ids()
        self._changed = trio.Event()
        self._streaming = 0
        self._release = trio.Event()

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
                        await self._release.wait()
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
