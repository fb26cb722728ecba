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
into place. Later loads read the arrays from disk (memory-mapped, then copied into
memory once, since the training pipeline indexes and permutes the whole tensor).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from cnnlab.atomic import fsync_dir
from cnnlab.cache import cache_dir
from cnnlab.data.decode import open_image, scale_levels, shrink_on_load, split_alpha
from cnnlab.errors import CnnlabError

__all__ = [
    "EXTENSIONS",
    "FORMAT_VERSION",
    "HOLDOUT",
    "RESIZE_MODES",
    "FolderSettings",
    "decode_file",
    "load_folder",
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


def _read_entry(entry: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """A complete cache entry, or None when there is none (or it cannot be read)."""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        images = np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False)
        labels = np.load(entry / "labels.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if images.shape[0] != labels.shape[0] or images.dtype != np.uint8:
        return None
    return np.array(images), np.array(labels, dtype=np.int64), meta


def _write_entry(entry: Path, images: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> None:
    """Write a cache entry into a temporary folder, then rename it into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
    try:
        np.save(tmp / "images.npy", images, allow_pickle=False)
        np.save(tmp / "labels.npy", labels, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        for name in ("images.npy", "labels.npy", "meta.json"):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "meta.json").is_file():  # not another process's complete entry
                raise
        fsync_dir(entry.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- decoding


def _decode_all(
    folder: Path,
    files: Sequence[Path],
    settings: FolderSettings,
    progress: bool,
) -> list[tuple[np.ndarray | None, str | None]]:
    labels = [str(p) for p in files]
    paths = [str(p) for p in files]
    workers = os.cpu_count() or 1
    if len(files) < PARALLEL_FROM or workers < 2:
        return _decode_chunk(paths, labels, settings)
    if progress:
        print(
            f"decoding {len(files):,} images in {folder} on {workers} processes "
            "(once: later runs read them from the cache)",
            file=sys.stderr,
        )
    results: list[tuple[np.ndarray | None, str | None]] = []
    starts = range(0, len(files), CHUNK)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_decode_chunk, paths[i : i + CHUNK], labels[i : i + CHUNK], settings)
            for i in starts
        ]
        for n, future in enumerate(futures, 1):
            results.extend(future.result())
            if progress and (n % 10 == 0 or n == len(futures)):
                print(f"  {len(results):,} of {len(files):,} decoded", file=sys.stderr)
    return results


def _prepared(
    folder: Path,
    files: Sequence[Path],
    labels: Sequence[int],
    classes: Sequence[str],
    settings: FolderSettings,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, list[list[str]], int]:
    """Images, labels, the skipped [file, reason] pairs and the file count of one folder."""
    entry = cache_dir() / "folders" / _cache_key(folder, files, labels, classes, settings)
    cached = _read_entry(entry)
    if cached is not None:
        images, kept_labels, meta = cached
        return images, kept_labels, meta["skipped"], int(meta["files"])
    results = _decode_all(folder, files, settings, progress)
    kept = [(x, y) for (x, _), y in zip(results, labels, strict=True) if x is not None]
    skipped = [[str(p), why or ""] for p, (x, why) in zip(files, results, strict=True) if x is None]
    h, w = settings.size
    images = (
        np.stack([x for x, _ in kept])
        if kept
        else np.zeros((0, settings.channels, h, w), dtype=np.uint8)
    )
    kept_labels = np.array([y for _, y in kept], dtype=np.int64)
    meta = {"folder": str(folder), "files": len(files), "skipped": skipped}
    _write_entry(entry, images, kept_labels, meta)
    return images, kept_labels, skipped, len(files)


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
) -> tuple[Any, Any]:
    """The train and test :class:`~cnnlab.data.datasets.ImageData` of a folder of images.

    The dataset is named after the folder. See the module's description for the layouts,
    what is skipped and the cache.
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
    images, kept, skipped, total = _prepared(train_dir, files, labels, classes, settings, progress)
    if test_dir is not None:
        test_by_class = _class_files(test_dir)
        for extra in sorted(set(test_by_class) - set(classes)):
            _warn(f"{test_dir / extra}: class {extra!r} is not in {train_dir}; left out")
        test_files, test_labels = _gather(test_dir, classes, test_by_class)
        if not test_files:
            raise CnnlabError(f"{test_dir}: no images of the classes in {train_dir}")
        t_images, t_kept, t_skipped, t_total = _prepared(
            test_dir, test_files, test_labels, classes, settings, progress
        )
        skipped, total = [*skipped, *t_skipped], total + t_total
    _report_skipped(skipped, total, strict)
    if images.shape[0] == 0:
        raise CnnlabError(f"{train_dir}: none of its {total} image files could be read")
    if test_dir is None:
        mask = _holdout(kept, len(classes))
        if not mask.any():
            raise CnnlabError(
                f"{root}: too few images to hold out a test split (each class needs two)"
            )
        images, t_images, kept, t_kept = images[~mask], images[mask], kept[~mask], kept[mask]
    elif t_images.shape[0] == 0:
        raise CnnlabError(f"{test_dir}: none of its image files could be read")
    name = root.name or str(root)

    def data(x: np.ndarray, y: np.ndarray, split: str) -> Any:
        return ImageData(
            images=torch.from_numpy(np.ascontiguousarray(x)),
            labels=torch.from_numpy(np.ascontiguousarray(y)),
            classes=classes,
            name=name,
            split=split,
        )

    return data(images, kept, "train"), data(t_images, t_kept, "test")
