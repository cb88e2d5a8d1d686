"""Durable file writes on filesystems that refuse part of the job (issue 29 §2's survivors)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from codexd_trio.base.files import atomic_write_bytes, fsync_dir


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
