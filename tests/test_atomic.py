"""Atomic writes: all or nothing, with the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cnnlab import atomic


def test_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic.write_json(target, {"x": 1})
    atomic.write_json(target, {"x": 2})
    assert target.read_text() == '{\n  "x": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "w.bin"
    atomic.write_bytes(target, b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.write_with(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_new_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "new.txt", "hi")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644


def test_replaced_files_keep_their_permissions(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("x")
    target.chmod(0o640)
    atomic.write_text(target, "y")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
