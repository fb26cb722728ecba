"""Training options beyond the tutorials: precision, memory format, EMA, TTA, best-epoch
selection, early stopping, named recipes — and that resuming keeps all of them exact."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import CnnlabError, create_model
from cnnlab.cli import main
from cnnlab.config import TrainConfig
from cnnlab.data.augment import AUGMENT_PRESETS, Augment
from cnnlab.hardware import cpu_has_native_bf16, pick_precision
from cnnlab.predict import shifted_views
from cnnlab.recipes import get_recipe, list_recipes, resolve_config
from cnnlab.runs import load_run, train_run
from cnnlab.speed import tune_cpu_allocator
from cnnlab.train import Trainer
from tests.conftest import make_blobs


def blobs(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_blobs(n, seed)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long()


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert pick_precision("fp32", cpu) == "fp32"
    assert pick_precision("bf16", cpu) == "bf16"
    with pytest.raises(CnnlabError, match="unknown precision 'fp8'"):
        pick_precision("fp8", cpu)


def test_bf16_training_learns_and_keeps_fp32_weights() -> None:
    torch.manual_seed(0)
    t = Trainer(create_model("seed000-cnn"), precision="bf16", progress=False)
    t.fit(blobs(), epochs=2, batch_size=32)
    assert t.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert t.evaluate(blobs(200, 1))["accuracy"] > 0.9
    # The steps really compute in bf16: one step from the same start lands elsewhere than
    # an fp32 step, which itself repeats exactly.
    weights = []
    for precision in ("fp32", "fp32", "bf16"):
        torch.manual_seed(0)
        one = Trainer(create_model("seed000-cnn"), precision=precision, progress=False)
        one.fit(blobs(64), steps=1, batch_size=64)
        weights.append(one.model.state_dict())
    fp32, again, bf16 = weights
    assert all(torch.equal(fp32[k], again[k]) for k in fp32)
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32)


def test_channels_last_gives_the_same_model() -> None:
    results = []
    for cl in (False, True):
        torch.manual_seed(0)
        t = Trainer(create_model("seed000-cnn"), channels_last=cl, precision="fp32", progress=False)
        assert t.model[3].weight.is_contiguous(memory_format=torch.channels_last) is cl
        t.fit(blobs(), epochs=1, batch_size=50)
        results.append(t.predict(blobs(50, 1)[0]))
    assert torch.allclose(results[0], results[1], atol=1e-4)


def test_channels_last_is_automatic_for_convolutions_only() -> None:
    assert Trainer(create_model("seed000-cnn"), progress=False).channels_last
    assert not Trainer(create_model("seed002-mlp"), progress=False).channels_last


def test_ema_follows_the_documented_average_and_serves_predictions() -> None:
    """The EMA weights are exactly the warmed-up average of the weights after every step
    (decay ``min(ema, (1 + step) / (10 + step))``, from the initial weights), buffers are
    the live model's, and evaluation and prediction use the average, not the live weights."""
    from cnnlab.predict import Predictor

    snapshots: list[list[torch.Tensor]] = []

    class Recording(Trainer):
        def train_step(self, x, y):  # noqa: ANN001, ANN202
            out = super().train_step(x, y)
            snapshots.append([p.detach().clone() for p in self.model.parameters()])
            return out

    torch.manual_seed(0)
    # speedrun-cnn has batch-norm buffers; with ema=0.5 the warm-up decides steps 1–7 and
    # the 0.5 cap steps 8–13. A brisk rate moves the weights enough that a wrong rule shows.
    t = Recording(create_model("speedrun-cnn"), lr=0.01, ema=0.5, progress=False)
    expected = [p.detach().double().clone() for p in t.model.parameters()]
    t.fit(blobs(), epochs=1, batch_size=32)
    assert len(snapshots) == t.step == 13
    for step, params in enumerate(snapshots, 1):
        decay = min(0.5, (1 + step) / (10 + step))
        expected = [
            e * decay + p.double() * (1 - decay) for e, p in zip(expected, params, strict=True)
        ]
    ema = list(t.ema_model.parameters())
    for e, a in zip(expected, ema, strict=True):
        torch.testing.assert_close(a.double(), e, rtol=0, atol=2e-6)  # float32 rounding: ~1e-7
    assert any(not torch.allclose(a, p, atol=1e-4) for a, p in zip(ema, snapshots[-1], strict=True))
    buffers, live_buffers = dict(t.ema_model.named_buffers()), dict(t.model.named_buffers())
    assert buffers and all(torch.equal(b, live_buffers[k]) for k, b in buffers.items())
    # Evaluation and prediction use the averaged weights.
    assert t.eval_model is t.ema_model
    x, y = blobs(100, 1)
    averaged = Predictor(t.ema_model, t.preprocess).probabilities(x)
    live = Predictor(t.model, t.preprocess).probabilities(x)
    assert not torch.allclose(averaged, live, atol=1e-4)
    assert torch.equal(t.predict(x), averaged)
    loss = torch.nn.functional.nll_loss(averaged.clamp_min(1e-12).log(), y).item()
    accuracy = (averaged.argmax(1) == y).float().mean().item()
    assert t.evaluate((x, y)) == pytest.approx({"loss": loss, "accuracy": accuracy})
    with pytest.raises(CnnlabError, match=r"ema must be in \[0, 1\), not 1.0"):
        Trainer(create_model("seed004-lenet"), ema=1.0)


def test_shifted_views() -> None:
    x = torch.zeros(1, 1, 5, 5, dtype=torch.uint8)
    x[0, 0, 2, 2] = 255
    views = list(shifted_views(x))
    assert len(views) == 5
    spots = {tuple(int(i) for i in (v[0, 0] == 255).nonzero()[0]) for v in views}
    assert spots == {(2, 2), (1, 2), (3, 2), (2, 1), (2, 3)}
    assert len(list(shifted_views(x, flip=True))) == 6


def test_shifted_views_reflect_for_photo_runs() -> None:
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    zero = list(shifted_views(x))
    mirrored = list(shifted_views(x, reflect=True))
    assert all(v.dtype == torch.uint8 for v in mirrored)
    # moved down one row: the new top row is 0 filled, or row 1 reflected
    assert zero[1][0, 0, 0].tolist() == [0, 0, 0, 0]
    assert mirrored[1][0, 0, 0].tolist() == [4, 5, 6, 7]
    assert torch.equal(mirrored[1][0, 0, 1:], x[0, 0, :3])
    # moved right one column: the new left column is column 1 reflected
    assert mirrored[3][0, 0, :, 0].tolist() == [1, 5, 9, 13]


def test_runs_trained_on_reflected_crops_reflect_their_tta_shifts() -> None:
    t = Trainer(create_model("seed000-cnn"), progress=False, augment=Augment(crop=2, flip=0.5))
    assert t.predictor.reflect and t.predictor.flip
    assert not Trainer(create_model("seed000-cnn"), progress=False).predictor.reflect


def test_tta_averages_view_probabilities() -> None:
    torch.manual_seed(0)
    t = Trainer(create_model("seed000-cnn"), progress=False)
    t.fit(blobs(), epochs=1, batch_size=32)
    x = blobs(8, 2)[0]
    views = list(shifted_views(x))
    manual = torch.stack([t.predict(v, tta=False) for v in views]).mean(0)
    assert torch.allclose(t.predict(x, tta=True), manual, atol=1e-6)


def test_interrupted_run_resumes_exactly_with_augmentation_ema_and_dropout(
    tmp_path: Path, tiny_mnist
) -> None:
    """An interrupted one-cycle run, resumed, ends with the weights of an uninterrupted one."""
    from cnnlab.train import LambdaCallback

    cfg = TrainConfig(
        model="seed002-cnn",
        epochs=3,
        batch_size=64,
        augment=Augment.parse("digits,erase=0.3").to_dict(),
        ema=0.9,
        schedule="onecycle",
        seed=5,
    )
    train_run(cfg, tmp_path / "straight", data_dir=tiny_mnist, progress=False)

    def interrupt(trainer, epoch, logs) -> None:  # noqa: ANN001
        if epoch == 2:
            trainer.stop_training = True

    train_run(
        cfg, tmp_path / "split", data_dir=tiny_mnist, progress=False,
        callbacks=[LambdaCallback(interrupt)],
    )  # fmt: skip
    assert load_run(tmp_path / "split").metrics["epochs"] == 2
    resumed = train_run(
        TrainConfig(), resume=tmp_path / "split", data_dir=tiny_mnist, progress=False
    )
    assert resumed.metrics["epochs"] == 3
    a = load_file(str(tmp_path / "straight" / "weights.safetensors"))
    b = load_file(str(tmp_path / "split" / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_select_best_keeps_the_best_validation_epoch(tmp_path: Path, tiny_mnist) -> None:
    from cnnlab.train import LambdaCallback

    # Two good epochs, then the weights are wiped (after the run folder took epoch 2's):
    # the later epochs are at chance level, so the best epoch is not the last.
    def wipe(trainer, epoch, logs) -> None:  # noqa: ANN001
        if epoch == 2:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.zero_()

    cfg = TrainConfig(
        model="seed000-cnn", epochs=4, select="best", validation_split=0.25, seed=0,
    )  # fmt: skip
    result = train_run(
        cfg, tmp_path / "r", data_dir=tiny_mnist, progress=False,
        callbacks=[LambdaCallback(wipe)],
    )  # fmt: skip
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    best = max(history, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert best["epoch"] < history[-1]["epoch"]
    assert best["val_accuracy"] > history[-1]["val_accuracy"] + 0.2
    run = load_run(tmp_path / "r")
    assert result.metrics["weights"] == "best"
    # The saved weights reproduce the best epoch's validation figures.
    from cnnlab.data import load_dataset
    from cnnlab.train.trainer import split_indices

    train = load_dataset("mnist", "train", tiny_mnist)
    held = split_indices(len(train), 0.25, 0, train.labels)[1]  # 25% of each class
    probs = run.predict(train.images[held])
    acc = (probs.argmax(1) == train.labels[held]).float().mean().item()
    loss = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), train.labels[held]).item()
    assert acc == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert loss == pytest.approx(best["val_loss"], abs=1e-5)


def test_early_stopping_stops(tmp_path: Path, tiny_mnist) -> None:
    cfg = TrainConfig(
        model="seed004-lenet", epochs=30, early_stopping=1, validation_split=0.25,
        optimizer="sgd", lr=1e-6,
    )  # fmt: skip
    result = train_run(cfg, tmp_path / "r", data_dir=tiny_mnist, progress=False)
    # A rate of 1e-6 leaves the validation accuracy where epoch 1 put it: with a patience
    # of 1, epoch 2 without improvement is the last.
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert [int(r["epoch"]) for r in history] == [1, 2] and result.metrics["epochs"] == 2
    assert history[1]["val_accuracy"] <= history[0]["val_accuracy"]


def test_selection_never_uses_the_test_set() -> None:
    with pytest.raises(CnnlabError, match="never the test set"):
        TrainConfig(select="best", validation="test").resolved({})
    with pytest.raises(CnnlabError, match="need a validation split"):
        TrainConfig(early_stopping=2, validation_split=0.0).resolved({})


def test_tta_metrics_keep_the_plain_figures(tmp_path: Path, tiny_mnist) -> None:
    """metrics.json gives the test figures with TTA and, beside them, those without it."""
    from cnnlab.data import load_dataset

    cfg = TrainConfig(model="seed000-cnn", epochs=1, tta=True)
    result = train_run(cfg, tmp_path / "r", data_dir=tiny_mnist, progress=False)
    run = load_run(tmp_path / "r")
    assert run.metrics == json.loads(json.dumps(result.metrics))  # what was written
    m = run.metrics
    test = load_dataset("mnist", "test", tiny_mnist)
    figures = {}
    for tta in (False, True):
        probs = run.predict(test.images, tta=tta)
        figures[tta] = {
            "loss": torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), test.labels).item(),
            "accuracy": (probs.argmax(1) == test.labels).float().mean().item(),
            "probs": probs,
        }
    # TTA really changes the predictions, so the two sets of figures are distinct.
    assert not torch.allclose(figures[False]["probs"], figures[True]["probs"], atol=1e-3)
    assert figures[False]["loss"] != pytest.approx(figures[True]["loss"], abs=1e-4)
    assert m["tta"] is True
    assert m["test_loss"] == pytest.approx(figures[True]["loss"], abs=1e-5)
    assert m["test_accuracy"] == pytest.approx(figures[True]["accuracy"], abs=1e-6)
    assert m["test_loss_no_tta"] == pytest.approx(figures[False]["loss"], abs=1e-5)
    assert m["test_accuracy_no_tta"] == pytest.approx(figures[False]["accuracy"], abs=1e-6)


def test_named_recipes_fill_model_and_options() -> None:
    assert {"speedrun", "mnist-best", "fashion-best"} <= set(list_recipes())
    spec, cfg = resolve_config(TrainConfig(recipe="speedrun"))
    r = get_recipe("speedrun")
    assert spec.name == r.model and cfg.steps == r.options["steps"] and cfg.epochs is None
    assert cfg.schedule == "onecycle" and cfg.lr == r.options["lr"]
    # The user's options win; a different model keeps the recipe's training options.
    spec, cfg = resolve_config(TrainConfig(recipe="mnist-best", epochs=2, model="seed000-cnn"))
    assert spec.name == "seed000-cnn" and cfg.epochs == 2 and cfg.ema == 0.999
    assert cfg.model_args == {}
    _, cfg = resolve_config(TrainConfig(recipe="fashion-best"))
    assert cfg.dataset == "fashion-mnist" and cfg.model_args["width"] == 48
    with pytest.raises(CnnlabError, match="unknown recipe 'fastest'"):
        resolve_config(TrainConfig(recipe="fastest"))


def test_mnist_robust_is_mnist_best_with_the_robust_augmentation() -> None:
    spec, cfg = resolve_config(TrainConfig(recipe="mnist-robust"))
    _, best = resolve_config(TrainConfig(recipe="mnist-best"))
    assert spec.name == "vgg-bn" and cfg.model_args == {"width": 32} and cfg.epochs == 30
    assert cfg.augment == AUGMENT_PRESETS["digits-robust"]
    aug = Augment.from_dict(cfg.augment)
    assert aug.elastic and aug.thicken and aug.thin and aug.lowres and aug.blur
    assert aug.level and aug.gamma and aug.noise and not aug.flip  # a mirrored 2 is no 2
    # Everything else is mnist-best's: only the augmentation differs.
    assert replace(cfg, recipe=None, augment={}) == replace(best, recipe=None, augment={})
    # The user's options still win.
    _, cfg = resolve_config(TrainConfig(recipe="mnist-robust", epochs=3, augment={"blur": 1.0}))
    assert cfg.epochs == 3 and cfg.augment == {"blur": 1.0}


def test_recipes_leave_the_precision_to_the_hardware() -> None:
    # bf16 without native support is emulated and slower than fp32: recipes use 'auto'
    for name in list_recipes():
        _, cfg = resolve_config(TrainConfig(recipe=name))
        assert cfg.precision == "auto", name


def test_cli_training_options_reach_the_run_config(tmp_path: Path, tiny_mnist, capsys) -> None:
    code = main([
        "train", "--model", "seed000-cnn", "--data-dir", str(tiny_mnist), "--epochs", "1",
        "--augment", "digits,erase=0.2", "--ema", "0.99", "--tta", "--precision", "bf16",
        "--label-smoothing", "0.1", "--out", str(tmp_path / "r"), "--quiet",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "with TTA" in out and "bf16" in out
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert cfg["augment"] == {**Augment.parse("digits").to_dict(), "erase": 0.2}
    assert cfg["ema"] == 0.99 and cfg["tta"] is True and cfg["precision"] == "bf16"


def test_cli_recipes_lists_them(capsys) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "speedrun" in out and "mnist-best" in out and "model: vgg-bn width=32" in out


def test_cli_bad_augment_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "--augment", "twirl=1", "--dataset", "digits"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert "argument --augment: unknown augmentation 'twirl'" in err[-1]


def test_evaluate_follows_the_runs_tta_setting(tmp_path: Path, tiny_mnist) -> None:
    from cnnlab.evaluation import evaluate_on_test

    cfg = TrainConfig(model="seed000-cnn", epochs=1, tta=True)
    m = train_run(cfg, tmp_path / "r", data_dir=tiny_mnist, progress=False).metrics
    default = evaluate_on_test([tmp_path / "r"], data_dir=tiny_mnist)
    plain = evaluate_on_test([tmp_path / "r"], data_dir=tiny_mnist, tta=False)
    assert default.tta == [True] and plain.tta == [False]
    assert default.runs[0].accuracy == pytest.approx(m["test_accuracy"], abs=1e-6)
    assert plain.runs[0].accuracy == pytest.approx(m["test_accuracy_no_tta"], abs=1e-6)
    # The accuracies may coincide on 200 easy images; the losses tell the two apart.
    assert m["test_loss"] != pytest.approx(m["test_loss_no_tta"], abs=1e-4)
    assert default.runs[0].loss == pytest.approx(m["test_loss"], abs=1e-5)
    assert plain.runs[0].loss == pytest.approx(m["test_loss_no_tta"], abs=1e-5)


def test_cli_threads_option(tmp_path: Path, tiny_mnist, capsys) -> None:
    before = torch.get_num_threads()
    try:
        code = main([
            "train", "--model", "seed004-lenet", "--data-dir", str(tiny_mnist), "--epochs", "1",
            "--threads", "1", "--out", str(tmp_path / "r"), "--quiet",
        ])  # fmt: skip
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["train", "--threads", "0"])
    assert "--threads: must be at least 1" in capsys.readouterr().err


def test_allocator_tuning_is_idempotent_and_can_be_refused(monkeypatch) -> None:
    import sys

    import cnnlab.speed.allocator as hw

    first = tune_cpu_allocator()
    assert tune_cpu_allocator() == first
    assert first == sys.platform.startswith("linux")
    monkeypatch.setattr(hw, "_ALLOCATOR_TUNED", False)
    monkeypatch.setenv("CNNLAB_TUNE_MALLOC", "0")
    assert tune_cpu_allocator() is False
