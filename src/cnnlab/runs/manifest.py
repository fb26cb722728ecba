"""``checksums.json``: the SHA-256 of every file of a run folder, written with the files.

A damaged file must not be used silently: a checkpoint with ten flipped bytes still
unpickles, and resuming from it gives a model that is quietly worse. Every run file
is therefore written through :func:`commit`, and read back through :class:`RunFiles`,
which refuses a file whose hash the manifest does not hold.

The order of writes leaves a folder that verifies whatever moment a crash comes at:

1. each new file is written to a temporary name beside its target and fsynced;
2. the manifest is rewritten (atomically) with the new hashes as ``pending``, beside
   the current ones under ``files``: either version of each file is accepted;
3. the temporary files are renamed onto their targets, one by one;
4. the manifest is rewritten with the new hashes under ``files`` and no ``pending``.

A file is accepted when its hash is the one under ``files`` or under ``pending``;
anything else (flipped bytes, a truncated or replaced file) is refused with an error
naming the file. A folder without a manifest (written by an older cnnlab) is read
without checks, and a note says so once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cnnlab import atomic
from cnnlab.errors import CnnlabError

MANIFEST = "checksums.json"
FORMAT = 1
_HEX = re.compile(r"^[0-9a-f]{64}$")
_noted: set[Path] = set()


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _digests(value: Any, path: Path, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _HEX.match(v) for k, v in value.items()
    ):
        raise CnnlabError(f"{path}: {key!r} must map file names to SHA-256 hex digests")
    return dict(value)


def read_manifest(folder: Path) -> tuple[dict[str, str], dict[str, str]] | None:
    """The (files, pending) digests of ``folder``'s manifest; None when it has none."""
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CnnlabError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CnnlabError(f"{path}: not a cnnlab checksum file (format {FORMAT})")
    return _digests(data.get("files"), path, "files"), _digests(
        data.get("pending", {}), path, "pending"
    )


def _write_manifest(folder: Path, files: Mapping[str, str], pending: Mapping[str, str]) -> None:
    data: dict[str, Any] = {"format": FORMAT, "algorithm": "sha256", "files": dict(files)}
    if pending:
        data["pending"] = dict(pending)
    atomic.write_json(folder / MANIFEST, data)


class RunFiles:
    """The files of one run folder, read only when their contents match the manifest.

    ``digests`` maps each verified file to the hash it actually has, which is what the
    next :func:`commit` records as the current version.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        manifest = read_manifest(folder)
        self.checked = manifest is not None
        self.files, self.pending = manifest if manifest is not None else ({}, {})
        self.digests: dict[str, str] = {}

    def recorded(self, name: str) -> bool:
        """Whether the manifest says ``name`` was completely written at some point."""
        return name in self.files

    def exists(self, name: str) -> bool:
        """Whether ``name`` is present (as anything: a directory in its place is damage)."""
        return os.path.lexists(self.folder / name)

    def read_bytes(self, name: str) -> bytes:
        """``name``'s contents, refused unless they match the manifest."""
        path = self.folder / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CnnlabError(f"{path}: missing; is {self.folder} a cnnlab run folder?") from None
        except OSError as exc:
            raise CnnlabError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        digest = sha256(data)
        if not self.checked and self.folder not in _noted:
            _noted.add(self.folder)
            print(
                f"cnnlab: {self.folder} has no {MANIFEST} (an older run folder); "
                "its files are read without checksum checks",
                file=sys.stderr,
            )
        if self.checked:
            accepted = {self.files.get(name), self.pending.get(name)} - {None}
            if not accepted:
                raise CnnlabError(f"{path}: not recorded in {MANIFEST}; refusing to use it")
            if digest not in accepted:
                raise CnnlabError(
                    f"{path}: contents do not match the checksum recorded in {MANIFEST} "
                    "(the file is damaged)"
                )
        self.digests[name] = digest
        return data

    def read_json(self, name: str) -> Any:
        """``name`` parsed as JSON, after the checksum check."""
        try:
            return json.loads(self.read_bytes(name))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CnnlabError(f"{self.folder / name}: not valid JSON ({exc})") from None


def _write_temp(target: Path, writer: Callable[[Path], Any]) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        atomic.crash_point("write", tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, atomic.mode_for(target))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(
    folder: Path, writers: Mapping[str, Callable[[Path], Any]], current: dict[str, str]
) -> None:
    """Write the files ``writers`` produce into ``folder``, recorded in its manifest.

    ``current`` maps the folder's files to their recorded hashes; it is updated in
    place, so one dict follows a folder through a whole training run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for name, writer in writers.items():
            temps[name] = _write_temp(folder / name, writer)
        new = {name: sha256(tmp.read_bytes()) for name, tmp in temps.items()}
        atomic.crash_point("pending")
        _write_manifest(folder, current, new)
        for name, tmp in temps.items():
            os.replace(tmp, folder / name)
            atomic.crash_point("rename")
        atomic.fsync_dir(folder)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    current.update(new)
    _write_manifest(folder, current, {})


def write_json(folder: Path, name: str, obj: Any, current: dict[str, str]) -> None:
    """Write one JSON file of the run folder through :func:`commit`."""
    text = json.dumps(obj, indent=2) + "\n"
    commit(folder, {name: lambda tmp: tmp.write_text(text)}, current)


def remove_stale_temps(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that an interrupted write of one of ``names`` (or of
    the manifest) left in ``folder``; only names :mod:`cnnlab.atomic` makes are touched."""
    own = "|".join(re.escape(n) for n in (*names, MANIFEST))
    pattern = re.compile(rf"^\.({own})\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    for path in folder.iterdir():
        if pattern.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed
