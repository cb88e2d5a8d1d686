"""Finding the Codex binary and judging its version: the pin and the supported range,
``--server-command`` resolution, and the npm launcher resolved to the native binary (fake npm
layouts in tmp_path, mirroring what ``@openai/codex/bin/codex.js`` does)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from codexd_trio.base import codexbin
from codexd_trio.base.codexbin import (
    CodexBinaryNotFound,
    SupportedRange,
    check_reported_version,
    check_version,
    native_binary,
    read_versions,
    resolve_server_command,
    version_from_user_agent,
    version_key,
)

TRIPLE, PLATFORM_PACKAGE = codexbin._target()


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_codex(path: Path, version: str = "0.170.0") -> Path:
    """A stand-in native binary that answers ``--version`` like Codex."""
    return _executable(path, f'#!/bin/sh\necho "codex-cli {version}"\n')


def launcher_package(node_modules: Path, version: str = "0.171.0") -> Path:
    """``node_modules/@openai/codex`` with its ``bin/codex.js``; returns the script."""
    root = node_modules / "@openai" / "codex"
    root.mkdir(parents=True)
    (root / "package.json").write_text(
        json.dumps({"name": "@openai/codex", "version": version, "bin": {"codex": "bin/codex.js"}})
    )
    return _executable(root / "bin" / "codex.js", "#!/usr/bin/env node\n// launcher\n")


def platform_package(node_modules: Path, version: str = "0.171.0") -> Path:
    """``node_modules/@openai/codex-<platform>`` with its native binary; returns the binary."""
    root = node_modules / PLATFORM_PACKAGE
    root.mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"name": "@openai/codex", "version": version}))
    return fake_codex(root / "vendor" / TRIPLE / "bin" / "codex", version)


# ------------------------------------------------------------------------------ versions


def test_the_repository_declares_a_pin_inside_its_range() -> None:
    versions = read_versions()
    assert versions.pinned == codexbin.pinned_version()
    assert versions.contains(versions.pinned)
    assert versions.contains(versions.oldest)
    assert versions.newest == versions.pinned, "the pin is the newest tested release"
    oldest, newest = version_key(versions.oldest), version_key(versions.newest)
    assert oldest is not None
    assert newest is not None
    assert oldest <= newest


def test_version_file_format(tmp_path: Path) -> None:
    file = tmp_path / "codex-version.txt"
    file.write_text("0.171.0\n# comment\noldest = 0.169.0  # trailing comment\n\n")
    assert read_versions(file) == SupportedRange("0.171.0", "0.169.0", "0.171.0")
    file.write_text("0.171.0\n")
    assert read_versions(file) == SupportedRange("0.171.0", "0.171.0", "0.171.0")
    file.write_text("0.171.0\noldest = soon\n")
    with pytest.raises(ValueError, match="oldest"):
        read_versions(file)


@pytest.mark.parametrize(
    ("version", "inside"),
    [
        ("0.169.0", True),
        ("0.170.3", True),
        ("0.171.0", True),
        ("0.171.0-alpha.2", True),  # a pre-release sorts before its release
        ("0.169.0-alpha.1", False),
        ("0.168.9", False),
        ("0.172.0", False),
        ("1.0.0", False),
        ("0.0.0-dev", False),
        ("nonsense", False),
        ("", False),
    ],
)
def test_range_membership(version: str, inside: bool) -> None:
    assert SupportedRange("0.171.0", "0.169.0", "0.171.0").contains(version) is inside


def test_check_version_inside_and_outside_the_range(tmp_path: Path) -> None:
    versions = SupportedRange("0.171.0", "0.169.0", "0.171.0")
    inside = check_version(fake_codex(tmp_path / "a" / "codex", "0.170.0"), versions)
    assert (inside.version, inside.supported, inside.error) == ("0.170.0", True, None)
    assert inside.range == "0.169.0 .. 0.171.0"

    newer = check_version(fake_codex(tmp_path / "b" / "codex", "0.180.1"), versions)
    assert newer.version == "0.180.1"
    assert newer.supported is False
    assert "outside the supported range 0.169.0 .. 0.171.0" in newer.message()
    assert newer.to_dict() == {
        "binary": str(tmp_path / "b" / "codex"),
        "version": "0.180.1",
        "supported": False,
        "oldest": "0.169.0",
        "newest": "0.171.0",
        "pinned": "0.171.0",
        "error": None,
    }


def test_check_version_never_raises(tmp_path: Path) -> None:
    missing = check_version(tmp_path / "nowhere" / "codex")
    assert missing.version is None
    assert missing.supported is False
    assert missing.error is not None
    assert "FileNotFoundError" in missing.error
    failing = check_version(_executable(tmp_path / "bad" / "codex", "#!/bin/sh\nexit 3\n"))
    assert (failing.version, failing.supported) == (None, False)
    assert failing.error is not None
    silent = check_version(_executable(tmp_path / "silent" / "codex", "#!/bin/sh\n"))
    assert (silent.version, silent.error) == (None, "no output from --version")


@pytest.mark.parametrize(
    ("user_agent", "version"),
    [
        ("codexd/0.171.0 (Debian 12.0.0; x86_64) xterm (codexd; 0.3.0)", "0.171.0"),
        ("other-client/0.172.0-alpha.1 (Mac OS 15.1; arm64) (other-client; 1)", "0.172.0-alpha.1"),
        ("codexd/fake (x)", None),
        ("codexd", None),
        ("", None),
        (None, None),
        (17, None),
    ],
)
def test_version_from_the_initialize_user_agent(user_agent: object, version: str | None) -> None:
    assert version_from_user_agent(user_agent) == version


def test_check_a_reported_version_without_a_binary() -> None:
    versions = SupportedRange("0.171.0", "0.169.0", "0.171.0")
    ok = check_reported_version("0.169.0", versions=versions)
    assert (ok.binary, ok.supported, ok.error) == (None, True, None)
    old = check_reported_version("0.160.0", versions=versions)
    assert old.supported is False
    assert "the app-server" in old.message()
    unknown = check_reported_version(None, versions=versions)
    assert (unknown.version, unknown.supported, unknown.error) == (
        None, False, "no version reported")


def test_other_versions_live_beside_the_pin() -> None:
    pinned = codexbin.pinned_version()
    assert codexbin.vendor_prefix() == codexbin.VENDOR_DIR
    assert codexbin.vendor_prefix(pinned) == codexbin.VENDOR_DIR
    assert codexbin.vendor_prefix("0.1.2") == codexbin.VENDOR_ROOT / "codex-0.1.2"
    other = codexbin.vendored_binary_for("0.1.2")
    assert other.is_relative_to(codexbin.VENDOR_ROOT / "codex-0.1.2")
    with pytest.raises(ValueError, match="not a Codex version"):
        codexbin.vendor_prefix("../../etc")


def test_codexbin_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    versions = read_versions()
    assert codexbin.main(["--range"]) == 0
    assert capsys.readouterr().out.split() == [versions.oldest, versions.newest]
    assert codexbin.main(["--codex-version"]) == 2
    assert codexbin.main(["--quiet", "--codex-version", "0.0.1"]) == 1  # not installed


# ------------------------------------------------------------------------------ the launcher


def test_npm_global_symlink_resolves_to_the_hoisted_platform_binary(tmp_path: Path) -> None:
    # npm i -g: /prefix/bin/codex -> ../lib/node_modules/@openai/codex/bin/codex.js
    node_modules = tmp_path / "lib" / "node_modules"
    script = launcher_package(node_modules)
    native = platform_package(node_modules)
    link = tmp_path / "bin" / "codex"
    link.parent.mkdir()
    link.symlink_to(os.path.relpath(script, link.parent))
    assert native_binary(link) == native.resolve()
    assert native_binary(script) == native.resolve()


def test_a_nested_platform_package_wins_like_nodes_resolution(tmp_path: Path) -> None:
    node_modules = tmp_path / "node_modules"
    script = launcher_package(node_modules)
    platform_package(node_modules, "0.1.0")  # hoisted, farther away
    nested = platform_package(node_modules / "@openai" / "codex" / "node_modules")
    dot_bin = node_modules / ".bin" / "codex"
    dot_bin.parent.mkdir()
    dot_bin.symlink_to("../@openai/codex/bin/codex.js")
    assert native_binary(dot_bin) == nested.resolve()
    assert native_binary(script) == nested.resolve()


def test_pnpm_shell_shim_resolves_through_the_store(tmp_path: Path) -> None:
    store = tmp_path / "global" / "5" / ".pnpm" / "@openai+codex@0.171.0" / "node_modules"
    launcher_package(store)
    native = platform_package(store)
    shim = _executable(
        tmp_path / "codex",
        "#!/bin/sh\n"
        'basedir=$(dirname "$(echo "$0" | sed -e \'s,\\\\,/,g\')")\n'
        'if [ -x "$basedir/node" ]; then\n'
        '  exec "$basedir/node"  "$basedir/global/5/.pnpm/@openai+codex@0.171.0/node_modules/'
        '@openai/codex/bin/codex.js" "$@"\n'
        "else\n"
        '  exec node  "$basedir/global/5/.pnpm/@openai+codex@0.171.0/node_modules/'
        '@openai/codex/bin/codex.js" "$@"\n'
        "fi\n",
    )
    assert native_binary(shim) == native.resolve()


def test_an_old_launcher_with_bundled_vendor_folder(tmp_path: Path) -> None:
    script = launcher_package(tmp_path / "node_modules", "0.5.0")
    native = fake_codex(script.parent.parent / "vendor" / TRIPLE / "bin" / "codex", "0.5.0")
    assert native_binary(script) == native


def test_a_launcher_without_its_platform_binary_is_an_error(tmp_path: Path) -> None:
    script = launcher_package(tmp_path / "node_modules")
    with pytest.raises(CodexBinaryNotFound, match=PLATFORM_PACKAGE):
        native_binary(script)


def test_anything_else_is_returned_unchanged(tmp_path: Path) -> None:
    native = fake_codex(tmp_path / "native" / "codex")
    assert native_binary(native) == native
    wrapper = _executable(tmp_path / "wrapper" / "codex", f'#!/bin/sh\nexec {native} "$@"\n')
    assert native_binary(wrapper) == wrapper
    # A codex.js that is not @openai/codex's launcher.
    other = tmp_path / "other"
    (other / "bin").mkdir(parents=True)
    (other / "package.json").write_text(json.dumps({"name": "not-codex"}))
    script = _executable(other / "bin" / "codex.js", "#!/usr/bin/env node\n")
    assert native_binary(script) == script
    assert native_binary(tmp_path / "missing") == tmp_path / "missing"


def test_the_vendored_launcher_resolves_to_the_vendored_binary() -> None:
    dot_bin = codexbin.VENDOR_DIR / "node_modules" / ".bin" / "codex"
    if not dot_bin.exists():
        pytest.skip("vendor/codex is not installed (scripts/setup.sh)")
    assert native_binary(dot_bin) == codexbin.vendored_binary().resolve()


# ------------------------------------------------------------------------------ --server-command


@pytest.fixture
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BAA_CODEX_BIN", raising=False)


@pytest.mark.usefixtures("no_override")
def test_codex_means_the_vendored_pinned_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = tmp_path / "vendor" / "codex"
    native = platform_package(prefix / "node_modules")
    monkeypatch.setattr(codexbin, "VENDOR_DIR", prefix)
    # Even with another codex first on PATH.
    other = fake_codex(tmp_path / "path" / "codex")
    monkeypatch.setenv("PATH", f"{other.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert resolve_server_command("codex") == native
    assert resolve_server_command() == native


@pytest.mark.usefixtures("no_override")
def test_codex_falls_back_to_path_and_resolves_a_launcher_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codexbin, "VENDOR_DIR", tmp_path / "not-installed")
    node_modules = tmp_path / "lib" / "node_modules"
    script = launcher_package(node_modules)
    native = platform_package(node_modules)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "codex").symlink_to(script)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert resolve_server_command("codex") == native.resolve()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CodexBinaryNotFound, match=r"scripts/setup\.sh"):
        resolve_server_command("codex")


def test_baa_codex_bin_overrides_and_is_resolved_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_modules = tmp_path / "node_modules"
    script = launcher_package(node_modules)
    native = platform_package(node_modules)
    monkeypatch.setenv("BAA_CODEX_BIN", str(script))
    assert resolve_server_command("codex") == native.resolve()
    monkeypatch.setenv("BAA_CODEX_BIN", str(tmp_path / "missing"))
    with pytest.raises(CodexBinaryNotFound, match="BAA_CODEX_BIN"):
        resolve_server_command("codex")


def test_explicit_paths_and_names_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    native = fake_codex(tmp_path / "opt" / "codex-beta")
    assert resolve_server_command(str(native)) == native
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_server_command("~/opt/codex-beta") == native
    with pytest.raises(CodexBinaryNotFound, match="does not exist"):
        resolve_server_command(str(tmp_path / "opt" / "nope"))
    monkeypatch.setenv("PATH", str(native.parent))
    assert resolve_server_command("codex-beta") == native
    with pytest.raises(CodexBinaryNotFound, match="not found on PATH"):
        resolve_server_command("codex-gamma")
