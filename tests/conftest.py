"""Shared fixtures: isolated cache, no network, small IDX datasets, trained runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import write_idx

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture
def fresh_load(monkeypatch: pytest.MonkeyPatch):
    """Forget the loaded library before and after a test that changes how it is built."""
    from cnnlab.speed import native

    native.load.cache_clear()
    yield monkeypatch
    native.load.cache_clear()


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's cache or the internet from a test."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CNNLAB_MIRRORS", "http://127.0.0.1:9/")


@pytest.fixture(autouse=True)
def _fixed_threads() -> Iterator[None]:
    """Commands run in-process set the process's threads (``--threads auto`` by default);
    each test starts from torch's own count, fixed, so that in-process comparisons of two
    trainings stay bit-exact."""
    from cnnlab.speed import threads

    count = torch.get_num_threads()
    threads.set_threads(count)
    yield
    threads.set_threads(count)


def real_mnist_dir() -> Path | None:
    """The folder named by CNNLAB_DATA if it holds the real MNIST files."""
    root = os.environ.get("CNNLAB_DATA")
    if not root:
        return None
    for folder in (Path(root) / "mnist", Path(root)):
        if all((folder / f).exists() for f in MNIST_FILES):
            return Path(root)
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST data folder; the test is skipped without it."""
    path = real_mnist_dir()
    if path is None:
        pytest.skip("real MNIST not available (set CNNLAB_DATA to a folder holding mnist/)")
    return path


def make_blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 28×28 digits-like images: class k is a bright square at a class position."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 3 + 7 * (k // 4), 3 + 6 * (k % 4)
        images[i, r : r + 6, c : c + 6] = 255
    return images, labels


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding a small synthetic dataset in MNIST's file layout."""
    root = tmp_path_factory.mktemp("tiny-data")
    folder = root / "mnist"
    folder.mkdir()
    tr_x, tr_y = make_blobs(600, 0)
    te_x, te_y = make_blobs(200, 1)
    write_idx(folder / MNIST_FILES[0], tr_x)
    write_idx(folder / MNIST_FILES[1], tr_y)
    write_idx(folder / MNIST_FILES[2], te_x)
    write_idx(folder / MNIST_FILES[3], te_y)
    return root


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed000-cnn run trained briefly on the offline `digits` dataset."""
    from cnnlab.config import TrainConfig
    from cnnlab.runs import train_run

    out = tmp_path_factory.mktemp("runs") / "digits-seed000"
    train_run(
        TrainConfig(model="seed000-cnn", dataset="digits", epochs=3, batch_size=32),
        out,
        progress=False,
    )
    return out


#: The classes of :func:`photo_run`'s pictures and the colour each one is painted.
PHOTO_COLOURS = {"apples": (220, 30, 30), "leaves": (30, 200, 40), "sky": (40, 80, 230)}


def write_photo_folder(root: Path, per_class: int = 12, size: tuple[int, int] = (20, 14)) -> Path:
    """A folder of small colour PNGs, one sub-folder per class of :data:`PHOTO_COLOURS`
    (noisy flat colour, so the class is visible by colour and a network learns it fast)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, colour in PHOTO_COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-25, 26, (size[1], size[0], 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def photo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed000-cnn run trained for three epochs on a folder of 16×16 colour pictures
    (enough to tell the three colours apart)."""
    from cnnlab.cli import main

    base = tmp_path_factory.mktemp("photo-run")
    folder = write_photo_folder(base / "pictures")
    out = base / "run"
    argv = ["train", "--data", str(folder), "--model", "seed000-cnn", "--epochs", "3"]
    code = main([*argv, "--image-size", "16", "--out", str(out), "--quiet"])
    assert code == 0
    return out
