"""Durable file writes on filesystems that refuse part of the job (issue 29 §2's survivors)."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import pytest

from codexd_trio.base.files import append_synced, atomic_write_bytes, fsync_dir


def test_a_filesystem_that_refuses_to_sync_a_directory_does_not_fail_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some filesystems (network shares, some FUSE ones) refuse fsync on a directory: the rename
    # is as durable as that filesystem can make it, and the write must still succeed.
    real_fsync = os.fsync
    refused: list[int] = []

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fsync_dir(tmp_path)
    atomic_write_bytes(tmp_path / "doc.json", b"{}")
    assert len(refused) == 2
    assert (tmp_path / "doc.json").read_bytes() == b"{}"


class _FullDiskFile(io.BytesIO):
    """A journal file on a disk that is full, and that cannot even be cut back."""

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def truncate(self, size: int | None = None) -> int:
        raise OSError(errno.EIO, "Input/output error")


def test_a_failed_synced_append_reports_its_own_error_when_cutting_back_fails_too() -> None:
    # The operator is told the cause (the full disk), not the clean-up's failure after it.
    with pytest.raises(OSError, match="No space left on device") as failed:
        append_synced(_FullDiskFile(), b'{"key": 1}\n', 0)
    assert failed.value.errno == errno.ENOSPC


def test_a_failed_atomic_write_reports_its_own_error_when_removing_the_temporary_fails_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def unlink(path: object) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", cross_device)
    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(OSError, match="Invalid cross-device link") as failed:
        atomic_write_bytes(tmp_path / "doc.json", b"{}")
    assert failed.value.errno == errno.EXDEV
    assert not (tmp_path / "doc.json").exists()


def test_a_directory_sync_leaves_a_path_that_is_not_a_directory_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    fsync_dir(tmp_path)
    assert len(synced) == 1
    (tmp_path / "file").write_bytes(b"data")
    fsync_dir(tmp_path / "file")
    fsync_dir(tmp_path / "missing")
    assert len(synced) == 1
