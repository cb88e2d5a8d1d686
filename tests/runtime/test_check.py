"""Static checks of rendered and installed files (check-launchd.sh; baa_runtime.check and
baa_runtime.check_peers).
"""

from __future__ import annotations

import plistlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.support import (
    dir_flags,
    render,
    run_script,
)


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_check_accepts_a_good_rendering(
    manager: str, tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    files, _ = render(tmp_path / "out", manager, *dir_flags(node_dirs))
    args = [a for f in files.values() for a in ("--file", str(f))]
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("ok: 3 file(s) checked")


def test_check_catches_codexd_bound_to_all_interfaces(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    files, _ = render(tmp_path / "out", "launchd", "--service", "codexd", *dir_flags(node_dirs))
    plist: dict[str, Any] = plistlib.loads(files["codexd"].read_bytes())
    plist["EnvironmentVariables"]["BAA_CODEXD_LOCAL_API_BASE"] = "http://0.0.0.0:4319"
    files["codexd"].write_bytes(plistlib.dumps(plist))
    proc = run_script("check-launchd.sh", "--file", str(files["codexd"]), env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "so.makefile.baa-codexd.plist: codexd listen address is not loopback: 0.0.0.0 "
        "(BAA_CODEXD_LOCAL_API_BASE=http://0.0.0.0:4319)"
    ]


def test_check_catches_a_missing_log_dir(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    missing = tmp_path / "no-such-logs"
    files, _ = render(
        tmp_path / "out",
        "launchd",
        "--service",
        "codexd",
        *dir_flags(node_dirs),
        "--logs-dir",
        str(missing),
    )
    proc = run_script("check-launchd.sh", "--file", str(files["codexd"]), env=sandbox)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert (
        f"so.makefile.baa-codexd.plist: logs dir (BAA_CODEXD_LOGS_DIR) does not exist: {missing}"
        in lines
    )
    assert (
        f"so.makefile.baa-codexd.plist: stdout log dir does not exist: {missing}/launchd" in lines
    )
    # Every problem is one line naming the file.
    assert all(line.startswith("so.makefile.baa-codexd.plist: ") for line in lines)


def test_check_catches_broken_systemd_semantics_and_inline_secrets(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    files, _ = render(tmp_path / "out", "systemd", "--service", "conductor", *dir_flags(node_dirs))
    unit = files["conductor"]
    text = unit.read_text()
    text = text.replace("Restart=on-failure", "Restart=always")
    text = text.replace("TimeoutStopSec=20", "TimeoutStopSec=5")
    text = text.replace("[Service]\n", '[Service]\nEnvironment="BAA_SHARED_TOKEN=hunter2"\n')
    unit.write_text(text)
    node_dirs["token"].chmod(0o644)
    proc = run_script("check-launchd.sh", "--file", str(unit), env=sandbox)
    assert proc.returncode == 1
    out = proc.stdout
    assert "Restart must be on-failure (got 'always')" in out
    assert "TimeoutStopSec (5s) must be longer than codexd's shutdown grace (10s)" in out
    assert "BAA_SHARED_TOKEN is written inline; use BAA_SHARED_TOKEN_FILE instead" in out
    assert "shared token file is readable by others (chmod 600)" in out


def test_check_reports_services_that_are_not_installed(sandbox: dict[str, str]) -> None:
    proc = run_script(
        "check-launchd.sh", "--manager", "launchd", "--service", "codexd", env=sandbox
    )
    assert proc.returncode == 1
    assert proc.stdout.strip().endswith("so.makefile.baa-codexd.plist: not installed")


def test_check_catches_a_world_readable_codexd_token_and_an_inline_one(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    token_file = node_dirs["codexd_token"]
    files, _ = render(
        tmp_path / "out",
        "systemd",
        *dir_flags(node_dirs),
        "--codexd-token-file",
        str(token_file),
    )
    token_file.chmod(0o644)
    args = [a for f in files.values() for a in ("--file", str(f))]
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"baa-{service}.service: codexd token file is readable by others (chmod 600): {token_file}"
        for service in ("codexd", "conductor")
    ]

    token_file.chmod(0o600)
    unit = files["codexd"]
    unit.write_text(
        unit.read_text().replace("[Service]\n", '[Service]\nEnvironment="BAA_CODEXD_TOKEN=x"\n')
    )
    token_file.write_text("")
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "baa-codexd.service: BAA_CODEXD_TOKEN is written inline; use BAA_CODEXD_TOKEN_FILE instead",
        f"baa-codexd.service: codexd token file is empty: {token_file}",
        f"baa-conductor.service: codexd token file is empty: {token_file}",
    ]

    token_file.unlink()
    proc = run_script("check-launchd.sh", "--file", str(files["conductor"]), env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"baa-conductor.service: codexd token file does not exist: {token_file}"
    ]


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_check_catches_a_conductor_without_codexd_token(
    manager: str, tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    token_file = node_dirs["codexd_token"]
    with_token, _ = render(
        tmp_path / "with",
        manager,
        *dir_flags(node_dirs),
        "--codexd-token-file",
        str(token_file),
    )
    without, _ = render(tmp_path / "without", manager, *dir_flags(node_dirs))
    # codexd wants a token; the conductor beside it was rendered without one.
    shutil.copy(without["conductor"], with_token["conductor"])
    codexd_name, conductor_name = with_token["codexd"].name, with_token["conductor"].name
    expected = (
        f"{conductor_name}: BAA_CODEXD_TOKEN_FILE is not set, but codexd ({codexd_name}) "
        f"requires the token in {token_file}: the conductor could not call codexd "
        "(render both with --codexd-token-file)"
    )
    args = [a for f in with_token.values() for a in ("--file", str(f))]
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [expected]
    # Checking codexd alone still finds the conductor installed beside it.
    proc = run_script("check-launchd.sh", "--file", str(with_token["codexd"]), env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [expected]

    # A different file with the same token works; a different token does not.
    copy = tmp_path / "conductor-copy-of-token"
    shutil.copy(token_file, copy)
    copy.chmod(0o600)
    render(
        tmp_path / "with",
        manager,
        "--service",
        "conductor",
        *dir_flags(node_dirs),
        "--codexd-token-file",
        str(copy),
    )
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 0, proc.stdout
    copy.write_text("another-token\n")
    proc = run_script("check-launchd.sh", *args, env=sandbox)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{conductor_name}: BAA_CODEXD_TOKEN_FILE is {copy}, but codexd ({codexd_name}) reads "
        f"its token from {token_file}: the conductor could not call codexd "
        "(render both with --codexd-token-file)"
    ]


def test_installing_codexd_alone_with_a_token_checks_the_installed_conductor(
    tmp_path: Path, node_dirs: dict[str, Path], sandbox: dict[str, str]
) -> None:
    install_dir = tmp_path / "installed"
    render(install_dir, "systemd", "--service", "conductor", *dir_flags(node_dirs))
    flags = [
        "--dry-run",
        "--manager",
        "systemd",
        "--install-dir",
        str(install_dir),
        *dir_flags(node_dirs),
        "--codexd-token-file",
        str(node_dirs["codexd_token"]),
    ]
    proc = run_script("install-launchd.sh", "--service", "codexd", *flags, env=sandbox)
    assert proc.returncode == 1
    assert (
        "baa-conductor.service: BAA_CODEXD_TOKEN_FILE is not set, but codexd "
        "(baa-codexd.service) requires the token in" in proc.stderr
    )
    # Installing both at once is fine: the new conductor carries the token file too.
    proc = run_script("install-launchd.sh", *flags, env=sandbox)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "manager-calls.log").exists()
