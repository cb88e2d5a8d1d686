"""Locate the native Codex binary, and say whether its version is one codexd supports.

The npm package ``@openai/codex`` ships a Node launcher (``bin/codex.js``) that, on Node < 22.15,
spawns the real binary as a *child* and merely forwards signals: killing the launcher leaves the
native app-server orphaned and holding its thread locks. So we never run the launcher; we resolve
the platform package's native binary the same way the launcher does and spawn that directly —
for the project's own install (``vendor/codex/``) and for any launcher a user points us at.

``codex-version.txt`` holds the pinned release (its first line; ``scripts/setup.sh`` installs it
into ``vendor/codex/``) and the supported range (``oldest = …``, ``newest = …``: the oldest and
newest releases the suite has been run against). ``scripts/setup.sh --codex-version X`` installs
another release beside the pinned one, into ``vendor/codex-X/``.

``python -m codexd_trio.codexbin`` checks the pinned install (exit 0/1); ``--codex-version X``
checks ``vendor/codex-X/`` instead; ``--path`` prints only the binary's path; ``--range`` prints
the supported range (``OLDEST NEWEST``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PINNED_VERSION_FILE = REPO_ROOT / "codex-version.txt"
VENDOR_ROOT = REPO_ROOT / "vendor"
VENDOR_DIR = VENDOR_ROOT / "codex"

# Mirrors the table in @openai/codex/bin/codex.js.
_TRIPLES: dict[tuple[str, str], tuple[str, str]] = {
    ("linux", "x86_64"): ("x86_64-unknown-linux-musl", "@openai/codex-linux-x64"),
    ("linux", "aarch64"): ("aarch64-unknown-linux-musl", "@openai/codex-linux-arm64"),
    ("darwin", "x86_64"): ("x86_64-apple-darwin", "@openai/codex-darwin-x64"),
    ("darwin", "arm64"): ("aarch64-apple-darwin", "@openai/codex-darwin-arm64"),
}
LAUNCHER_PACKAGE = "@openai/codex"
# A release as npm spells it: 0.171.0, 0.172.0-alpha.3 (also the guard for vendor/codex-X/).
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z][0-9A-Za-z.-]*))?$")
# A launcher reference inside a shell shim (pnpm, cmd-shim): ".../@openai/codex/bin/codex.js".
_SHIM_TARGET_RE = re.compile(r"""([^\s"'`]*@openai/codex/bin/codex\.js)""")
_SHIM_MAX_BYTES = 64 * 1024


class CodexBinaryNotFound(RuntimeError):
    """The configured Codex binary cannot be found (for the pinned one: run scripts/setup.sh)."""


# --------------------------------------------------------------------------------------------
# Versions: the pin and the supported range


@dataclass(frozen=True)
class SupportedRange:
    """The pinned release and the oldest/newest releases codexd is tested with."""

    pinned: str
    oldest: str
    newest: str

    def contains(self, version: str) -> bool:
        """Whether ``version`` lies within ``oldest..newest`` (a pre-release sorts before its
        release; a version that is not ``X.Y.Z[-pre]`` is outside)."""
        key = version_key(version)
        low, high = version_key(self.oldest), version_key(self.newest)
        return key is not None and low is not None and high is not None and low <= key <= high

    def describe(self) -> str:
        return f"{self.oldest} .. {self.newest}"


def version_key(version: str) -> tuple[int, int, int, int] | None:
    """Sort key of an npm release version; None when ``version`` is not one."""
    match = _VERSION_RE.match(version.strip())
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    return int(major), int(minor), int(patch), 0 if pre else 1


def read_versions(path: Path = PINNED_VERSION_FILE) -> SupportedRange:
    """Parse ``codex-version.txt``: the pinned version on the first line, then optional
    ``oldest = X`` / ``newest = Y`` lines (``#`` starts a comment). Both default to the pin."""
    pinned: str | None = None
    keys: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if pinned is None:
            pinned = line
        elif "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            keys[key] = value
        else:
            raise ValueError(f"{path}: cannot parse line {raw!r}")
    if pinned is None:
        raise ValueError(f"{path}: no pinned version")
    versions = SupportedRange(pinned, keys.get("oldest", pinned), keys.get("newest", pinned))
    for name in ("pinned", "oldest", "newest"):
        if version_key(getattr(versions, name)) is None:
            raise ValueError(f"{path}: {name} is not a version: {getattr(versions, name)!r}")
    return versions


def pinned_version() -> str:
    return read_versions().pinned


def supported_range() -> SupportedRange:
    return read_versions()


@dataclass(frozen=True)
class VersionCheck:
    """Whether a Codex is in the supported range. ``supported`` is False outside the range and
    when the version could not be read (``error`` says why); neither is a reason to refuse to
    start. ``binary`` is None when the version came from a server codexd did not spawn."""

    binary: str | None
    version: str | None
    supported: bool
    oldest: str
    newest: str
    pinned: str
    error: str | None = None

    @property
    def range(self) -> str:
        return f"{self.oldest} .. {self.newest}"

    def message(self) -> str:
        """One human sentence for a log line or a warning event."""
        what = self.binary or "the app-server"
        if self.version is None:
            return f"cannot tell the Codex version of {what}: {self.error}"
        if self.supported:
            return f"codex {self.version} is within the supported range {self.range}"
        return (
            f"codex {self.version} ({what}) is outside the supported range {self.range}; "
            f"codexd may misread what it sends (pinned: {self.pinned})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (camelCase, for a status field or an event's ``detail``)."""
        return {
            "binary": self.binary,
            "version": self.version,
            "supported": self.supported,
            "oldest": self.oldest,
            "newest": self.newest,
            "pinned": self.pinned,
            "error": self.error,
        }


def check_reported_version(
    version: str | None,
    *,
    binary: str | Path | None = None,
    versions: SupportedRange | None = None,
    error: str | None = None,
) -> VersionCheck:
    """Compare a version Codex reported (``--version``, or the ``initialize`` userAgent, see
    :func:`version_from_user_agent`) with the supported range. Never raises."""
    versions = versions or supported_range()
    version = version or None
    if version is None and error is None:
        error = "no version reported"
    return VersionCheck(
        binary=None if binary is None else str(binary),
        version=version,
        supported=version is not None and versions.contains(version),
        oldest=versions.oldest,
        newest=versions.newest,
        pinned=versions.pinned,
        error=error,
    )


def check_version(binary: Path, versions: SupportedRange | None = None) -> VersionCheck:
    """Run ``binary --version`` and compare it with the supported range.

    Never raises for an unsupported or unreadable version (the daemon warns and carries on).
    Blocking (a subprocess, normally ~20 ms): call it from a thread in async code.
    """
    try:
        version = binary_version(binary)
        error = None if version else "no output from --version"
    except (OSError, subprocess.SubprocessError) as exc:
        version, error = "", f"{type(exc).__name__}: {exc}"
    return check_reported_version(version, binary=binary, versions=versions, error=error)


def version_from_user_agent(user_agent: object) -> str | None:
    """Codex's version from the ``userAgent`` of its ``initialize`` answer.

    ``"codexd/0.171.0 (Debian 12.0.0; x86_64) xterm (codexd; 0.3.0)"``: the app-server puts its
    own version after the client's name. None when ``user_agent`` is not of that shape.
    """
    if not isinstance(user_agent, str):
        return None
    first = user_agent.split(" ", 1)[0]
    _, slash, version = first.partition("/")
    return version if slash and version_key(version) is not None else None


def binary_version(binary: Path) -> str:
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    # "codex-cli 0.169.0"
    return out.split()[-1] if out else ""


# --------------------------------------------------------------------------------------------
# Where binaries are


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


def vendor_prefix(version: str | None = None) -> Path:
    """The npm prefix holding ``version``: ``vendor/codex/`` for the pin (or None), else
    ``vendor/codex-<version>/`` (``scripts/setup.sh --codex-version <version>``)."""
    if version is None or version == pinned_version():
        return VENDOR_DIR
    if version_key(version) is None:
        raise ValueError(f"not a Codex version: {version!r}")
    return VENDOR_ROOT / f"codex-{version}"


def vendored_binary(vendor_dir: Path | None = None) -> Path:
    """Path of the native binary inside an npm install prefix, by default the pinned
    ``vendor/codex/`` (may not exist)."""
    triple, package = _target()
    prefix = VENDOR_DIR if vendor_dir is None else vendor_dir
    return prefix / "node_modules" / package / "vendor" / triple / "bin" / "codex"


def vendored_binary_for(version: str | None = None) -> Path:
    """The native binary of ``version`` as ``scripts/setup.sh`` installs it (may not exist)."""
    return vendored_binary(vendor_prefix(version))


def resolve_server_command(command: str = "codex") -> Path:
    """Turn the configured ``--server-command`` into the native binary to spawn.

    * ``codex`` (the default): ``BAA_CODEX_BIN`` when set, else the project's pinned
      ``vendor/codex/`` install, else ``codex`` on PATH.
    * a path (it contains ``/`` or starts with ``~``): that file.
    * any other name: looked up on PATH.

    Whatever is found, an npm launcher (``bin/codex.js``, a symlink or shell shim to it) is
    resolved to the platform's native binary, as the launcher itself would (:func:`native_binary`).

    Raises:
        CodexBinaryNotFound: nothing to run.
    """
    if command == "codex":
        override = os.environ.get("BAA_CODEX_BIN")
        if override:
            return native_binary(_existing(Path(override).expanduser(), "BAA_CODEX_BIN"))
        candidate = vendored_binary()
        if candidate.is_file():
            return candidate
    if "/" in command or command.startswith("~"):
        return native_binary(_existing(Path(command).expanduser(), "server command"))
    found = shutil.which(command)
    if found is None:
        hint = "; run scripts/setup.sh" if command == "codex" else ""
        raise CodexBinaryNotFound(f"codex server command {command!r} not found on PATH{hint}")
    return native_binary(Path(found))


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CodexBinaryNotFound(f"{what} {str(path)!r} does not exist or is not a file")
    return path.absolute()


def native_binary(path: Path) -> Path:
    """``path``, unless it is the npm launcher of ``@openai/codex``: then the native binary the
    launcher would run.

    Recognised: ``…/@openai/codex/bin/codex.js`` itself, any symlink to it (npm's
    ``node_modules/.bin/codex``, a global ``/usr/local/bin/codex``), and a shell shim that runs
    it (pnpm, cmd-shim). Anything else — the native binary, a user's own wrapper script — is
    returned unchanged.

    Raises:
        CodexBinaryNotFound: it is the launcher, but the platform's binary is not installed.
    """
    launcher = _launcher_script(path)
    if launcher is None:
        return path
    return _launcher_target(launcher)


def _launcher_script(path: Path) -> Path | None:
    try:
        real = path.resolve(strict=True)
    except OSError:
        return None
    if _is_launcher(real):
        return real
    # A shell shim that execs node on the launcher.
    try:
        if real.stat().st_size > _SHIM_MAX_BYTES:
            return None
        with real.open("rb") as f:
            head = f.read(_SHIM_MAX_BYTES)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    text = head.decode("utf-8", "replace")
    for match in _SHIM_TARGET_RE.finditer(text):
        ref = match.group(1)
        for var in ("${basedir}", "$basedir", "%~dp0", "%dp0%"):
            ref = ref.replace(var, str(path.parent))
        candidate = Path(ref)
        if not candidate.is_absolute():
            candidate = path.parent / candidate
        try:
            target = candidate.resolve(strict=True)
        except OSError:
            continue
        if _is_launcher(target):
            return target
    return None


def _is_launcher(real: Path) -> bool:
    """``real`` is ``<package>/bin/codex.js`` of the ``@openai/codex`` package."""
    if real.name != "codex.js" or real.parent.name != "bin":
        return False
    try:
        manifest = json.loads((real.parent.parent / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("name") == LAUNCHER_PACKAGE


def _launcher_target(launcher: Path) -> Path:
    """What ``bin/codex.js`` runs: ``require.resolve(<platform package>/package.json)`` from the
    launcher's real directory (Node's node_modules walk), ``vendor/<triple>/bin/codex`` there;
    else the launcher package's own ``vendor/`` (older packages bundled every platform)."""
    triple, package = _target()
    vendor_root = launcher.parent.parent / "vendor"
    for folder in (launcher.parent, *launcher.parent.parents):
        if folder.name == "node_modules":
            continue
        manifest = folder / "node_modules" / package / "package.json"
        if manifest.is_file():
            vendor_root = manifest.parent / "vendor"
            break
    binary = vendor_root / triple / "bin" / "codex"
    if not binary.is_file():
        raise CodexBinaryNotFound(
            f"{launcher} is the npm launcher of @openai/codex, but its native binary for this "
            f"platform ({package}) is missing at {binary}"
        )
    return binary


def bundled_resource_dir(binary: Path) -> Path | None:
    """``codex-resources`` next to the native binary (holds a bundled ``bwrap``)."""
    resources = binary.parent.parent / "codex-resources"
    return resources if resources.is_dir() else None


# --------------------------------------------------------------------------------------------
# Command line (scripts/setup.sh, .ci/run)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    quiet = "--quiet" in args
    path_only = "--path" in args
    version: str | None = None
    if "--codex-version" in args:
        at = args.index("--codex-version")
        if at + 1 >= len(args):
            print("codexbin: --codex-version needs a version", file=sys.stderr)
            return 2
        version = args[at + 1]
    try:
        versions = supported_range()
        if "--range" in args:
            print(versions.oldest, versions.newest)
            return 0
        wanted = version or versions.pinned
        binary = vendored_binary_for(wanted)
        if not binary.is_file():
            raise CodexBinaryNotFound(f"native Codex binary missing at {binary}")
        found = binary_version(binary)
    except (CodexBinaryNotFound, OSError, ValueError, subprocess.SubprocessError) as exc:
        if not quiet:
            print(f"codexbin: {exc}", file=sys.stderr)
        return 1
    if found != wanted:
        if not quiet:
            print(f"codexbin: {binary} is {found}, expected {wanted}", file=sys.stderr)
        return 1
    if path_only:
        print(binary)
    elif not quiet:
        where = "" if versions.contains(found) else f" (outside {versions.describe()})"
        print(f"codex {found}{where}: {binary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
