"""What the scripted model plays for one ``POST /v1/responses``: the scenario types, and the
directives a prompt can carry (:func:`scenario_for_prompt`). Import them from
:mod:`codexd_trio.testing`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

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
    can interrupt or steer (see :meth:`ScriptedModel.wait_streaming`). ``hold_after=N`` stops
    after the N-th delta until :meth:`ScriptedModel.release_hangs`, then streams the rest: a
    turn that is certainly still running while a test looks at it.
    """

    deltas: Sequence[str]
    delay: float = 0.0
    hold_after: int | None = None

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
class ApplyPatch:
    """Make Codex apply a patch: one ``exec_command`` whose command is
    ``apply_patch <<'EOF' … EOF``, which Codex intercepts and applies itself, emitting a
    ``fileChange`` item (with ``mock-model`` it offers no ``apply_patch`` tool).

    ``patch`` is the patch's body (``*** Add File: x`` / ``+line`` / ``*** Update File: y`` /
    ``@@`` / `` kept`` / ``-old`` / ``+new`` ...); the ``*** Begin Patch``/``*** End Patch``
    lines are added when missing. The POST with the result is answered with ``then``.
    """

    patch: str
    then: Scenario = Plain("patched")

    def command(self) -> str:
        body = self.patch.strip("\n")
        if not body.startswith("*** Begin Patch"):
            body = f"*** Begin Patch\n{body}\n*** End Patch"
        return f"apply_patch <<'EOF'\n{body}\nEOF\n"


@dataclass(frozen=True)
class Compaction:
    """The answer to Codex's compaction request (``thread/compact/start``): a summary.

    Played for every request Codex marks as a compaction (``x-codex-turn-metadata``
    ``request_kind: compaction``), without taking a scenario from the FIFO.
    """

    summary: str = (
        "Summary for the next turn: the user and the assistant talked; nothing is pending."
    )


@dataclass(frozen=True)
class Review:
    """The answer to a review request (``review/start``): Codex's review JSON, one finding.

    Played for every request of Codex's review sub-agent (``x-openai-subagent: review``),
    without taking a scenario from the FIFO; Codex renders it as the review's text.
    """

    title: str = "[P2] Scripted finding"
    body: str = "The scripted model looked at the changes."
    explanation: str = "The changes look reasonable."
    path: str = "README.md"

    def text(self) -> str:
        return json.dumps({
            "findings": [{
                "title": self.title, "body": self.body, "confidence_score": 0.5,
                "priority": 2,
                "code_location": {"absolute_file_path": self.path,
                                  "line_range": {"start": 1, "end": 1}},
            }],
            "overall_correctness": "patch is correct",
            "overall_explanation": self.explanation,
            "overall_confidence_score": 0.8,
        })


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
    | Prompted | ApplyPatch | Compaction | Review
)

# ``WORD[ N[ N]]: text`` at the start of the prompt; the numbers are optional.
_DIRECTIVE = re.compile(
    r"\A(ECHO|SLOW|STREAM|SHELL|PATCH|FAIL|HTTP|DROP|HANG)((?: \d{1,6}){0,2}):[ ]?(.*)\Z",
    re.DOTALL,
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
    * ``PATCH: body`` — :class:`ApplyPatch` of ``body`` (the lines of a patch, e.g.
      ``*** Add File: notes.txt`` then ``+hello``), then ``patched``.
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
    if word == "PATCH":
        return ApplyPatch(rest or "*** Add File: patched.txt\n+patched")
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
