"""Integration on the real MNIST (CNNLAB_DATA must point at it; CI sets it).

These train real models for an epoch or a few and check the accuracy the
tutorials' recipes reach, the resume guarantee and prediction on drawn digits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset, prepare_digit
from cnnlab.runs import load_run, train_run
from tests.drawing import draw_digit

pytestmark = pytest.mark.mnist


@pytest.fixture(scope="module")
def seed000_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mnist") / "seed000"
    train_run(
        TrainConfig(model="seed000-cnn", epochs=1, batch_size=64, validation_split=0.2),
        out,
        data_dir=mnist_dir,
        progress=False,
    )
    return out


def test_one_epoch_of_seed000_beats_97_5_percent(seed000_run: Path) -> None:
    run = load_run(seed000_run)
    assert run.metrics["test_samples"] == 10_000
    assert run.metrics["test_accuracy"] > 0.975


@pytest.mark.parametrize("digit", ["0", "1", "2", "4", "7"])
def test_drawn_digits_are_recognised(seed000_run: Path, tmp_path: Path, digit: str) -> None:
    run = load_run(seed000_run)
    image = prepare_digit(draw_digit(digit, tmp_path / f"{digit}.png"))
    probs = run.predict(torch.from_numpy(image))
    assert run.classes[int(probs.argmax())] == digit


def test_resume_5_plus_2_equals_7_on_mnist_subset(mnist_dir: Path, tmp_path: Path) -> None:
    """The resume guarantee on real digits (a 6,000-image slice keeps it quick)."""
    # A folder holding the first 6,000 training images in MNIST's format.
    from cnnlab.data import write_idx

    train = load_dataset("mnist", "train", mnist_dir)
    test = load_dataset("mnist", "test", mnist_dir)
    sub = tmp_path / "data" / "mnist"
    sub.mkdir(parents=True)
    write_idx(sub / "train-images-idx3-ubyte.gz", train.images[:6000, 0].numpy())
    write_idx(sub / "train-labels-idx1-ubyte.gz", train.labels[:6000].to(torch.uint8).numpy())
    write_idx(sub / "t10k-images-idx3-ubyte.gz", test.images[:1000, 0].numpy())
    write_idx(sub / "t10k-labels-idx1-ubyte.gz", test.labels[:1000].to(torch.uint8).numpy())
    cfg = TrainConfig(model="seed004-lenet-max", epochs=7, seed=1)
    train_run(cfg, tmp_path / "seven", data_dir=tmp_path / "data", progress=False)
    train_run(
        TrainConfig(**{**cfg.to_dict(), "epochs": 5}),
        tmp_path / "five",
        data_dir=tmp_path / "data",
        progress=False,
    )
    resumed = train_run(
        TrainConfig(),
        resume=tmp_path / "five",
        more_epochs=2,
        data_dir=tmp_path / "data",
        progress=False,
    )
    a = load_file(str(tmp_path / "seven" / "weights.safetensors"))
    b = load_file(str(tmp_path / "five" / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["epochs"] == 7
    assert resumed.metrics["test_accuracy"] == pytest.approx(
        load_run(tmp_path / "seven").metrics["test_accuracy"]
    )
