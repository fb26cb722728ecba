"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash or a full disk part-way through leaves the previous file untouched, so a
run folder never holds half a checkpoint.

:func:`crash_point` is a test hook: the crash tests set ``CNNLAB_CRASH_AT=POINT:N`` to
have the process kill itself (SIGKILL, as ``kill -9`` would) the N-th time it reaches
that point of a write, so that recovery is tested at the worst moments, not only at
random ones. Without the variable it does nothing.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_crash_counts: dict[str, int] = {}


def crash_point(name: str, partial: Path | None = None) -> None:
    """Kill this process here when ``CNNLAB_CRASH_AT`` names this point (see above).

    Points: ``write`` (a temporary file being written: it is cut to half its length
    first), ``pending`` (temporary files complete, manifest not yet told), ``rename``
    (after each rename of a run file), ``replace`` (an atomic write, before its rename).
    """
    wanted = os.environ.get("CNNLAB_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(nth or 1):
        if partial is not None:
            with open(partial, "rb+") as fh:
                fh.truncate(os.fstat(fh.fileno()).st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename still happened
    finally:
        os.close(fd)


def mode_for(target: Path) -> int:
    """The replaced file's permissions, or what a plain ``open`` would give a new one
    (temporary files are created private, 0600)."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode_for(target))
        crash_point("replace")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` to produce the file, then move it onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)
