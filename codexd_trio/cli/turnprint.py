"""What ``codexd send`` prints while a turn runs: the agent's text as it streams, each command
with its output and exit code, file changes as diffs, approvals with the commands that decide
them. Sans-IO: :class:`TurnPrinter` turns events into chunks of text for stdout and stderr.
"""

from __future__ import annotations

from typing import Any

from codexd_trio.base.contracts import Event
from codexd_trio.cli.render import (
    Chunk,
    Style,
    TurnEnd,
    approval_subject,
    as_dict,
    as_str,
    command_text,
    diff_lines,
    reasoning_text,
    settlement,
)


class TurnPrinter:
    """Feeds on one turn's events and returns what ``codexd send`` prints: the agent's text
    as it streams, each command with its output and exit code, file changes as diffs,
    approvals with the commands that decide them. Errors go to stderr.

    Attributes:
        end: how the turn ended, once an event settled it.
    """

    def __init__(self, style: Style, turn_id: str, *, cwd: str | None = None,
                 approvals: str = "clients") -> None:
        self.style = style
        self.turn_id = turn_id
        self.cwd = cwd
        self.approvals = approvals
        self.end: TurnEnd | None = None
        self._out: list[Chunk] = []
        self._at_line_start = True
        self._printed = False
        self._streamed: set[str] = set()
        self._started: set[str] = set()

    # -- writing -------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        if text:
            self._out.append(("out", text))
            self._at_line_start = text.endswith("\n")
            self._printed = True

    def _newline(self) -> None:
        if not self._at_line_start:
            self._write("\n")

    def _block(self) -> None:
        """Start a block: on its own line, a blank line after the previous block."""
        self._newline()
        if self._printed:
            self._out.append(("out", "\n"))

    def _lines(self, lines: list[str]) -> None:
        self._write("".join(f"{line}\n" for line in lines))

    def _err(self, text: str) -> None:
        self._out.append(("err", text.rstrip("\n") + "\n"))

    # -- events --------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Chunk]:
        """What to print for ``event`` (nothing for another turn's or a settled turn's)."""
        if self.end is not None or event.turnId not in (None, self.turn_id):
            return []
        self._out = []
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event.detail)
        end = settlement(event, self.turn_id)
        if end is not None:
            self.end = end
            self._newline()
        return self._out

    def _item_started(self, detail: dict[str, Any]) -> None:
        item = as_dict(detail.get("item"))
        kind, item_id = as_str(item.get("type")), as_str(item.get("id"))
        if kind == "commandExecution":
            self._started.add(item_id)
            self._block()
            self._lines([self.style.bold(self.style.magenta("$ ") + command_text(item))])
        elif kind == "fileChange":
            self._started.add(item_id)
            self._file_change(item)

    def _file_change(self, item: dict[str, Any]) -> None:
        self._block()
        lines: list[str] = []
        for change in item.get("changes") or []:
            lines += diff_lines(as_dict(change), self.style, self.cwd)
        self._lines(lines or [self.style.dim("(a file change without a diff)")])

    def _agent_delta(self, detail: dict[str, Any]) -> None:
        item_id = as_str(detail.get("itemId"))
        if item_id not in self._streamed:
            self._streamed.add(item_id)
            self._block()
        self._write(as_str(detail.get("delta")))

    def _output_delta(self, detail: dict[str, Any]) -> None:
        item_id = as_str(detail.get("itemId"))
        self._streamed.add(item_id)
        self._write(self.style.dim(as_str(detail.get("delta"))))

    def _item_completed(self, detail: dict[str, Any]) -> None:
        item = as_dict(detail.get("item"))
        kind, item_id = as_str(item.get("type")), as_str(item.get("id"))
        if kind == "agentMessage":
            if item_id not in self._streamed and as_str(item.get("text")):
                self._block()
                self._write(as_str(item.get("text")))
            self._newline()
        elif kind == "commandExecution":
            self._command_done(item, item_id)
        elif kind == "fileChange":
            if item_id not in self._started:
                self._file_change(item)
            status = as_str(item.get("status"))
            if status and status != "completed":
                self._newline()
                self._lines([self.style.yellow(f"(patch {status})")])
        elif kind == "reasoning":
            text = reasoning_text(item)
            if text:
                self._block()
                self._lines([self.style.dim(f"thinking: {line}") for line in text.splitlines()])
        elif kind not in ("userMessage", ""):
            self._block()
            name = as_str(item.get("tool")) or as_str(item.get("query")) or as_str(item.get("name"))
            self._lines([self.style.dim(f"· {kind}" + (f" {name}" if name else ""))])

    def _command_done(self, item: dict[str, Any], item_id: str) -> None:
        if item_id not in self._started:
            self._block()
            self._lines([self.style.bold(self.style.magenta("$ ") + command_text(item))])
        output = as_str(item.get("aggregatedOutput"))
        if item_id not in self._streamed and output:
            self._write(self.style.dim(output))
        self._newline()
        code, status = item.get("exitCode"), as_str(item.get("status"))
        took = item.get("durationMs")
        timing = f" · {took} ms" if isinstance(took, int) else ""
        if isinstance(code, int):
            paint = self.style.green if code == 0 else self.style.red
            self._lines([paint(f"exit {code}{timing}")])
        elif status and status != "completed":
            self._lines([self.style.yellow(f"({status})")])

    def _approval_requested(self, detail: dict[str, Any]) -> None:
        approval = as_dict(detail.get("approval"))
        approval_id = as_str(approval.get("approvalId"))
        short = approval_id.removeprefix("approval-")[:8]
        self._block()
        lines = [self.style.yellow(self.style.bold(
            f"? approval {short}: {approval_subject(approval)}"))]
        if self.approvals == "decline":
            lines.append(self.style.dim(
                "  (this session declines approvals itself; `codexd new --approvals clients` "
                "makes one that waits for you)"))
        else:
            lines.append(f"  codexd approve {short}    codexd approve {short} --for-session    "
                         f"codexd decline {short}")
        self._lines(lines)

    def _approval_resolved(self, detail: dict[str, Any]) -> None:
        approval = as_dict(detail.get("approval"))
        short = as_str(approval.get("approvalId")).removeprefix("approval-")[:8]
        decision = as_str(approval.get("decision"))
        if approval.get("state") == "expired" or not decision:
            text = f"  approval {short} expired" + (
                f": {detail['reason']}" if detail.get("reason") else "")
            self._lines([self.style.yellow(text)])
            return
        paint = self.style.green if decision.startswith("accept") else self.style.red
        by = as_str(approval.get("decidedBy"))
        self._lines([paint(f"  approval {short}: {decision}" + (f" ({by})" if by else ""))])

    def _error(self, detail: dict[str, Any]) -> None:
        if not detail.get("willRetry"):
            return  # the turn fails with this error: the last line says it once
        err = as_dict(detail.get("error"))
        message = as_str(err.get("message")) or as_str(detail.get("message")) or "error"
        retry = " (retrying)" if detail.get("willRetry") else ""
        self._err(f"codexd: codex: {message}{retry}")

    def _note(self, text: str) -> None:
        self._newline()
        self._lines([self.style.dim(text)])


_HANDLERS: dict[str, Any] = {
    "app-server.item.started": TurnPrinter._item_started,
    "app-server.item.completed": TurnPrinter._item_completed,
    "app-server.item.agentMessage.delta": TurnPrinter._agent_delta,
    "app-server.item.commandExecution.outputDelta": TurnPrinter._output_delta,
    "approval.requested": TurnPrinter._approval_requested,
    "approval.resolved": TurnPrinter._approval_resolved,
    "app-server.error": TurnPrinter._error,
    "turn.steered": lambda self, detail: self._note("(steered)"),
    "turn.interrupt.requested": lambda self, detail: self._note("(interrupt requested)"),
}
