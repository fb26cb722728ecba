"""Load a dataset by name as uint8 image and int64 label tensors, once.

Everything downstream (batching, normalising, augmenting) works on these whole
tensors rather than per-sample objects, which is what makes MNIST fast. Loads
are cached in-process by resolved file path and modification time, so asking
twice costs nothing; treat the returned tensors as read-only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.data import cifar
from cnnlab.data.digits import DIGITS_CLASSES, load_digits_split
from cnnlab.data.idx import read_idx
from cnnlab.data.sources import DATASET_SOURCES, locate
from cnnlab.errors import CnnlabError

__all__ = ["SPLITS", "ImageData", "list_datasets", "load_dataset"]

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass(frozen=True, repr=False)
class ImageData:
    """One split of a dataset: images (N, C, H, W) uint8, labels (N,) int64, class names.

    A folder of images larger than memory has :class:`~cnnlab.data.mapped.MappedImages`
    for ``images``: read from the decode cache as they are indexed."""

    images: torch.Tensor  # or MappedImages
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """How many classes the labels index into."""
        return len(self.classes)

    def __repr__(self) -> str:
        shape = "x".join(str(d) for d in self.images.shape)
        return (
            f"ImageData(name={self.name!r}, split={self.split!r}, images={shape}, "
            f"classes={len(self.classes)})"
        )


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts, sorted."""
    return sorted({"digits", cifar.SOURCE.name, *DATASET_SOURCES})


#: Other spellings accepted for a dataset's name.
_ALIASES = {"cifar-10": cifar.SOURCE.name}


def _normalise_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in list_datasets():
        raise CnnlabError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return key


_cache: dict[tuple, ImageData] = {}


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def _check_images(path: Path, images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Images as (N, 1, H, W) uint8 of the dataset's size, or a one-line error."""
    h, w = size
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise CnnlabError(
            f"{path}: expected uint8 images of shape (N, {h}, {w}), "
            f"got {images.dtype} {images.shape}"
        )
    item = images.shape[1:]
    if item not in ((h, w), (1, h, w)):
        raise CnnlabError(
            f"{path}: expected images of {h}x{w} pixels, shape (N, {h}, {w}) or "
            f"(N, 1, {h}, {w}), got shape {images.shape}"
        )
    if images.shape[0] == 0:
        raise CnnlabError(f"{path}: holds no images (shape {images.shape})")
    return images if images.ndim == 4 else images[:, None, :, :]


def _check_labels(path: Path, labels: np.ndarray, name: str, classes: tuple[str, ...]) -> None:
    """Labels must be integers of shape (N,) indexing into ``classes``."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise CnnlabError(f"{path}: expected integer labels of shape (N,), got {labels.shape}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise CnnlabError(
            f"{path}: labels range {int(labels.min())}..{int(labels.max())}, "
            f"expected 0..{len(classes) - 1} for {name}"
        )


def _from_idx(name: str, split: str, images_path: Path, labels_path: Path) -> ImageData:
    """Read and check one split's pair of files; every inconsistency is a one-line error,
    so that nothing downstream (training, testing) starts on a dataset it cannot use."""
    source = DATASET_SOURCES[name]
    images = _check_images(images_path, read_idx(images_path), source.image_size)
    labels = read_idx(labels_path)
    _check_labels(labels_path, labels, name, source.classes)
    if images.shape[0] != labels.shape[0]:
        raise CnnlabError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    return ImageData(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=source.classes,
        name=name,
        split=split,
    )


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> ImageData:
    """Load ``split`` ("train", "test" or "all") of dataset ``name`` (see :func:`list_datasets`).

    ``"all"`` is the training images followed by the test images, for measuring a model
    on every image of a dataset it was not trained on (scikit-learn's digits, say).
    Files are found through :func:`cnnlab.data.sources.locate`: ``data_dir``, then
    ``CNNLAB_DATA``, then the user cache, then a download (unless ``download`` is False).
    """
    key = _normalise_name(name)
    if split == "all":
        train = load_dataset(key, "train", data_dir, download)
        test = load_dataset(key, "test", data_dir, download)
        return ImageData(
            images=torch.cat([train.images, test.images]),
            labels=torch.cat([train.labels, test.labels]),
            classes=train.classes,
            name=key,
            split="all",
        )
    if split not in SPLITS:
        raise CnnlabError(f"unknown split {split!r} for {key}; use 'train', 'test' or 'all'")
    if key == "digits":
        images, labels = load_digits_split(split)
        return ImageData(
            images=torch.from_numpy(images[:, None, :, :]),
            labels=torch.from_numpy(labels),
            classes=DIGITS_CLASSES,
            name=key,
            split=split,
        )
    if key == cifar.SOURCE.name:
        return _load_cifar10(split, data_dir, download)
    source = DATASET_SOURCES[key]
    images_path = locate(key, source.file(split, "images"), data_dir, download)
    labels_path = locate(key, source.file(split, "labels"), data_dir, download)
    cache_key = (key, split, _file_key(images_path), _file_key(labels_path))
    data = _cache.get(cache_key)
    if data is None:
        log.debug("%s %s: reading %s and %s", key, split, images_path, labels_path)
        data = _from_idx(key, split, images_path, labels_path)
        _cache[cache_key] = data
    return data


def _load_cifar10(split: str, data_dir: str | os.PathLike[str] | None, download: bool) -> ImageData:
    """One split of CIFAR-10 from its binary batch files (see :mod:`cnnlab.data.cifar`)."""
    folder = cifar.find_batches(data_dir, download)
    meta = folder / cifar.META
    files = cifar.batch_files(folder, split)
    cache_key = ("cifar10", split, *(_file_key(p) for p in (*files, meta) if p.is_file()))
    data = _cache.get(cache_key)
    if data is None:
        classes = cifar.read_classes(meta)
        log.debug("cifar10 %s: reading %s", split, ", ".join(str(p) for p in files))
        parts = [cifar.read_batch(p, len(classes)) for p in files]
        images = np.concatenate([x for x, _ in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([y for _, y in parts]) if len(parts) > 1 else parts[0][1]
        data = ImageData(
            images=torch.from_numpy(images),
            labels=torch.from_numpy(labels),
            classes=classes,
            name="cifar10",
            split=split,
        )
        _cache[cache_key] = data
    return data


def clear_cache() -> None:
    """Forget every dataset loaded so far (frees the memory of their tensors)."""
    _cache.clear()
