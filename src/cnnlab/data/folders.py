"""A user's own images, one sub-folder per class, as uint8 tensors decoded once.

Two layouts are read:

- ``PATH/<class>/...``: every class folder's images; a seeded, stratified
  :data:`HOLDOUT` of each class is held out as the test split;
- ``PATH/train/<class>/...`` with ``PATH/test/<class>/...`` (or ``PATH/val/<class>/...``)
  as the test split; with neither, the test split is held out of ``train`` as above.

Images may lie in nested sub-folders of their class folder. Files and folders whose
names start with ``.`` are ignored, and so are files without an image extension
(:data:`EXTENSIONS`, any case). The classes are the class folder names, sorted; an
empty class folder is left out with a warning.

Each image is decoded safely (:mod:`cnnlab.data.decode`: size limits, EXIF orientation,
every colour mode and bit depth to 8-bit RGB or grey, transparency over black), then
brought to the image size by ``pad`` (aspect ratio kept, black border), ``squish``
(stretched) or ``crop`` (aspect ratio kept, centre cut). Files that cannot be decoded
are skipped and named, or with ``strict`` stop the load with a one-line error.

The decoded images are kept in the user cache, ``cache_dir()/folders/<key>/``
(``images.npy`` N×C×H×W uint8, ``labels.npy`` int64, ``meta.json``), where the key is a
SHA-256 of the file list (relative paths, sizes, modification times), the classes, the
preparation settings and :data:`FORMAT_VERSION`: a changed, added or removed file, or
other settings, make a new entry. Entries are written to a temporary folder and renamed
into place; the images are written there as they are decoded (into a file preallocated
with ``np.lib.format.open_memmap``), so decoding a large folder never holds all of them.
The temporary folders of processes killed while decoding (named after the machine and the
process) are removed by the next decode on the same machine.

Later loads read the arrays from disk. A data set whose images fit comfortably, at most
:func:`stream_threshold` bytes (train and test together: a quarter of the memory
available, or ``$CNNLAB_STREAM_ABOVE`` bytes), is read whole into memory, the fastest
for training; a larger one stays in the file, as :class:`~cnnlab.data.mapped.MappedImages`
that training and testing read batch by batch, its splits index lists over the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from cnnlab.atomic import fsync_dir
from cnnlab.cache import cache_dir
from cnnlab.data.decode import open_image, scale_levels, shrink_on_load, split_alpha
from cnnlab.data.mapped import MappedImages, subset_rows
from cnnlab.errors import CnnlabError

__all__ = [
    "EXTENSIONS",
    "FORMAT_VERSION",
    "HOLDOUT",
    "RESIZE_MODES",
    "STREAM_ENV",
    "FolderSettings",
    "decode_file",
    "load_folder",
    "stream_threshold",
]

#: Image file extensions read (compared without regard to case).
EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: The fraction of each class held out as the test split when the folder has none.
HOLDOUT = 0.2
#: The seed of that hold-out: the same folder always gives the same split.
HOLDOUT_SEED = 0
#: How an image is brought to the image size.
RESIZE_MODES = ("pad", "squish", "crop")
#: Part of every cache key: a change of how images are prepared makes new entries.
FORMAT_VERSION = 1
#: How many skipped files are named one by one (the rest are counted).
SHOW_SKIPPED = 20
#: Below this many files decoding stays in this process (starting workers costs more).
PARALLEL_FROM = 256
#: Files per task handed to a worker process.
CHUNK = 64
#: Tasks handed out ahead of the one whose images are being written (each worker busy,
#: and no more decoded images waiting in memory than that).
AHEAD = 2
#: The environment variable that sets :func:`stream_threshold` in bytes ("0": always stream).
STREAM_ENV = "CNNLAB_STREAM_ABOVE"
#: Without it, data sets larger than this fraction of the available memory are streamed.
STREAM_FRACTION = 0.25
#: Bytes copied at a time when an entry's images are rewritten without skipped files.
COPY_BYTES = 64 << 20


@dataclass(frozen=True)
class FolderSettings:
    """How each image is prepared: its (height, width), 1 or 3 channels, the resize mode."""

    size: tuple[int, int] = (32, 32)
    channels: int = 3
    resize: str = "pad"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise CnnlabError(f"channels must be 1 or 3, not {self.channels!r}")
        if self.resize not in RESIZE_MODES:
            raise CnnlabError(
                f"resize must be one of {', '.join(RESIZE_MODES)}, not {self.resize!r}"
            )
        if min(self.size) < 1:
            raise CnnlabError(f"image size must be at least 1, not {self.size!r}")


def _eight_bit(img: Image.Image, grey: bool) -> Image.Image:
    """A standard-mode image (L, LA, RGB, RGBA, F) as 8-bit "L" or "RGB", alpha over black."""
    img, alpha = split_alpha(img)
    if img.mode == "F":
        levels = scale_levels(np.asarray(img, dtype=np.float32), "image")
        img = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L")
    if alpha is not None:
        x = np.asarray(img, dtype=np.float32)
        x = x * (alpha[..., None] if x.ndim == 3 else alpha)
        img = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), img.mode)
    return img.convert("L" if grey else "RGB")


def decode_file(path: str | os.PathLike[str], settings: FolderSettings, label: str) -> np.ndarray:
    """One image file as a (C, H, W) uint8 array, or a one-line CnnlabError naming ``label``."""
    h, w = settings.size
    img = open_image(path, label)
    with img:
        iw, ih = img.size
        # decode reduced, but keep both sides at least the target's (crop needs the short one)
        side = math.ceil(max(h, w) * max(iw, ih) / max(1, min(iw, ih)))
        grey = settings.channels == 1
        out = _eight_bit(shrink_on_load(img, side, label, grey=grey), grey)
    if settings.resize == "squish":
        out = out.resize((w, h), Image.Resampling.BILINEAR)
    elif settings.resize == "crop":
        out = ImageOps.fit(out, (w, h), Image.Resampling.BILINEAR)
    else:
        out = ImageOps.pad(out, (w, h), Image.Resampling.BILINEAR, color=0)
    x = np.asarray(out, dtype=np.uint8)
    return x[None, :, :] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))


def _decode_chunk(
    paths: Sequence[str], labels: Sequence[str], settings: FolderSettings
) -> list[tuple[np.ndarray | None, str | None]]:
    """Decode files; each gives (array, None) or (None, the one-line reason)."""
    results: list[tuple[np.ndarray | None, str | None]] = []
    for path, label in zip(paths, labels, strict=True):
        try:
            results.append((decode_file(path, settings, label), None))
        except CnnlabError as exc:
            results.append((None, str(exc)))
    return results


# ---------------------------------------------------------------------------- finding files


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """Image files below ``folder`` (nested folders included, hidden ones not), sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for name in filenames:
            if _visible(name) and Path(name).suffix.lower() in EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)


def _warn(message: str) -> None:
    print(f"cnnlab: warning: {message}", file=sys.stderr)


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, for the class folders of ``folder`` that hold any."""
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p.name)):
        files = _image_files(sub)
        if files:
            classes[sub.name] = files
        else:
            _warn(f"{sub}: no image files; class {sub.name!r} left out")
    return classes


def _split_folders(root: Path) -> tuple[Path, Path | None]:
    """The train folder and the test folder (None: hold the test split out of train)."""
    if not root.is_dir():
        raise CnnlabError(f"--data {root}: no such folder")
    train = root / "train"
    if not train.is_dir():
        return root, None
    for name in ("test", "val"):
        if (root / name).is_dir():
            return train, root / name
    return train, None


# ---------------------------------------------------------------------------- the cache


def _cache_key(
    folder: Path,
    files: Sequence[Path],
    labels: Sequence[int],
    classes: Sequence[str],
    settings: FolderSettings,
) -> str:
    listing = []
    for path, label in zip(files, labels, strict=True):
        st = path.stat()
        listing.append([path.relative_to(folder).as_posix(), label, st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {
            "version": FORMAT_VERSION,
            "classes": list(classes),
            "settings": asdict(settings),
            "files": listing,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_meta(entry: Path) -> dict[str, Any] | None:
    """The meta of a complete, readable cache entry, or None when there is none."""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        images = np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False)
        labels = np.load(entry / "labels.npy", mmap_mode="r", allow_pickle=False)
        if (
            not isinstance(meta, dict)
            or images.ndim != 4
            or images.dtype != np.uint8
            or labels.shape != (images.shape[0],)
        ):
            return None
        int(meta["files"])
        list(meta["skipped"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def _commit_entry(tmp: Path, entry: Path) -> None:
    """Make the complete temporary folder ``tmp`` the cache entry ``entry``, atomically."""
    for name in ("images.npy", "labels.npy", "meta.json"):
        with open(tmp / name, "rb") as fh:
            os.fsync(fh.fileno())
    if entry.exists() and _read_meta(entry) is None:
        # a damaged entry (written by hand, or by another version): set aside, then removed
        aside = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".old", dir=entry.parent))
        with contextlib.suppress(OSError):  # another process may have done it already
            os.replace(entry, aside / "entry")
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(tmp, entry)
    except OSError:
        if not (entry / "meta.json").is_file():  # not another process's complete entry
            raise
    fsync_dir(entry.parent)


def _without_gaps(path: Path, offset: int, kept: int, shape: tuple[int, ...]) -> None:
    """Rewrite ``path`` (a preallocated .npy whose first ``kept`` rows were written) as a
    .npy of exactly those rows, copying a block at a time."""
    row = int(np.prod(shape))
    part = path.with_name("images.part.npy")
    out = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8, shape=(kept, *shape))
    start = int(out.offset)
    del out
    with open(path, "rb") as src, open(part, "r+b") as dst:
        src.seek(offset)
        dst.seek(start)
        left = kept * row
        while left:
            block = src.read(min(left, COPY_BYTES))
            if not block:
                raise OSError(f"{path}: shorter than the rows written")
            dst.write(block)
            left -= len(block)
    os.replace(part, path)


def _temp_prefix(name: str) -> str:
    """The start of a temporary entry's name: the machine and process writing it."""
    return f".{name}.{socket.gethostname()}.{os.getpid()}."


def _remove_dead_temps(folder: Path) -> None:
    """Remove the temporary entries that processes of this machine which no longer run
    left behind (killed while decoding: as large as the data set)."""
    host = socket.gethostname()
    for path in folder.glob(".*.tmp"):
        try:
            start, pid, _ = path.name[: -len(".tmp")].rsplit(".", 2)
            if start.split(".", 2)[2] != host:
                continue  # another machine sharing the cache: it cannot be checked
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue  # not one of these, or a process that is still running


def _decode_into(
    entry: Path,
    folder: Path,
    files: Sequence[Path],
    labels: Sequence[int],
    settings: FolderSettings,
    progress: bool,
) -> dict[str, Any]:
    """Decode ``files`` into a new cache entry; returns its meta.

    The rows are written to a file preallocated for every file as they are decoded (with
    file writes: written pages go to the page cache, not this process's memory), then
    the entry is renamed into place: a crash leaves a temporary folder that no load reads.
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(entry.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(entry.name), suffix=".tmp", dir=entry.parent))
    try:
        h, w = settings.size
        shape = (settings.channels, h, w)
        path = tmp / "images.npy"
        images = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(len(files), *shape)
        )
        offset = int(images.offset)
        del images
        kept: list[int] = []
        skipped: list[list[str]] = []
        with open(path, "r+b") as fh:
            fh.seek(offset)
            results = _decode_all(folder, files, settings, progress)
            for file, label, (x, why) in zip(files, labels, results, strict=True):
                if x is None:
                    skipped.append([str(file), why or ""])
                    continue
                fh.write(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
                kept.append(label)
        if len(kept) < len(files):
            _without_gaps(path, offset, len(kept), shape)
        np.save(tmp / "labels.npy", np.array(kept, dtype=np.int64), allow_pickle=False)
        meta = {"folder": str(folder), "files": len(files), "skipped": skipped}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        _commit_entry(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


# ---------------------------------------------------------------------------- decoding


def _decode_all(
    folder: Path,
    files: Sequence[Path],
    settings: FolderSettings,
    progress: bool,
) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """Each file's (array, None) or (None, reason), in the order of ``files``.

    Workers are handed at most :data:`AHEAD` chunks per process beyond the one being
    consumed, so a large folder's decoded images never pile up in memory."""
    labels = [str(p) for p in files]
    paths = [str(p) for p in files]
    workers = os.cpu_count() or 1
    if len(files) < PARALLEL_FROM or workers < 2:
        for i in range(len(paths)):
            yield from _decode_chunk(paths[i : i + 1], labels[i : i + 1], settings)
        return
    if progress:
        print(
            f"decoding {len(files):,} images in {folder} on {workers} processes "
            "(once: later runs read them from the cache)",
            file=sys.stderr,
        )
    starts = iter(range(0, len(files), CHUNK))
    chunks = math.ceil(len(files) / CHUNK)
    done = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Any] = deque()

        def submit() -> None:
            i = next(starts, None)
            if i is not None:
                chunk = (paths[i : i + CHUNK], labels[i : i + CHUNK], settings)
                pending.append(pool.submit(_decode_chunk, *chunk))

        for _ in range(workers * AHEAD):
            submit()
        for n in range(1, chunks + 1):
            results = pending.popleft().result()
            submit()
            done += len(results)
            yield from results
            if progress and (n % 10 == 0 or n == chunks):
                print(f"  {done:,} of {len(files):,} decoded", file=sys.stderr)


def _prepared(
    folder: Path,
    files: Sequence[Path],
    labels: Sequence[int],
    classes: Sequence[str],
    settings: FolderSettings,
    progress: bool,
) -> tuple[Path, list[list[str]], int]:
    """The cache entry of one folder (decoded now unless it is there), the skipped
    [file, reason] pairs and the file count."""
    entry = cache_dir() / "folders" / _cache_key(folder, files, labels, classes, settings)
    meta = _read_meta(entry)
    if meta is None:
        meta = _decode_into(entry, folder, files, labels, settings, progress)
    return entry, list(meta["skipped"]), int(meta["files"])


# ---------------------------------------------------------------------------- reading


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def stream_threshold() -> int:
    """The size in bytes above which a folder's decoded images are read from the cache
    batch by batch instead of whole: ``$CNNLAB_STREAM_ABOVE`` (``0``: always), else
    :data:`STREAM_FRACTION` of the memory available (4 GiB where that is unknown)."""
    value = os.environ.get(STREAM_ENV, "").strip()
    if value:
        try:
            limit = int(value)
        except ValueError:
            limit = -1
        if limit < 0:
            raise CnnlabError(f"{STREAM_ENV}={value!r}: expected a number of bytes (0 or more)")
        return limit
    free = available_memory()
    return int(STREAM_FRACTION * free) if free else 4 << 30


def _open_entry(entry: Path, stream: bool) -> tuple[Any, np.ndarray]:
    """An entry's images (a tensor in memory, or :class:`MappedImages` over the file) and
    its labels."""
    import torch

    labels = np.load(entry / "labels.npy", allow_pickle=False).astype(np.int64, copy=False)
    try:
        if stream:
            return MappedImages(entry / "images.npy"), labels
        return torch.from_numpy(np.load(entry / "images.npy", allow_pickle=False)), labels
    except (OSError, ValueError) as exc:
        raise CnnlabError(f"{entry / 'images.npy'}: cannot be read ({exc})") from None


def _report_skipped(skipped: Sequence[Sequence[str]], total: int, strict: bool) -> None:
    if not skipped:
        return
    if strict:
        raise CnnlabError(f"{skipped[0][1]} (--strict stops at the first unreadable file)")
    for _, why in skipped[:SHOW_SKIPPED]:
        _warn(f"skipped {why}")
    more = len(skipped) - SHOW_SKIPPED
    tail = f" ({more} more not named)" if more > 0 else ""
    _warn(f"skipped {len(skipped)} of {total} files{tail}")


# ---------------------------------------------------------------------------- the splits


def _holdout(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """A boolean mask of the test images: :data:`HOLDOUT` of each class, seeded."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    test = np.zeros(labels.shape[0], dtype=bool)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if idx.size >= 2:
            n = max(1, round(HOLDOUT * idx.size))
            test[rng.permutation(idx)[:n]] = True
    return test


def _gather(
    folder: Path, classes: Sequence[str], by_class: dict[str, list[Path]]
) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for c, name in enumerate(classes):
        for path in by_class.get(name, []):
            files.append(path)
            labels.append(c)
    return files, labels


def load_folder(
    path: str | os.PathLike[str],
    settings: FolderSettings,
    *,
    strict: bool = False,
    progress: bool = True,
    stream: bool | None = None,
) -> tuple[Any, Any]:
    """The train and test :class:`~cnnlab.data.datasets.ImageData` of a folder of images.

    The dataset is named after the folder. See the module's description for the layouts,
    what is skipped and the cache. ``stream`` reads the images from the cache batch by
    batch (True) or whole into memory (False); None decides by their size
    (:func:`stream_threshold`).
    """
    import torch

    from cnnlab.data.datasets import ImageData

    root = Path(path).expanduser().resolve()
    train_dir, test_dir = _split_folders(root)
    by_class = _class_files(train_dir)
    if not by_class:
        raise CnnlabError(
            f"{train_dir}: no class folders with images (expected {train_dir}/<class>/*.jpg, ...)"
        )
    if len(by_class) < 2:
        only = next(iter(by_class))
        raise CnnlabError(
            f"{train_dir}: only one class ({only!r}); at least two class folders are needed"
        )
    classes = tuple(sorted(by_class))
    files, labels = _gather(train_dir, classes, by_class)
    entries = [_prepared(train_dir, files, labels, classes, settings, progress)]
    if test_dir is not None:
        test_by_class = _class_files(test_dir)
        for extra in sorted(set(test_by_class) - set(classes)):
            _warn(f"{test_dir / extra}: class {extra!r} is not in {train_dir}; left out")
        test_files, test_labels = _gather(test_dir, classes, test_by_class)
        if not test_files:
            raise CnnlabError(f"{test_dir}: no images of the classes in {train_dir}")
        entries.append(_prepared(test_dir, test_files, test_labels, classes, settings, progress))
    skipped = [pair for _, s, _ in entries for pair in s]
    total = sum(n for _, _, n in entries)
    _report_skipped(skipped, total, strict)
    if stream is None:
        size = sum((entry / "images.npy").stat().st_size for entry, _, _ in entries)
        stream = size > stream_threshold()
    images, kept = _open_entry(entries[0][0], stream)
    if len(images) == 0:
        raise CnnlabError(f"{train_dir}: none of its {total} image files could be read")
    if test_dir is None:
        mask = _holdout(kept, len(classes))
        if not mask.any():
            raise CnnlabError(
                f"{root}: too few images to hold out a test split (each class needs two)"
            )
        # index lists: a file's view, or a copy of a tensor already in memory
        train_rows, test_rows = np.flatnonzero(~mask), np.flatnonzero(mask)
        t_images, t_kept = subset_rows(images, test_rows), kept[test_rows]
        images, kept = subset_rows(images, train_rows), kept[train_rows]
    else:
        t_images, t_kept = _open_entry(entries[1][0], stream)
        if len(t_images) == 0:
            raise CnnlabError(f"{test_dir}: none of its image files could be read")
    name = root.name or str(root)

    def data(x: Any, y: np.ndarray, split: str) -> Any:
        return ImageData(
            images=x,
            labels=torch.from_numpy(np.ascontiguousarray(y)),
            classes=classes,
            name=name,
            split=split,
        )

    return data(images, kept, "train"), data(t_images, t_kept, "test")
