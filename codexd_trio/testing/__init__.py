"""Test support for driving the real ``codex app-server`` offline.

:class:`ScriptedModel` is a fake OpenAI Responses API on loopback, played from a FIFO of
scenarios; :func:`write_codex_home` / :func:`temporary_codex_home` point a Codex home at it and
:func:`codex_child_env` builds the child's environment. ``python -m codexd_trio.testing`` runs the
model standalone; :mod:`codexd_trio.testing.fixtures` is the pytest plugin.

The model is :mod:`.scenarios` (what to play), :mod:`.plans` (sans-IO: scenario → bytes and
pauses) and :mod:`.model` (the loopback server); :mod:`.daemon` runs codexd as a process.

May import: :mod:`codexd_trio.base` only — it drives codexd from outside, as a process, never
through its internals. The CLI (``codexd smoke``) and the node launcher use it.
"""

from codexd_trio.testing.codexhome import (
    codex_child_env,
    codex_home_root,
    read_only_sandbox_enforced,
    scratch_root,
    temporary_codex_home,
    write_codex_home,
)
from codexd_trio.testing.model import ScriptedModel, open_scripted_model, serve_scripted_model
from codexd_trio.testing.plans import RecordedRequest
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

__all__ = [
    "ApplyPatch",
    "Compaction",
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
    "Review",
    "Scenario",
    "ScriptedModel",
    "Streamed",
    "codex_child_env",
    "codex_home_root",
    "open_scripted_model",
    "read_only_sandbox_enforced",
    "scenario_for_prompt",
    "scratch_root",
    "serve_scripted_model",
    "temporary_codex_home",
    "write_codex_home",
]
