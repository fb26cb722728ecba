"""load_dataset: names, splits, validation of file pairs, digits, and the real MNIST."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import ImageData, list_datasets, load_dataset, write_idx
from cnnlab.data.sources import FILES
from cnnlab.errors import CnnlabError


@pytest.fixture(autouse=True)
def _no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNLAB_MIRRORS", "http://127.0.0.1:9/")


def _write_pair(folder: Path, images: np.ndarray, labels: np.ndarray, split: str = "train") -> None:
    write_idx(folder / "mnist" / FILES[f"{split}_images"], images)
    write_idx(folder / "mnist" / FILES[f"{split}_labels"], labels)


def test_list_datasets() -> None:
    assert list_datasets() == ["cifar10", "digits", "fashion-mnist", "kmnist", "mnist"]


def test_unknown_name_and_split() -> None:
    with pytest.raises(CnnlabError, match="cifar10, digits, fashion-mnist, kmnist, mnist"):
        load_dataset("cifar100")
    with pytest.raises(CnnlabError, match="'validation'"):
        load_dataset("digits", "validation")


def test_loads_tensors_from_data_dir(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), np.uint8)
    _write_pair(tmp_path, images, np.array([0, 1, 2, 3, 4, 9], np.uint8))
    data = load_dataset("MNIST", "train", data_dir=tmp_path, download=False)
    assert isinstance(data, ImageData) and len(data) == 6
    assert data.images.dtype == torch.uint8 and data.images.shape == (6, 1, 28, 28)
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [0, 1, 2, 3, 4, 9]
    assert (data.name, data.split, data.classes[9]) == ("mnist", "train", "9")
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert "60000" not in repr(data) and "6x1x28x28" in repr(data)
    # cached in-process: the same object comes back
    assert load_dataset("mnist", "train", data_dir=tmp_path, download=False) is data


def test_count_mismatch_names_both_files(tmp_path: Path) -> None:
    _write_pair(tmp_path, np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(CnnlabError) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert FILES["train_images"] in str(info.value) and FILES["train_labels"] in str(info.value)


def test_label_out_of_range(tmp_path: Path) -> None:
    _write_pair(tmp_path, np.zeros((2, 28, 28), np.uint8), np.array([1, 10], np.uint8))
    with pytest.raises(CnnlabError, match=r"labels range 1\.\.10"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_invalid_user_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / FILES["test_images"]).write_bytes(b"\x1f\x8bgarbage")
    write_idx(tmp_path / "mnist" / FILES["test_labels"], np.zeros(1, np.uint8))
    with pytest.raises(CnnlabError, match=FILES["test_images"]):
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_images_as_labels_rejected(tmp_path: Path) -> None:
    _write_pair(tmp_path, np.zeros((2, 28, 28), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(CnnlabError, match="labels"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_digits_offline() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert 0.18 < len(test) / 1797 < 0.22
    for data in (train, test):
        assert data.images.shape[1:] == (1, 28, 28) and data.images.dtype == torch.uint8
        assert data.labels.dtype == torch.int64
        assert set(data.labels.tolist()) == set(range(10))
        assert int(data.images.max()) == 255
    img = train.images[:, 0].double()
    mass = img.sum(dim=(1, 2))
    coords = torch.arange(28, dtype=torch.float64)
    cy = (img.sum(dim=2) * coords).sum(dim=1) / mass
    cx = (img.sum(dim=1) * coords).sum(dim=1) / mass
    assert float((cy - 14.0).abs().max()) <= 1.0 and float((cx - 14.0).abs().max()) <= 1.0
    # the ink sits in a 20x20 box: the outer 4-pixel frame is mostly empty
    assert float(img[:, :2].sum() + img[:, -2:].sum()) < 1e-3 * float(mass.sum())
    # deterministic split
    assert load_dataset("digits", "test").labels.tolist() == test.labels.tolist()


@pytest.mark.mnist
@pytest.mark.skipif(not os.environ.get("CNNLAB_DATA"), reason="CNNLAB_DATA not set")
def test_real_mnist() -> None:
    from cnnlab.data.datasets import clear_cache

    clear_cache()
    start = time.perf_counter()
    train = load_dataset("mnist", "train", download=False)
    test = load_dataset("mnist", "test", download=False)
    seconds = time.perf_counter() - start
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert int((train.labels == 0).sum()) == 5923 and int((test.labels == 0).sum()) == 980
    assert torch.bincount(test.labels).tolist()[:3] == [980, 1135, 1032]
    assert seconds < 2.0, f"loading MNIST took {seconds:.2f} s"


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_refused(tmp_path: Path, split: str) -> None:
    _write_pair(tmp_path, np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), split)
    with pytest.raises(CnnlabError, match=rf"{FILES[f'{split}_images']}.*no images") as info:
        load_dataset("mnist", split, data_dir=tmp_path, download=False)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "shape", [(3, 32, 32), (3, 28, 28, 1), (3, 3, 28, 28), (3, 28, 27), (3, 28), (3, 1, 1, 784)]
)
def test_wrong_image_shape_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    _write_pair(tmp_path, np.zeros(shape, np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(CnnlabError, match=rf"{FILES['train_images']}.*28") as info:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert "\n" not in str(info.value)


def test_four_dimensional_single_channel_accepted(tmp_path: Path) -> None:
    _write_pair(tmp_path, np.zeros((3, 1, 28, 28), np.uint8), np.zeros(3, np.uint8))
    assert load_dataset("mnist", data_dir=tmp_path, download=False).images.shape == (3, 1, 28, 28)


def test_negative_labels_refused(tmp_path: Path) -> None:
    _write_pair(tmp_path, np.zeros((2, 28, 28), np.uint8), np.array([3, -1], np.int8))
    with pytest.raises(CnnlabError, match=r"labels range -1\.\.3"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


@pytest.mark.parametrize(("n_train", "n_test"), [(0, 4), (6, 0)])
def test_cli_train_refuses_an_empty_split_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], n_train: int, n_test: int
) -> None:
    from cnnlab.cli import main

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        _write_pair(
            tmp_path / "data",
            rng.integers(0, 256, (n, 28, 28), np.uint8),
            np.arange(n, dtype=np.uint8) % 10,
            split,
        )
    run = tmp_path / "run"
    argv = ["train", "--model", "seed004-lenet-max", "--dataset", "mnist", "--epochs", "1"]
    code = main([*argv, "--data-dir", str(tmp_path / "data"), "--out", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no images" in lines[0] and "Traceback" not in err
    assert not run.exists()
