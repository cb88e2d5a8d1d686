"""Locate the native Codex binary installed by ``scripts/setup.sh``.

The npm package ``@openai/codex`` ships a Node launcher (``bin/codex.js``) that, on Node < 22.15,
spawns the real binary as a *child* and merely forwards signals: killing the launcher leaves the
native app-server orphaned and holding its thread locks. So we never run the launcher; we resolve
the platform package's native binary the same way the launcher does and spawn that directly.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PINNED_VERSION_FILE = REPO_ROOT / "codex-version.txt"
VENDOR_DIR = REPO_ROOT / "vendor" / "codex"

# Mirrors the table in @openai/codex/bin/codex.js.
_TRIPLES: dict[tuple[str, str], tuple[str, str]] = {
    ("linux", "x86_64"): ("x86_64-unknown-linux-musl", "@openai/codex-linux-x64"),
    ("linux", "aarch64"): ("aarch64-unknown-linux-musl", "@openai/codex-linux-arm64"),
    ("darwin", "x86_64"): ("x86_64-apple-darwin", "@openai/codex-darwin-x64"),
    ("darwin", "arm64"): ("aarch64-apple-darwin", "@openai/codex-darwin-arm64"),
}


class CodexBinaryNotFound(RuntimeError):
    """The pinned native Codex binary is not installed (run scripts/setup.sh)."""


def pinned_version() -> str:
    return PINNED_VERSION_FILE.read_text().strip()


def _target() -> tuple[str, str]:
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "arm64" if sys.platform == "darwin" else "aarch64"}.get(
        machine, machine
    )
    key = (sys.platform if sys.platform != "linux2" else "linux", machine)
    try:
        return _TRIPLES[key]
    except KeyError:
        raise CodexBinaryNotFound(f"no Codex build for platform {key[0]}/{key[1]}") from None


def vendored_binary(vendor_dir: Path = VENDOR_DIR) -> Path:
    """Path of the native binary inside the project's npm install (may not exist)."""
    triple, package = _target()
    return vendor_dir / "node_modules" / package / "vendor" / triple / "bin" / "codex"


def resolve_server_command(command: str = "codex") -> Path:
    """Turn the configured ``--server-command`` into an executable path.

    ``codex`` (the default) means the project's vendored native binary, then ``BAA_CODEX_BIN``,
    then ``codex`` on PATH. Any other value is a path or a name looked up on PATH.
    """
    if command == "codex":
        override = os.environ.get("BAA_CODEX_BIN")
        if override:
            return Path(override)
        candidate = vendored_binary()
        if candidate.is_file():
            return candidate
    found = shutil.which(command)
    if found is None:
        raise CodexBinaryNotFound(
            f"codex server command {command!r} not found; run scripts/setup.sh"
        )
    return Path(found)


def bundled_resource_dir(binary: Path) -> Path | None:
    """``codex-resources`` next to the native binary (holds a bundled ``bwrap``)."""
    resources = binary.parent.parent / "codex-resources"
    return resources if resources.is_dir() else None


def binary_version(binary: Path) -> str:
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    # "codex-cli 0.169.0"
    return out.split()[-1] if out else ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    quiet = "--quiet" in args
    try:
        binary = vendored_binary()
        if not binary.is_file():
            raise CodexBinaryNotFound(f"native Codex binary missing at {binary}")
        version = binary_version(binary)
    except (CodexBinaryNotFound, OSError, subprocess.SubprocessError) as exc:
        if not quiet:
            print(f"codexbin: {exc}", file=sys.stderr)
        return 1
    if version != pinned_version():
        if not quiet:
            print(f"codexbin: {binary} is {version}, pinned {pinned_version()}", file=sys.stderr)
        return 1
    if not quiet:
        print(f"codex {version}: {binary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
