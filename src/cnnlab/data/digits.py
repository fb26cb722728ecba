"""The ``digits`` dataset: scikit-learn's 1,797 bundled 8x8 digits, made MNIST-like.

It ships inside scikit-learn, so it works offline and loads in a moment, which
makes it the dataset for quick lessons and tests. Each 8x8 image (values 0..16)
is scaled to 0..255, upsampled bilinearly into a 20x20 box and placed in a 28x28
field with its centre of mass at the centre, as MNIST was made.

The split is fixed: a stratified 80/20 split drawn with
``numpy.random.default_rng(0)`` (per class, 20% rounded to the nearest image go
to test), kept in the original order: 1,438 train and 359 test images.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.prepare import center_by_mass

__all__ = ["DIGITS_CLASSES", "SEED", "TEST_FRACTION", "load_digits_split"]

DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
SEED = 0
TEST_FRACTION = 0.2


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 images (N, 8, 8) in 0..16 and labels, from scikit-learn's bundled CSV.

    The CSV is read directly when found, since importing scikit-learn takes about
    a second and a half; otherwise ``sklearn.datasets.load_digits`` is used.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            with gzip.open(csv, "rt") as fh:
                data = np.loadtxt(fh, delimiter=",", dtype=np.float32)
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def _to_mnist(images8: np.ndarray) -> np.ndarray:
    """(N, 8, 8) in 0..16 -> (N, 28, 28) uint8, 20x20 box centred by mass."""
    small = torch.from_numpy(images8 * (255.0 / 16.0)).unsqueeze(1)
    boxes = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    boxes_np = boxes.squeeze(1).clamp(0, 255).numpy()
    out = np.stack([center_by_mass(box) for box in boxes_np])
    return np.rint(out).astype(np.uint8)


def _split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified 80/20 split; both index arrays sorted."""
    rng = np.random.default_rng(SEED)
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        test.append(rng.permutation(members)[: round(TEST_FRACTION * len(members))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


@functools.lru_cache(maxsize=1)
def _prepared() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images8, labels = _raw_digits()
    images = _to_mnist(images8)
    train_idx, test_idx = _split_indices(labels)
    return images, labels, train_idx, test_idx


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and int64 labels of the ``train`` or ``test`` split."""
    images, labels, train_idx, test_idx = _prepared()
    idx = train_idx if split == "train" else test_idx
    return images[idx], labels[idx]
