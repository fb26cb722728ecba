"""The compare command: several models or recipes on the same data, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab import CnnlabError
from cnnlab.cli import main
from cnnlab.compare import compare, format_table
from cnnlab.config import TrainConfig


def test_compare_trains_each_entry_and_measures_the_gap(tiny_mnist: Path, tmp_path: Path) -> None:
    rows = compare(
        ["seed002-cnn", "seed002-mlp"],
        tmp_path / "cmp",
        TrainConfig(epochs=1),
        data_dir=tiny_mnist,
        progress=False,
    )
    assert [r["entry"] for r in rows] == ["seed002-cnn", "seed002-mlp"]
    cnn, mlp = rows
    assert cnn["parameters"] == 242_062 and mlp["parameters"] == 795_010
    from cnnlab.data import load_dataset
    from cnnlab.runs import load_run
    from cnnlab.train.trainer import split_indices

    train = load_dataset("mnist", "train", tiny_mnist)
    for r in rows:
        assert Path(r["run"], "weights.safetensors").exists()
        # The accuracies are the trained model's on the run's own split, without dropout.
        run = load_run(r["run"])
        split, seed = run.config.validation_split, run.config.seed
        keep, held = split_indices(len(train), split, seed, train.labels)
        for key, idx in (("train_accuracy", keep), ("val_accuracy", held)):
            hits = run.predict(train.images[idx]).argmax(1) == train.labels[idx]
            assert r[key] == pytest.approx(hits.float().mean().item(), abs=1e-6), key
        assert r["gap"] == pytest.approx(r["train_accuracy"] - r["val_accuracy"])
        assert r["epochs"] == 1 and r["test_accuracy"] == run.metrics["test_accuracy"]
    text = format_table(rows)
    assert "seed002-cnn" in text and "seed002-mlp" in text and "242,062" in text


def test_same_entry_twice_gets_two_folders(tiny_mnist: Path, tmp_path: Path) -> None:
    rows = compare(
        ["seed004-lenet", "seed004-lenet"], tmp_path / "c", TrainConfig(epochs=1),
        data_dir=tiny_mnist, progress=False,
    )  # fmt: skip
    assert rows[0]["run"] != rows[1]["run"]


def test_unknown_entries_fail_before_any_training(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="'lenet-9' is neither a model nor a recipe"):
        compare(["seed002-cnn", "lenet-9"], tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


def test_cli_compare(tiny_mnist: Path, tmp_path: Path, capsys) -> None:
    code = main([
        "compare", "seed002-cnn", "seed002-mlp", "--data-dir", str(tiny_mnist),
        "--epochs", "1", "--out", str(tmp_path / "c"), "--quiet",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "seed002-mlp" in out and "gap" in out
    rows = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert {r["entry"] for r in rows} == {"seed002-cnn", "seed002-mlp"}
