"""``cnnlab train --tensorboard``: what the event files hold, read back as TensorBoard reads
them, a resumed run's continuous curves, and the error without the package."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnlab import create_model
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.runs import train_run
from cnnlab.train import LambdaCallback, Trainer
from tests.conftest import make_blobs

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData  # noqa: E402

from cnnlab.train.tensorboard import MISCLASSIFIED, TensorBoardLogger  # noqa: E402


def events(folder: Path) -> EventAccumulator:
    """Everything in ``folder``'s event files, nothing sampled away."""
    acc = EventAccumulator(
        str(folder),
        size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0},
    )
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> tuple[list[int], list[float]]:
    rows = acc.Scalars(tag)
    return [r.step for r in rows], [r.value for r in rows]


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_blobs(n, seed)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long()


def test_a_run_logs_curves_histograms_images_graph_and_hparams(tmp_path: Path, tiny_mnist) -> None:
    cfg = TrainConfig(
        model="seed000-cnn", epochs=2, batch_size=64, validation_split=0.2, tensorboard=True
    )
    result = train_run(cfg, tmp_path / "run", data_dir=tiny_mnist, progress=False)
    folder = tmp_path / "run" / "tensorboard"
    assert all(p.is_file() for p in folder.iterdir())  # the hparams too: no sub-folder
    acc = events(folder)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    metrics = result.metrics

    # per epoch: history.json's figures, at epochs 1 and 2
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        steps, values = scalars(acc, f"epoch/{key}")
        assert steps == [1, 2]
        assert values == pytest.approx([row[key] for row in history], rel=1e-6)

    # per step: every step once; the batch losses average to the epoch's loss
    steps, losses = scalars(acc, "step/loss")
    assert steps == list(range(1, metrics["steps"] + 1))
    per_epoch = metrics["steps"] // 2
    sizes = [64] * (per_epoch - 1) + [480 - 64 * (per_epoch - 1)]
    for epoch, row in enumerate(history):
        chunk = losses[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert np.average(chunk, weights=sizes) == pytest.approx(row["loss"], rel=1e-5)
    _, hits = scalars(acc, "step/accuracy")
    assert all(0 <= h <= 1 for h in hits) and np.average(
        hits[-per_epoch:], weights=sizes
    ) == pytest.approx(history[-1]["accuracy"], rel=1e-5)
    assert scalars(acc, "step/lr")[1] == pytest.approx([history[0]["lr"]] * metrics["steps"])

    # test figures, as metrics.json
    assert scalars(acc, "test/accuracy") == ([2], [pytest.approx(metrics["test_accuracy"])])
    assert scalars(acc, "test/loss")[1] == [pytest.approx(metrics["test_loss"], rel=1e-6)]

    # histograms of every parameter, the last ones of the saved weights
    weights = load_file(str(tmp_path / "run" / "weights.safetensors"))
    model = result.trainer.model
    for name, p in model.named_parameters():
        last = acc.Histograms(f"weights/{name}")[-1]
        assert last.step == 2
        assert last.histogram_value.num == p.numel()
        assert last.histogram_value.sum == pytest.approx(
            float(weights[name].double().sum()), abs=1e-4
        )
        grads = acc.Histograms(f"gradients/{name}")
        assert [g.step for g in grads] == [1, 2]
        assert grads[-1].histogram_value.sum_squares > 0

    # the first convolution's kernels, one tile each
    tags = acc.Tags()["images"]
    conv = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    assert f"kernels/{conv}" in tags
    assert [e.step for e in acc.Images(f"kernels/{conv}")] == [1, 2]

    # the graph: the traced network's convolution is in it
    graph = acc.Graph()
    assert any("conv" in node.op.lower() for node in graph.node)

    # hyper-parameters and the final figures as metrics, in the same folder
    content = acc.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["model"].string_value == "seed000-cnn"
    assert hp["batch_size"].number_value == 64
    assert hp["optimizer"].string_value == result.config.optimizer
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    names = {m.name.tag for m in experiment.metric_infos}
    assert {"test/accuracy", "test/loss", "epoch/val_accuracy", "epoch/loss"} <= names
    assert "tensorboard" not in hp


def test_misclassified_validation_images_and_an_untraceable_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An untrained model gets most validation images wrong: the grid shows the first
    ones with their classes; a model that cannot be traced costs one warning line."""
    from PIL import Image

    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = create_model("seed000-cnn")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.jit.is_tracing():
                raise RuntimeError("this network\ncannot be traced")
            return self.net(x)

    torch.manual_seed(0)
    trainer = Trainer(Untraceable(), lr=1e-9, progress=False)
    classes = [f"class-{k}" for k in range(10)]
    x, y = blobs(200, 0)
    logger = TensorBoardLogger(tmp_path / "tb", example=x[:2], classes=classes)
    trainer.fit((x, y), epochs=1, batch_size=50, validation_split=0.5, callbacks=[logger])
    logger.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "cnnlab: tensorboard: no model graph, tracing failed: this network cannot be traced"
    ]

    acc = events(tmp_path / "tb")
    images, labels = trainer.validation
    wrong = torch.nonzero(trainer.val_predicted != labels).flatten()
    assert len(wrong) > MISCLASSIFIED  # an untrained model
    # torch adds "/text_summary" to a text tag
    rows = acc.Tensors("misclassified/list/text_summary")
    text = rows[-1].tensor_proto.string_val[0].decode()
    assert text.startswith(f"{len(wrong)} of {len(labels)} validation images wrong")
    first = int(wrong[0])
    truth, guess = classes[int(labels[first])], classes[int(trainer.val_predicted[first])]
    assert f"| 1 | {first} | {truth} | {guess} |" in text

    event = acc.Images("misclassified/validation")[-1]
    grid = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
    assert grid.shape == (2 + 4 * (80 + 26 + 2), 2 + 8 * (80 + 2), 3)  # 32 tiles, 8 a row
    # the first tile is the first wrong image, 28 pixels brought to 80
    tile = grid[2:82, 2:82, 0].astype(float)
    picture = Image.fromarray(images[first, 0].numpy()).resize((80, 80), Image.Resampling.NEAREST)
    assert np.abs(tile - np.asarray(picture, dtype=float)).max() == 0


def test_a_resumed_run_continues_the_same_curves(tmp_path: Path, tiny_mnist) -> None:
    """Interrupted after epoch 1 (with events of later steps left behind, as a killed
    process leaves them) and resumed: the steps run 1..N once each, the epochs 1..3."""
    from torch.utils.tensorboard import SummaryWriter

    def interrupt(trainer, epoch, logs) -> None:  # noqa: ANN001
        if epoch == 1:
            trainer.stop_training = True

    cfg = TrainConfig(model="seed000-cnn", epochs=3, batch_size=64, tensorboard=True)
    run = tmp_path / "run"
    first = train_run(
        cfg, run, data_dir=tiny_mnist, progress=False, callbacks=[LambdaCallback(interrupt)]
    )
    done = first.metrics["steps"]
    # event files are named by the second they are opened in: one session a second
    time.sleep(1.1)
    with SummaryWriter(str(run / "tensorboard")) as stale:
        for step in range(done + 1, done + 4):
            stale.add_scalar("step/loss", 99.0, step)
    time.sleep(1.1)
    resumed = train_run(TrainConfig(), resume=run, data_dir=tiny_mnist, progress=False)
    total = resumed.metrics["steps"]
    assert total == 3 * done

    acc = events(run / "tensorboard")
    steps, losses = scalars(acc, "step/loss")
    assert steps == list(range(1, total + 1))
    assert 99.0 not in losses
    history = json.loads((run / "history.json").read_text())
    steps, values = scalars(acc, "epoch/loss")
    assert steps == [1, 2, 3]
    assert values == pytest.approx([row["loss"] for row in history], rel=1e-6)


def test_tensorboard_dir_holds_one_folder_per_run(tmp_path: Path) -> None:
    board = tmp_path / "board"
    for name in ("a", "b"):
        argv = ["train", "--model", "seed000-cnn", "--dataset", "digits", "--epochs", "1"]
        code = main(
            [*argv, "--tensorboard-dir", str(board), "--out", str(tmp_path / name), "--quiet"]
        )
        assert code == 0
        config = json.loads((tmp_path / name / "config.json").read_text())["train"]
        assert config["tensorboard_dir"] == str(board.resolve())
        assert not (tmp_path / name / "tensorboard").exists()
    assert sorted(p.name for p in board.iterdir()) == ["a", "b"]
    for name in ("a", "b"):
        acc = events(board / name)
        assert scalars(acc, "epoch/loss")[0] == [1]


def test_nothing_is_written_without_the_option(digits_run: Path) -> None:
    assert not (digits_run / "tensorboard").exists()
    assert not list(digits_run.rglob("events.out.tfevents*"))


def test_without_the_package_the_option_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--epochs", "1", "--tensorboard", "--out", str(run)]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'cnnlab[tensorboard]'" in err
    assert not run.exists()  # refused before anything was written


@pytest.mark.parametrize("kind", ["spread", "zeros", "one-sided"])
def test_histograms_have_summary_writers_own_buckets(tmp_path: Path, kind: str) -> None:
    """The histograms, counted without numpy's BLAS, are those SummaryWriter writes."""
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(0)
    values = {
        "spread": torch.randn(3000) * 0.05 + 0.01,
        "zeros": torch.zeros(40),
        "one-sided": torch.rand(500) + 2.0,
    }[kind]
    mine = TensorBoardLogger(tmp_path / "mine")
    mine.writer = SummaryWriter(str(tmp_path / "mine"))
    mine._histogram("h", values, 1)
    mine.close()
    with SummaryWriter(str(tmp_path / "theirs")) as theirs:
        theirs.add_histogram("h", values.double(), 1)
    a = events(tmp_path / "mine").Histograms("h")[0].histogram_value
    b = events(tmp_path / "theirs").Histograms("h")[0].histogram_value
    assert a.bucket == b.bucket and a.bucket_limit == b.bucket_limit
    assert (a.num, a.min, a.max) == (b.num, b.min, b.max)
    assert a.sum == pytest.approx(b.sum) and a.sum_squares == pytest.approx(b.sum_squares)
