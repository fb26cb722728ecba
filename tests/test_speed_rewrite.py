"""speed_up: the fast modules swapped into a model's forward from outside, the model untouched."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models import create_model
from cnnlab.speed import RULES, speed_up
from cnnlab.speed.modules import (
    FastDropout,
    OneChannelConv,
    OneChannelConvPool,
    PoolActivation,
    SmallLinear,
)
from cnnlab.train import Trainer

CL = torch.channels_last


def stand_ins(view: nn.Module) -> list[str]:
    """The speed layer's modules in a view, with their activations, in graph order."""
    out = []
    for m in view.children():
        if isinstance(m, (PoolActivation, OneChannelConvPool)):
            out.append(f"{type(m).__name__}({m.activation})")
        elif isinstance(m, (OneChannelConv, SmallLinear, FastDropout)):
            out.append(type(m).__name__)
    return out


def test_building_models_loads_no_speed_module() -> None:
    """Models are plain torch.nn: building every one imports nothing of the speed layer."""
    script = (
        "import sys, cnnlab\n"
        "for m in cnnlab.list_models(): cnnlab.create_model(m)\n"
        "print(sorted(k for k in sys.modules if k.startswith('cnnlab.speed')))\n"
        "import cnnlab.train\n"
        "print(sorted(k for k in sys.modules if k.startswith('cnnlab.speed'))[:1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    models, trainer = done.stdout.splitlines()
    assert models == "[]"
    assert trainer == "['cnnlab.speed']"  # the check itself sees the package when it is there


def test_pooling_pairs_activations_with_pooling() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),  # activation, then pooling
        nn.Conv2d(4, 4, 3), nn.MaxPool2d(2), nn.Sigmoid(),  # pooling, then activation
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.MaxPool2d(2)),  # nested; pooling alone
        nn.Flatten(),
    )  # fmt: skip
    view = speed_up(model, rules={"pooling"})
    assert stand_ins(view) == [
        "PoolActivation(relu)",
        "PoolActivation(sigmoid)",
        "PoolActivation(None)",
    ]
    assert {id(p) for p in view.parameters()} == {id(p) for p in model.parameters()}  # shared
    assert [type(m).__name__ for m in model][:3] == ["Conv2d", "ReLU", "MaxPool2d"]  # untouched
    x = torch.randn(3, 1, 30, 30).contiguous(memory_format=CL)
    assert torch.equal(view(x), model(x))


class FunctionalNet(nn.Module):
    """Activations written as functions and tensor methods; one value used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.pool3 = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 1 * 1, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.conv1(x)))
        y = torch.sigmoid(self.pool2(self.conv2(x)).tanh())
        z = self.pool3(y) + self.pool3(-y)  # y is used twice: the sigmoid stays apart
        return self.fc(torch.flatten(z, 1))


def test_class_models_are_traced_with_functional_activations() -> None:
    torch.manual_seed(0)
    model = FunctionalNet()
    view = speed_up(model, rules={"pooling"})
    assert stand_ins(view) == [
        "PoolActivation(relu)",
        "PoolActivation(tanh)",
        "PoolActivation(None)",
        "PoolActivation(None)",
    ]
    x = torch.randn(4, 2, 12, 12).contiguous(memory_format=CL)
    assert torch.equal(view(x), model(x))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else self.fc(-x)


class ModeDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x + 1 if self.training else x)


def test_a_forward_that_cannot_be_traced_runs_as_it_is() -> None:
    model = DataDependent()
    assert speed_up(model) is model
    model = ModeDependent().eval()
    assert speed_up(model) is model  # a traced graph would keep one mode's branch
    assert not model.training  # tracing in both modes left the mode as it was
    with pytest.raises(ValueError, match="unknown rule 'fusion'"):
        speed_up(model, rules={"fusion"})


@pytest.mark.parametrize("model_id", ["seed004-lenet", "resnet-mini"])
def test_models_without_max_pooling_are_left_alone_by_the_pooling_rule(model_id: str) -> None:
    model = create_model(model_id)
    assert speed_up(model, rules={"pooling"}) is model


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("seed004-lenet-max", ["OneChannelConvPool(sigmoid)", "PoolActivation(sigmoid)"]),
        ("seed000-cnn", ["OneChannelConvPool(relu)", "PoolActivation(relu)"]),
        ("seed002-cnn", ["OneChannelConvPool(relu)", "PoolActivation(relu)", "FastDropout"]),
        ("seed004-lenet", ["OneChannelConv", "SmallLinear"]),
        ("resnet-mini", ["OneChannelConv", "SmallLinear"]),
    ],
)
def test_speed_up_swaps_in_the_fast_modules(model_id: str, expected: list[str]) -> None:
    model = create_model(model_id)
    before = [type(m).__name__ for m in model.modules()]
    view = speed_up(model)
    assert stand_ins(view)[: len(expected)] == expected
    assert "SmallLinear" in stand_ins(view)
    assert {id(p) for p in view.parameters()} == {id(p) for p in model.parameters()}
    assert [type(m).__name__ for m in model.modules()] == before  # the model is untouched


@pytest.mark.parametrize(
    "model_id", ["seed004-lenet-max", "seed000-cnn", "seed002-cnn", "resnet-mini"]
)
def test_speed_up_computes_the_model(model_id: str) -> None:
    torch.manual_seed(0)
    model = create_model(model_id).eval().to(memory_format=CL)
    view = speed_up(model)
    x = torch.rand(16, 1, 28, 28).contiguous(memory_format=CL)
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x), rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_out, model_out = view(x).float(), model(x).float()
    assert (fast_out - model_out).abs().max().item() < 0.05 * model_out.abs().max().item()


def test_the_view_follows_the_models_train_and_eval_mode() -> None:
    torch.manual_seed(0)
    model = create_model("seed002-mlp")
    view = speed_up(model)
    x = torch.rand(64, 1, 28, 28)
    model.eval()
    assert torch.equal(view(x), view(x))  # no dropout
    model.train()
    assert not torch.equal(view(x), view(x))  # dropout, new masks each call


@pytest.mark.parametrize("model_id", ["seed000-cnn", "seed002-cnn", "speedrun-cnn"])
def test_pooling_rule_trains_bit_identically(model_id: str) -> None:
    """With ReLU, the same seed gives the same weights with and without the pooling rule
    (the other rules are left out: they round differently or draw other masks)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (96,), generator=gen)
    weights = []
    for pooling in (True, False):
        torch.manual_seed(0)
        trainer = Trainer(create_model(model_id), speed_up=False, progress=False, device="cpu")
        if pooling:
            trainer.forward = speed_up(trainer.model, rules={"pooling"})
            assert trainer.forward is not trainer.model
        trainer.fit((images, labels), epochs=2, batch_size=32)
        weights.append(trainer.model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_sigmoid_pooling_same_outputs_and_gradient_mass() -> None:
    """Sigmoid after pooling: the same outputs; in bf16, sigmoid outputs of different
    inputs can round to the same value, and the gradient then goes to the larger input
    rather than the first of the tied outputs, so only where gradients land may differ."""
    torch.manual_seed(0)
    model = create_model("seed004-lenet-max").to(memory_format=CL)
    view = speed_up(model, rules={"pooling"})
    x = torch.rand(16, 1, 28, 28).contiguous(memory_format=CL)
    results = []
    for net in (view, model):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
        y.float().square().sum().backward()
        results.append((y.detach(), model.conv1.bias.grad.clone(), model.fc1.weight.grad.clone()))
    (y0, b0, w0), (y1, b1, w1) = results
    assert torch.equal(y0, y1)
    assert torch.equal(w0, w1)  # layers after the pooling see identical values
    torch.testing.assert_close(b0, b1, rtol=0.05, atol=1e-3)


def test_speed_up_trains_like_the_plain_model() -> None:
    """The same seed, with and without the speed layer: the same task learnt equally well."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = (
        images[:, 0, :14].float().mean((1, 2)) > images[:, 0, 14:].float().mean((1, 2))
    ).long()
    results = []
    for fast in (True, False):
        torch.manual_seed(0)
        trainer = Trainer(create_model("seed004-lenet-max"), speed_up=fast, progress=False)
        assert (trainer.forward is trainer.model) is not fast
        history = trainer.fit((images, labels), epochs=4, batch_size=32)
        results.append(history.history["loss"])
    fast_loss, plain_loss = results
    assert fast_loss[-1] < fast_loss[0] and plain_loss[-1] < plain_loss[0]
    assert fast_loss == pytest.approx(plain_loss, rel=0.05)


def test_rules_are_named() -> None:
    assert set(RULES) == {"pooling", "conv1", "batchnorm", "linear", "dropout"}
    model = create_model("seed002-cnn")
    assert stand_ins(speed_up(model, rules={"dropout"})) == ["FastDropout", "FastDropout"]
    assert stand_ins(speed_up(model, rules={"linear"})) == ["SmallLinear", "SmallLinear"]
    assert stand_ins(speed_up(model, rules={"conv1"})) == ["OneChannelConv"]
