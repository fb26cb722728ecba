"""The run folder: what is written, reloading, resuming, and damage handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import CnnlabError
from cnnlab.config import TrainConfig
from cnnlab.runs import load_run, train_run


def test_run_folder_holds_everything(digits_run: Path) -> None:
    names = {p.name for p in digits_run.iterdir()}
    assert {
        "config.json",
        "weights.safetensors",
        "checkpoint.pt",
        "history.json",
        "metrics.json",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert 0.5 < metrics["test_accuracy"] <= 1.0
    assert metrics["test_loss"] > 0
    config = json.loads((digits_run / "config.json").read_text())
    assert config["model"]["id"] == "seed000-cnn"
    assert config["model"]["parameters"] == 206_922
    assert config["dataset"] == "digits"
    assert config["preprocess"]["input_size"] == [1, 28, 28]
    assert config["train"]["batch_size"] == 32
    history = json.loads((digits_run / "history.json").read_text())
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(history[0])


def test_loaded_run_reproduces_its_test_accuracy(digits_run: Path) -> None:
    from cnnlab.data import load_dataset

    run = load_run(digits_run)
    test = load_dataset("digits", "test")
    # loaded for fast batch inference: NHWC convolution weights
    assert run.predictor.channels_last
    assert run.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    acc = (run.predict(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc == pytest.approx(run.metrics["test_accuracy"], abs=1e-6)


def test_checkpoint_loads_without_pickle(digits_run: Path) -> None:
    state = torch.load(digits_run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and "optimizer" in state


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "weights.safetensors"))


@pytest.mark.parametrize("model", ["seed004-lenet-max", "seed002-cnn"])  # seed002 has dropout
def test_resume_matches_an_uninterrupted_run(tmp_path: Path, model: str) -> None:
    cfg = TrainConfig(model=model, dataset="digits", epochs=3, batch_size=64, seed=7)
    train_run(cfg, tmp_path / "straight", progress=False)
    short = TrainConfig(**{**cfg.to_dict(), "epochs": 2})
    first = train_run(short, tmp_path / "resumed", progress=False)
    result = train_run(TrainConfig(), resume=tmp_path / "resumed", more_epochs=1, progress=False)
    assert result.trainer.epoch == 3
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["train"]["epochs"] == 3
    # the training time counts both sessions, not only the last epoch
    assert result.metrics["train_seconds"] > first.metrics["train_seconds"]


def test_resume_of_a_finished_run_asks_for_epochs(digits_run: Path) -> None:
    with pytest.raises(CnnlabError, match="give --epochs"):
        train_run(TrainConfig(), resume=digits_run, progress=False)


def test_training_into_an_existing_run_is_refused(digits_run: Path) -> None:
    before = (digits_run / "weights.safetensors").read_bytes()
    with pytest.raises(CnnlabError, match="already holds a run"):
        train_run(TrainConfig(dataset="digits", epochs=1), digits_run, progress=False)
    assert (digits_run / "weights.safetensors").read_bytes() == before


def test_missing_and_damaged_run_folders(tmp_path: Path, digits_run: Path) -> None:
    with pytest.raises(CnnlabError, match="does not exist"):
        load_run(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CnnlabError, match="config.json: missing"):
        load_run(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in digits_run.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CnnlabError, match="weights.safetensors"):
        load_run(broken)
    (broken / "config.json").write_text("{")
    with pytest.raises(CnnlabError, match="config.json: contents do not match the checksum"):
        load_run(broken)
    (broken / "checksums.json").unlink()  # a folder from before checksums: parsed, refused
    with pytest.raises(CnnlabError, match="not valid JSON"):
        load_run(broken)


def test_recipe_fills_unset_options() -> None:
    from cnnlab.models import get_model_spec

    cfg = TrainConfig(model="seed002-cnn").resolved(get_model_spec("seed002-cnn").recipe)
    assert (cfg.batch_size, cfg.epochs, cfg.labels, cfg.validation_split) == (
        200,
        10,
        "onehot",
        0.2,
    )
    cfg = TrainConfig(model="seed003-deep-mnist").resolved(
        get_model_spec("seed003-deep-mnist").recipe
    )
    assert (cfg.steps, cfg.epochs, cfg.lr) == (20000, None, 1e-4)
    cfg = TrainConfig(model="seed003-deep-mnist", epochs=2, optimizer="sgd").resolved(
        get_model_spec("seed003-deep-mnist").recipe
    )
    assert (cfg.steps, cfg.epochs, cfg.lr) == (None, 2, None)


def test_fallback_dataset_when_the_first_cannot_be_had(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CNNLAB_DATA", raising=False)  # MNIST must be nowhere to be had
    result = train_run(
        TrainConfig(model="seed004-lenet", dataset="mnist", epochs=1),
        tmp_path / "r",
        data_dir=tmp_path,
        fallback_dataset="digits",
        progress=False,
    )
    assert result.dataset == "digits"
    assert "training on 'digits' instead" in capsys.readouterr().err


def test_synthetic_idx_data_dir(tiny_mnist: Path, tmp_path: Path) -> None:
    result = train_run(
        TrainConfig(model="seed001-lenet5", epochs=1, batch_size=32),
        tmp_path / "lenet5",
        data_dir=tiny_mnist,
        progress=False,
    )
    assert result.metrics["test_samples"] == 200
    config = json.loads((tmp_path / "lenet5" / "config.json").read_text())
    assert config["preprocess"] == {
        "input_size": [1, 32, 32],
        "fit": "pad",
        "mean": 0.0,
        "std": 1.0,
    }
    assert load_run(tmp_path / "lenet5").predict(
        torch.zeros(3, 28, 28, dtype=torch.uint8)
    ).shape == (3, 10)


def test_alexnet_trains_through_the_resizing_pipeline(tiny_mnist: Path, tmp_path: Path) -> None:
    """AlexNet wants 227×227×3: digits are resized and repeated to RGB on the fly."""
    result = train_run(
        TrainConfig(model="seed001-alexnet", steps=2, batch_size=4, validation_split=0.0),
        tmp_path / "alex",
        data_dir=tiny_mnist,
        progress=False,
    )
    assert result.metrics["steps"] == 2 and result.metrics["test_samples"] == 200
    run = load_run(tmp_path / "alex")
    assert run.preprocess.input_size == (3, 227, 227)
    assert run.predict(torch.zeros(2, 28, 28, dtype=torch.uint8)).shape == (2, 10)
