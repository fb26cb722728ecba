"""The parts of the cifar10-fast recipe: the whitened stem, the triangular schedule,
batch-norm shifts at their own rate and lookahead, alone and through a whole run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data.loader import Preprocess
from cnnlab.models import create_model, get_model_spec
from cnnlab.models.photos import whiten_first_layer
from cnnlab.runs import load_run, train_run
from cnnlab.train import LambdaCallback, Trainer
from cnnlab.train.optim import lr_factor
from tests.conftest import write_photo_folder


def test_whitened_stem_decorrelates_the_patches_of_its_images() -> None:
    torch.manual_seed(0)
    # correlated channels and smooth pixels: patches far from white
    base = torch.randn(64, 1, 17, 17).repeat(1, 3, 1, 1) + 0.3 * torch.randn(64, 3, 17, 17)
    images = nn.functional.avg_pool2d(base, 2, 1)
    model = create_model("cifar-net", widths=[8, 16, 16])
    whiten_first_layer(model, images, eps=0.0)
    stem = model[0]
    with torch.no_grad():
        out = nn.functional.conv2d(images, stem.weight)  # without the bias
    half = out[:, :12].permute(1, 0, 2, 3).reshape(12, -1)
    covariance = half @ half.T / half.shape[1]
    assert torch.allclose(covariance, torch.eye(12), atol=1e-3)
    assert torch.equal(out[:, 12:], -out[:, :12])  # the negated filters


def test_whitening_refuses_a_stem_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="cannot whiten"):
        whiten_first_layer(create_model("cifar-net"), torch.rand(4, 1, 8, 8))


def test_triangle_schedule_rises_to_its_peak_then_falls_to_0_07() -> None:
    f = lr_factor("triangle", 100)
    assert f(0) == pytest.approx(0.2)
    assert f(23) == pytest.approx(1.0)
    assert f(100) == pytest.approx(0.07)
    values = [f(s) for s in range(101)]
    assert values[:24] == sorted(values[:24]) and values[23:] == sorted(values[23:], reverse=True)


def test_norm_shifts_get_the_scaled_rate_and_the_same_decay_per_step() -> None:
    model = create_model("cifar-net", widths=[8, 16, 16])
    t = Trainer(model, optimizer="nesterov", lr=0.5, weight_decay=1e-3, bias_lr_scale=64.0,
                progress=False)  # fmt: skip
    main, shifts = t.optimizer.param_groups
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {id(p) for p in shifts["params"]} == {id(m.bias) for m in norms}
    assert shifts["lr"] == pytest.approx(32.0) and main["lr"] == pytest.approx(0.5)
    assert shifts["lr"] * shifts["weight_decay"] == pytest.approx(main["lr"] * main["weight_decay"])
    # frozen tensors (norm scales, the whitening filters) are in no group
    assert sum(p.numel() for g in t.optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    t._set_lr(0.5)
    assert shifts["lr"] == pytest.approx(16.0)


def _blobs(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 3
    x = torch.randint(0, 60, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    x[torch.arange(n), y] += 150  # the class is the bright channel
    return x, y


def test_lookahead_ends_on_its_slow_weights_and_learns() -> None:
    torch.manual_seed(0)
    model = create_model("cifar-net", widths=[8, 16, 16], num_classes=3)
    t = Trainer(model, optimizer="nesterov", lr=0.2, lookahead=True, progress=False,
                preprocess=Preprocess((3, 12, 12), "resize"))  # fmt: skip
    t.fit(_blobs(), epochs=4, batch_size=16)
    assert t.step == 24  # a multiple of 5 and the last step both pulled
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert state.keys() == t.lookahead.keys()
    assert all(torch.equal(state[k], t.lookahead[k]) for k in state)
    assert t.evaluate(_blobs(30))["accuracy"] > 0.9


def test_the_fast_cifar_recipe_in_a_run_whitens_freezes_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    """A cifar-net run with every part of the recipe: the stem is set from the data and
    kept, the norms' scales stay 1, and a run interrupted and resumed ends bit-exact."""
    folder = write_photo_folder(tmp_path / "pictures", per_class=16)
    recipe = get_model_spec("cifar-net").recipe
    cfg = TrainConfig(
        model="cifar-net",
        model_args={"widths": [8, 16, 16]},
        data=str(folder),
        image_size=16,
        epochs=3,
        batch_size=16,
        optimizer=recipe["optimizer"],
        lr=0.2,
        momentum=recipe["momentum"],
        weight_decay=recipe["weight_decay"],
        bias_lr_scale=recipe["bias_lr_scale"],
        schedule=recipe["schedule"],
        lookahead=True,
        augment=recipe["augment"],
        seed=3,
    )
    train_run(cfg, tmp_path / "straight", progress=False)

    def interrupt(trainer, epoch, logs) -> None:  # noqa: ANN001
        trainer.stop_training = epoch == 2

    train_run(cfg, tmp_path / "split", progress=False, callbacks=[LambdaCallback(interrupt)])
    assert load_run(tmp_path / "split").metrics["epochs"] == 2
    train_run(TrainConfig(), resume=tmp_path / "split", progress=False)
    a = load_file(str(tmp_path / "straight" / "weights.safetensors"))
    b = load_file(str(tmp_path / "split" / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    fresh = create_model("cifar-net", widths=[8, 16, 16], num_classes=3)
    assert not torch.equal(a["0.weight"], fresh[0].weight)  # set from the pictures
    norms = [k for k in a if k.endswith(".weight") and a[k].dim() == 1]
    assert norms and all(torch.equal(a[k], torch.ones_like(a[k])) for k in norms)
    run = load_run(tmp_path / "straight")
    assert run.metrics["test_accuracy"] > 0.9
