"""Pytest plugin with the fixtures shared by tests that drive Codex through the scripted model.

Enabled from ``tests/conftest.py`` with ``pytest_plugins = ["codexd_trio.testing.fixtures"]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from codexd_trio.base import codexbin
from codexd_trio.testing.codexhome import temporary_codex_home
from codexd_trio.testing.model import ScriptedModel, open_scripted_model


@pytest.fixture
async def scripted_model() -> AsyncIterator[ScriptedModel]:
    """A running :class:`ScriptedModel` on 127.0.0.1, stopped after the test."""
    async with open_scripted_model() as model:
        yield model


@pytest.fixture
async def codex_home(scripted_model: ScriptedModel) -> AsyncIterator[Path]:
    """A fresh Codex home (outside /tmp) pointing at ``scripted_model``; removed after the test.

    Defaults of :func:`write_codex_home`: ``mock-model``, ``approval_policy = "never"``,
    ``read-only`` sandbox, no retries. Rewrite it with ``write_codex_home`` for other settings.
    """
    with temporary_codex_home(scripted_model.base_url) as home:
        yield home


@pytest.fixture(scope="session")
def codex_binary() -> Path:
    """Path of the pinned native ``codex`` binary (never the npm launcher)."""
    try:
        binary = codexbin.resolve_server_command()
    except codexbin.CodexBinaryNotFound as exc:
        pytest.fail(f"{exc} (run scripts/setup.sh)")
    return binary
