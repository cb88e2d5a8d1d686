"""The scripted model's sans-IO half: a scenario becomes a *plan* (status line, headers and a
list of steps: send these bytes, pause, mark "streaming", hang, ...), see
:func:`plan_response`. :mod:`codexd_trio.testing.model` plays plans onto sockets."""

from __future__ import annotations

import http
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgspec

from codexd_trio.testing.scenarios import (
    ApplyPatch,
    Compaction,
    Drop,
    Echo,
    ExecCommand,
    ExecCommands,
    Failed,
    Hang,
    HttpError,
    Plain,
    Prompted,
    Review,
    Scenario,
    Streamed,
    scenario_for_prompt,
)

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

    def turn_metadata(self) -> dict[str, Any]:
        """Codex's ``x-codex-turn-metadata`` header, decoded (``{}`` without one)."""
        try:
            value = msgspec.json.decode(self.headers.get("x-codex-turn-metadata", "{}"))
        except msgspec.DecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def is_compaction(self) -> bool:
        """Codex asks for a compaction summary (``thread/compact/start``)."""
        return self.turn_metadata().get("request_kind") == "compaction"

    @property
    def is_review(self) -> bool:
        """A request of Codex's review sub-agent (``review/start``)."""
        return self.headers.get("x-openai-subagent") == "review"

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


def _streamed_steps(ids: Ids, deltas: Sequence[str], delay: float,
                    hold_after: int | None = None) -> list[Step]:
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
        if hold_after is not None and index + 1 == hold_after:
            steps.append(HangUntilReleased())
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
    if isinstance(scenario, Compaction):
        scenario = Plain(scenario.summary)
    elif isinstance(scenario, Review):
        scenario = Plain(scenario.text())
    elif isinstance(scenario, ApplyPatch):
        scenario = ExecCommand(scenario.command(), then=scenario.then)
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
        steps += [*_streamed_steps(ids, scenario.deltas, scenario.delay, scenario.hold_after),
                  completed]
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
