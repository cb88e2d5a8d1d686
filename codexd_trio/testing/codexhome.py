"""Throw-away ``CODEX_HOME`` directories that point the real Codex at the scripted model.

Homes live under ``<repo>/var/codex-homes`` rather than ``/tmp``: Codex refuses to create its
helper aliases under a temporary directory and says so on stderr at every start
(``shared/codex-app-server.md`` §9).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codexd_trio import codexbin

__all__ = [
    "codex_child_env",
    "codex_home_root",
    "temporary_codex_home",
    "write_codex_home",
]

HOME_ROOT_ENV = "BAA_TEST_HOME_ROOT"


def _toml_str(value: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes.
    return json.dumps(value)


def write_codex_home(
    home: Path,
    model_base_url: str,
    *,
    model: str = "mock-model",
    approval_policy: str = "never",
    sandbox: str = "read-only",
    stream_idle_timeout_ms: int | None = None,
) -> Path:
    """Write ``home/config.toml`` selecting the ``mock`` provider at ``model_base_url``.

    Retries are off (``request_max_retries = 0``, ``stream_max_retries = 0``) so a scripted
    failure fails the turn at once instead of after ~25 s of retries, and plugin sync is disabled
    so nothing tries the network at startup.

    Args:
        home: The directory to use as ``CODEX_HOME`` (created if missing).
        model_base_url: The provider base URL, e.g. :attr:`ScriptedModel.base_url`.
        model: Model slug; unknown slugs make Codex emit one ``warning`` per turn.
        approval_policy: ``untrusted``, ``on-request`` or ``never``.
        sandbox: ``read-only``, ``workspace-write`` or ``danger-full-access``.
        stream_idle_timeout_ms: If set, how long Codex waits for SSE bytes before failing.

    Returns:
        ``home``.
    """
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        f"model = {_toml_str(model)}",
        'model_provider = "mock"',
        f"approval_policy = {_toml_str(approval_policy)}",
        f"sandbox_mode = {_toml_str(sandbox)}",
        "",
        "[model_providers.mock]",
        'name = "mock"',
        f"base_url = {_toml_str(model_base_url)}",
        'wire_api = "responses"',
        "request_max_retries = 0",
        "stream_max_retries = 0",
    ]
    if stream_idle_timeout_ms is not None:
        lines.append(f"stream_idle_timeout_ms = {int(stream_idle_timeout_ms)}")
    lines += ["", "[features]", "plugins = false", ""]
    (home / "config.toml").write_text("\n".join(lines), encoding="utf-8")
    return home


def codex_home_root() -> Path:
    """Directory that holds temporary Codex homes (created if missing).

    ``$BAA_TEST_HOME_ROOT`` if set, else ``<repo>/var/codex-homes`` (deliberately not ``/tmp``).
    """
    override = os.environ.get(HOME_ROOT_ENV)
    root = Path(override) if override else codexbin.REPO_ROOT / "var" / "codex-homes"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def temporary_codex_home(
    model_base_url: str,
    *,
    model: str = "mock-model",
    approval_policy: str = "never",
    sandbox: str = "read-only",
    stream_idle_timeout_ms: int | None = None,
) -> Iterator[Path]:
    """A fresh Codex home under :func:`codex_home_root`, removed on exit.

    Keyword arguments are those of :func:`write_codex_home`.

    **Resource handling:** the directory (with everything Codex wrote into it) is deleted when
    the block exits; stop any Codex process using it first.
    """
    home = Path(tempfile.mkdtemp(prefix="home-", dir=codex_home_root()))
    try:
        write_codex_home(
            home,
            model_base_url,
            model=model,
            approval_policy=approval_policy,
            sandbox=sandbox,
            stream_idle_timeout_ms=stream_idle_timeout_ms,
        )
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def codex_child_env(home: Path, binary: Path) -> dict[str, str]:
    """Environment for a ``codex app-server`` child using ``home`` as its ``CODEX_HOME``.

    A copy of ``os.environ`` with ``CODEX_HOME``, ``NO_COLOR=1`` and ``PATH`` prefixed by the
    binary's bundled ``codex-resources`` directory, so Codex finds ``bwrap`` and does not warn
    about it. ``RUST_LOG`` is left as inherited (Codex's default logs errors only).
    """
    env = dict(os.environ)
    env["CODEX_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    resources = codexbin.bundled_resource_dir(binary)
    if resources is not None:
        path = env.get("PATH", "")
        env["PATH"] = f"{resources}{os.pathsep}{path}" if path else str(resources)
    return env
