"""``--init-from RUN``: fine-tuning from the weights of an earlier run."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from cnnlab.cli import main
from cnnlab.runs import load_run
from tests.conftest import write_photo_folder


def test_a_run_on_other_classes_starts_from_all_but_the_last_layer(
    photo_run: Path, tmp_path: Path, capsys
) -> None:
    folder = write_photo_folder(tmp_path / "pictures")
    shutil.rmtree(next(p for p in sorted(folder.iterdir()) if p.is_dir()))  # two classes left
    out = tmp_path / "tuned"
    code = main([
        "train", "--data", str(folder), "--model", "seed000-cnn", "--image-size", "16",
        "--init-from", str(photo_run), "--optimizer", "sgd", "--momentum", "0",
        "--lr", "1e-9", "--steps", "1", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert f"starting from {photo_run}: " in err and "(new: " in err
    source = load_run(photo_run, speed_up=False).model.state_dict()
    tuned = load_run(out, speed_up=False).model.state_dict()
    same = [k for k in tuned if source[k].shape == tuned[k].shape and "running" not in k]
    assert len(same) >= 2 and len(same) < len(tuned)
    for k in same:  # a step of 1e-9 leaves the copied weights where they were
        if tuned[k].is_floating_point():
            assert torch.allclose(tuned[k], source[k], atol=1e-6), k
    head = [k for k in tuned if source[k].shape != tuned[k].shape]
    assert head and all(tuned[k].shape[0] == 2 for k in head)  # the new two-class layer


def test_a_run_of_another_network_is_a_one_line_error(
    photo_run: Path, tmp_path: Path, capsys
) -> None:
    folder = write_photo_folder(tmp_path / "pictures")
    code = main([
        "train", "--data", str(folder), "--model", "cifar-net", "--image-size", "16",
        "--init-from", str(photo_run), "--steps", "1", "--out", str(tmp_path / "r"),
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--init-from" in err and "fit that run's" in err


def test_a_missing_run_is_named(tmp_path: Path, capsys) -> None:
    folder = write_photo_folder(tmp_path / "pictures")
    code = main([
        "train", "--data", str(folder), "--model", "seed000-cnn", "--image-size", "16",
        "--init-from", str(tmp_path / "nowhere"), "--steps", "1", "--out", str(tmp_path / "r"),
    ])  # fmt: skip
    assert code == 2
    assert "nowhere" in capsys.readouterr().err
