"""Throw-away ``CODEX_HOME`` directories that point the real Codex at the scripted model.

Homes live under the test root (:func:`scratch_root`), never under the system's temporary
directory: Codex refuses to create its helper aliases there and says so on stderr at every start
(``shared/codex-app-server.md`` §9). The test root does not depend on where the checkout is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codexd_trio.base import codexbin

__all__ = [
    "codex_child_env",
    "codex_home_root",
    "read_only_sandbox_enforced",
    "scratch_root",
    "temporary_codex_home",
    "write_codex_home",
]

TEST_ROOT_ENV = "BAA_TEST_ROOT"
# The older name of the same override, still honoured for the homes alone.
HOME_ROOT_ENV = "BAA_TEST_HOME_ROOT"


def _under_temp_dir(path: Path) -> bool:
    temps = {Path(tempfile.gettempdir()).resolve(), Path("/tmp").resolve()}
    resolved = path.resolve()
    return any(resolved == t or t in resolved.parents for t in temps)


def scratch_root() -> Path:
    """Where tests and benchmarks put throw-away homes, state and logs (created if missing).

    ``$BAA_TEST_ROOT`` if set; else ``<repo>/var`` when the checkout is a normal one; else, for a
    checkout under the temporary directory (a CI copy under ``/tmp``), a per-user folder under
    ``$XDG_CACHE_HOME`` (default ``~/.cache``), so the suite behaves the same wherever it is.
    """
    override = os.environ.get(TEST_ROOT_ENV)
    if override:
        root = Path(override)
    elif not _under_temp_dir(codexbin.REPO_ROOT):
        root = codexbin.REPO_ROOT / "var"
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(cache) / "baa-conductor-trio" / "test-root"
    root = root.expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    return root


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

    ``$BAA_TEST_HOME_ROOT`` if set, else ``codex-homes`` under :func:`scratch_root` (never the
    temporary directory).
    """
    override = os.environ.get(HOME_ROOT_ENV)
    root = Path(override) if override else scratch_root() / "codex-homes"
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


def read_only_sandbox_enforced(binary: Path) -> tuple[bool, str]:
    """Whether Codex's read-only sandbox really refuses writes on this machine.

    Codex's Linux sandbox (bubblewrap) needs user namespaces; where they are unavailable the
    sandbox cannot be enforced at all. Asks Codex itself: ``codex sandbox touch FILE`` with the
    default (read-only) policy, in a throw-away home. Returns ``(enforced, what Codex said)``.
    """
    with tempfile.TemporaryDirectory(prefix="sandbox-probe-", dir=codex_home_root()) as raw:
        root = Path(raw)
        target = root / "probe"
        env = codex_child_env(root, binary)
        done = subprocess.run(
            [str(binary), "sandbox", "touch", str(target)],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        said = (done.stderr or done.stdout).strip().splitlines()
        return not target.exists(), said[-1] if said else f"exit {done.returncode}"
