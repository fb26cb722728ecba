"""CIFAR-10 in its official binary format: where the batch files are, and reading them.

The binary version (``cifar-10-binary.tar.gz``) holds ``cifar-10-batches-bin/`` with
``data_batch_1.bin`` … ``data_batch_5.bin`` (train), ``test_batch.bin`` (test) and
``batches.meta.txt`` (the class names, one a line). Each batch is a run of 3,073-byte
records: one label byte, then 1,024 red, 1,024 green and 1,024 blue bytes, each plane a
row-major 32×32 image. Only this version is read: the "python version" is a set of pickles,
and unpickling a file can run arbitrary code, so it is never opened.

The batch folder is looked for, in each data folder in turn (``data_dir``, then
``CNNLAB_DATA``), as ``DIR/cifar-10-batches-bin/`` or ``DIR/cifar10/cifar-10-batches-bin/``,
then as the archive ``DIR/cifar-10-binary.tar.gz`` or ``DIR/cifar10/cifar-10-binary.tar.gz``;
then the archive in the user cache, then a download of it
(:func:`cnnlab.data.sources.locate_file`: mirrors, MD5, size cap, deadline).
An archive is extracted once into the user cache; see :func:`extract_batches`.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from cnnlab.atomic import fsync_dir
from cnnlab.cache import cache_dir
from cnnlab.data.sources import DatasetSource, data_dirs, locate_file
from cnnlab.errors import CnnlabError

__all__ = [
    "ARCHIVE",
    "BATCH_DIR",
    "RECORD_BYTES",
    "SOURCE",
    "batch_files",
    "extract_batches",
    "find_batches",
    "read_batch",
    "read_classes",
]

ARCHIVE = "cifar-10-binary.tar.gz"
BATCH_DIR = "cifar-10-batches-bin"
META = "batches.meta.txt"
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
#: Bytes of one record: a label byte and 3×32×32 pixel bytes.
RECORD_BYTES = 1 + 3 * 32 * 32
#: Records in one official batch file; a larger file is not a CIFAR-10 batch.
MAX_RECORDS = 10_000
_MAX_META_BYTES = 4096
_MARKER = ".extracted-from"

#: The official archive; tests replace it (``monkeypatch.setattr``) to serve their own.
SOURCE = DatasetSource(
    name="cifar10",
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    md5={ARCHIVE: "c32a1d4ab5d03f1284b67883e8d87530"},
    sizes={ARCHIVE: 170_052_171},
    classes=(
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    home="https://www.cs.toronto.edu/~kriz/cifar.html",
    image_size=(32, 32),
)

# Names that mark the pickled "python version", which is never read.
_PYTHON_VERSION = ("cifar-10-batches-py", "cifar-10-python.tar.gz")


def read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one binary batch file.

    The file must be a whole number (1 to 10,000) of 3,073-byte records and every label
    must be below ``num_classes``; otherwise a one-line :class:`CnnlabError` names it.
    """
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES or size > MAX_RECORDS * RECORD_BYTES:
        raise CnnlabError(
            f"{path}: {size} bytes is not a CIFAR-10 binary batch "
            f"(1 to {MAX_RECORDS:,} records of {RECORD_BYTES:,} bytes)"
        )
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    if records.shape[0] * RECORD_BYTES != size:  # the file changed while being read
        raise CnnlabError(f"{path}: read {records.size} bytes of {size}")
    labels = records[:, 0].astype(np.int64)
    if int(labels.max()) >= num_classes:
        raise CnnlabError(
            f"{path}: label {int(labels.max())} in record {int(labels.argmax())}, "
            f"expected 0..{num_classes - 1}"
        )
    # Each record's 3,072 pixel bytes are the red, green and blue planes, each row-major.
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32))
    return images, labels


def read_classes(path: Path) -> tuple[str, ...]:
    """The class names of ``batches.meta.txt``, one a line, blank lines left out."""
    if not path.is_file():
        raise CnnlabError(f"{path}: not found (CIFAR-10's class names, one a line)")
    if path.stat().st_size > _MAX_META_BYTES:
        raise CnnlabError(f"{path}: over {_MAX_META_BYTES} bytes, not a list of class names")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CnnlabError(f"{path}: not UTF-8 text (expected class names)") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not 2 <= len(names) <= 256:
        raise CnnlabError(f"{path}: {len(names)} class names, expected 2 to 256")
    return names


def batch_files(folder: Path, split: str) -> list[Path]:
    """The batch files of ``split`` in ``folder``: the train split reads whichever
    ``data_batch_N.bin`` exist (at least one), the test split ``test_batch.bin``."""
    names = TRAIN_BATCHES if split == "train" else (TEST_BATCH,)
    found = [folder / n for n in names if (folder / n).is_file()]
    if not found:
        raise CnnlabError(
            f"{folder}: no {' or '.join(names) if split == 'test' else 'data_batch_N.bin'} "
            f"file for CIFAR-10's {split} split"
        )
    return found


def _archive_key(archive: Path) -> str:
    st = archive.stat()
    return f"{archive.resolve()}\n{st.st_size}\n{st.st_mtime_ns}\n"


def _wanted(member: tarfile.TarInfo) -> str | None:
    """The file name to extract ``member`` as, or None to skip it.

    Only regular files named exactly ``cifar-10-batches-bin/<known name>`` are taken, and
    they are written under that known name: a link, a device, an absolute path or a
    ``..`` never reaches the file system, whatever the archive holds."""
    if not member.isreg():
        return None
    name = member.name.removeprefix("./")
    folder, _, base = name.partition("/")
    if folder != BATCH_DIR or base not in (*TRAIN_BATCHES, TEST_BATCH, META):
        return None
    limit = _MAX_META_BYTES if base == META else MAX_RECORDS * RECORD_BYTES
    if member.size > limit:
        raise CnnlabError(f"{name}: {member.size} bytes in the archive, over the {limit} expected")
    return base


def extract_batches(archive: Path) -> Path:
    """The batch folder of ``archive``, extracted once into the user cache.

    The files are extracted rather than read from the archive at each load because a
    gzip-compressed tar cannot be read out of order: loading the test split would mean
    decompressing all 170 MB each time, where an extracted batch is one ``np.fromfile``.
    The folder is written under a temporary name and renamed when complete, and it
    records which archive (path, size, modification time) it came from, so that another
    archive is extracted anew.
    """
    root = cache_dir() / SOURCE.name
    target = root / BATCH_DIR
    key = _archive_key(archive)
    marker = target / _MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8") == key:
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BATCH_DIR}.", suffix=".tmp", dir=root))
    try:
        _extract_into(archive, tmp)
        (tmp / _MARKER).write_text(key, encoding="utf-8")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{BATCH_DIR}.old.", dir=root))
            os.replace(target, old / BATCH_DIR)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            # another process extracted the same archive in the meantime: use its folder
            if not (marker.is_file() and marker.read_text(encoding="utf-8") == key):
                raise CnnlabError(f"{target}: cannot store the extracted batches ({exc})") from None
        fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract_into(archive: Path, folder: Path) -> None:
    """Copy the wanted members of ``archive`` into ``folder`` (see :func:`_wanted`)."""
    taken = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = _wanted(member)
                if base is None:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(folder / base, "wb") as out:
                    shutil.copyfileobj(src, out)
                taken += 1
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CnnlabError(f"{archive}: cannot extract the batch files ({exc})") from None
    if not taken:
        raise CnnlabError(f"{archive}: holds no {BATCH_DIR}/ batch files")


def _python_version(dirs: list[Path]) -> Path | None:
    for folder in dirs:
        for base in (folder, folder / SOURCE.name):
            for name in _PYTHON_VERSION:
                if (base / name).exists():
                    return base / name
    return None


def find_batches(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """The folder holding CIFAR-10's binary batch files (see the module's docstring)."""
    dirs = data_dirs(data_dir)
    for folder in dirs:
        for base in (folder, folder / SOURCE.name):
            if (base / BATCH_DIR).is_dir():
                return base / BATCH_DIR
            if (base / ARCHIVE).is_file():
                return extract_batches(base / ARCHIVE)
    python = _python_version(dirs)
    if python is not None:
        raise CnnlabError(
            f"{python} is CIFAR-10's python (pickled) version; cnnlab reads only the binary "
            f"version ({ARCHIVE} or {BATCH_DIR}/), as unpickling a file can run code in it"
        )
    return extract_batches(locate_file(SOURCE, ARCHIVE, data_dir, download))
