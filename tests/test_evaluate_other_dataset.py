"""`cnnlab evaluate --dataset OTHER --split all`: a run measured on images it never saw,
from another dataset with the same classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import load_dataset


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> Path:
    """A seed000-cnn run trained for one epoch on the small synthetic MNIST."""
    out = tmp_path_factory.mktemp("other") / "mnist-run"
    argv = ["train", "--model", "seed000-cnn", "--data-dir", str(tiny_mnist), "--epochs", "1"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    return out


def test_all_is_the_train_then_the_test_split() -> None:
    train, test, every = (load_dataset("digits", s) for s in ("train", "test", "all"))
    assert len(every) == len(train) + len(test) == 1797 and every.split == "all"
    assert torch.equal(every.images, torch.cat([train.images, test.images]))
    assert torch.equal(every.labels, torch.cat([train.labels, test.labels]))


def test_an_mnist_run_on_every_scikit_learn_digit(capsys, mnist_run: Path) -> None:
    from cnnlab.runs import load_run

    code, out, err = run_cli(
        capsys, "evaluate", str(mnist_run), "--dataset", "digits", "--split", "all", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["dataset"] == "digits" and report["test_samples"] == 1797
    assert report["split"] == "all"
    # The figure is the run's own predictions on all 1,797 images, counted.
    data = load_dataset("digits", "all")
    predicted = load_run(mnist_run).predict(data.images).argmax(1)
    expected = int((predicted == data.labels).sum()) / len(data)
    assert report["runs"][0]["accuracy"] == pytest.approx(expected, abs=1e-9)
    # In words, the line says which images were counted.
    code, out, _ = run_cli(
        capsys, "evaluate", str(mnist_run), "--dataset", "digits", "--split", "all", "--no-reports"
    )
    assert code == 0 and f"digits all accuracy {100 * expected:.2f}%" in out
    assert "of 1,797 wrong" in out


def test_reports_on_another_dataset_name_its_split(capsys, mnist_run: Path, tmp_path: Path):
    out_dir = tmp_path / "reports"
    code, _, err = run_cli(
        capsys, "evaluate", str(mnist_run), "--dataset", "digits", "--split", "all",
        "--out", str(out_dir),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out_dir / "evaluation.json").read_text())
    assert report["split"] == "all" and report["dataset"] == "digits"
    assert report["test_samples"] == 1797
    wrong = report["misclassified"]
    data = load_dataset("digits", "all")
    # indices point into the "all" split: the training images, then the test images
    assert wrong and all(data.labels[m["index"]] == int(m["true"]) for m in wrong[:50])


def test_a_run_on_a_dataset_with_other_classes_is_one_line(
    capsys, mnist_run: Path, tiny_mnist: Path, tmp_path: Path, photo_run: Path
) -> None:
    # Fashion-MNIST has ten classes too, but they are not digits.
    shutil.copytree(tiny_mnist / "mnist", tmp_path / "fashion-mnist")
    code, _, err = run_cli(
        capsys, "evaluate", str(mnist_run), "--dataset", "fashion-mnist",
        "--data-dir", str(tmp_path), "--no-reports",
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "predicts classes 0, 1," in err and "fashion-mnist has T-shirt/top" in err
    # Three photo classes are not ten digits.
    code, _, err = run_cli(
        capsys, "evaluate", str(photo_run), "--dataset", "digits", "--no-reports"
    )
    assert code == 2 and "predicts 3 classes but digits has 10" in err
    assert len(err.strip().splitlines()) == 1


def test_split_all_of_a_folder_run_needs_a_dataset(capsys, photo_run: Path) -> None:
    code, _, err = run_cli(capsys, "evaluate", str(photo_run), "--split", "all", "--no-reports")
    assert code == 2 and "split 'all' needs --dataset" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "evaluate", str(photo_run), "--split", "every")
    assert code == 2 and "invalid choice: 'every'" in err
