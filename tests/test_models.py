"""The registry and the tutorials' networks: ids, parameter counts, shapes."""

from __future__ import annotations

import pytest
import torch

import cnnlab
from cnnlab import CnnlabError, count_parameters, create_model, get_model_spec, list_models

# The parameter counts of docs/tutorials.md, "The models at a glance" (AlexNet with 10
# classes; its 1000-class count, the tutorial's "62 million", is tested below).
TUTORIAL_PARAMS = {
    "seed000-cnn": 206_922,
    "seed001-lenet5": 61_706,
    "seed001-alexnet": 58_322_314,
    "seed002-cnn": 242_062,
    "seed003-deep-mnist": 3_274_634,
    "seed004-lenet": 61_706,
    "seed004-lenet-max": 61_610,
}


@pytest.mark.parametrize(("name", "params"), TUTORIAL_PARAMS.items())
def test_parameter_counts_match_the_tutorials(name: str, params: int) -> None:
    assert count_parameters(create_model(name)) == params


def test_alexnet_with_1000_classes_has_62_million_parameters() -> None:
    assert count_parameters(create_model("seed001-alexnet", num_classes=1000)) == 62_378_344


def test_every_tutorial_model_and_the_mlp_is_registered() -> None:
    assert set(TUTORIAL_PARAMS) | {"seed002-mlp"} <= set(list_models())


def test_list_models_filters_by_pattern() -> None:
    assert list_models("seed004*") == ["seed004-lenet", "seed004-lenet-max"]
    assert list_models("nothing*") == []


@pytest.mark.parametrize("name", sorted(set(list_models()) - {"seed001-alexnet"}))
def test_forward_gives_one_logit_per_class(name: str) -> None:
    spec = get_model_spec(name)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *spec.input_size))
    assert out.shape == (2, 10)


def test_alexnet_forward_at_227() -> None:
    model = create_model("seed001-alexnet").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 227, 227)).shape == (1, 10)


def test_models_are_plain_modules_and_declare_input() -> None:
    assert isinstance(create_model("seed000-cnn"), torch.nn.Module)
    assert get_model_spec("seed001-lenet5").input_size == (1, 32, 32)
    assert get_model_spec("seed001-lenet5").fit == "pad"
    assert get_model_spec("seed001-alexnet").input_size == (3, 227, 227)


def test_unknown_model_is_a_one_line_error() -> None:
    with pytest.raises(CnnlabError, match="unknown model 'lenet7'") as info:
        create_model("lenet7")
    assert "\n" not in str(info.value)


def test_unknown_model_argument_is_rejected() -> None:
    with pytest.raises(CnnlabError, match="takes no argument 'depth'"):
        create_model("seed000-cnn", depth=3)


def test_width_knob_changes_size() -> None:
    assert count_parameters(create_model("vgg-bn", width=16)) < count_parameters(
        create_model("vgg-bn", width=32)
    )


def test_seed_init_is_reproducible() -> None:
    torch.manual_seed(3)
    a = create_model("seed002-cnn").state_dict()
    torch.manual_seed(3)
    b = create_model("seed002-cnn").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_package_exports_the_registry() -> None:
    assert cnnlab.create_model is create_model


@pytest.mark.parametrize("name", list_models())
def test_every_factory_takes_in_channels_and_num_classes(name: str) -> None:
    spec = get_model_spec(name)
    args = spec.arguments()
    assert args["in_channels"] == spec.input_size[0] and args["num_classes"] == 10
    if name != "seed001-alexnet":  # 58 M parameters: its shapes are checked elsewhere
        model = create_model(name, num_classes=7, in_channels=3).eval()
        with torch.no_grad():
            assert model(torch.rand(2, 3, *spec.input_size[1:])).shape == (2, 7)


def test_each_model_has_one_name_its_factorys() -> None:
    for name in list_models():
        assert get_model_spec(name).factory.__name__.replace("_", "-") == name


def test_registering_a_model_checks_the_factory(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from cnnlab.config import TrainConfig
    from cnnlab.models import register_model, registry
    from cnnlab.runs import load_run, train_run

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model(source="test", recipe={"epochs": 1})
    def tiny_probe(num_classes: int = 10, in_channels: int = 1) -> torch.nn.Module:
        """A probe: one linear layer."""
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(in_channels * 28 * 28, num_classes)
        )

    spec = get_model_spec("tiny-probe")
    assert spec.description == "A probe: one linear layer." and spec.recipe == {"epochs": 1}
    result = train_run(
        TrainConfig(model="tiny-probe", dataset="digits"), tmp_path / "r", progress=False
    )
    assert result.metrics["epochs"] == 1  # the model's own recipe
    assert load_run(tmp_path / "r").predict(torch.zeros(2, 28, 28, dtype=torch.uint8)).shape == (
        2,
        10,
    )
    with pytest.raises(ValueError, match="registered twice"):
        register_model()(tiny_probe)

    def no_channels(num_classes: int = 10) -> torch.nn.Module:
        return torch.nn.Linear(4, num_classes)

    with pytest.raises(ValueError, match="must take in_channels and num_classes"):
        register_model()(no_channels)

    def wrong_default(num_classes: int = 10, in_channels: int = 3) -> torch.nn.Module:
        return torch.nn.Linear(4, num_classes)

    with pytest.raises(ValueError, match="in_channels must default to 1"):
        register_model()(wrong_default)


def test_models_register_as_the_package_loads() -> None:
    import subprocess
    import sys

    script = "import cnnlab.models.registry as r, cnnlab.models; print(len(r._REGISTRY))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(list_models()) >= 11


def test_cifar_net_takes_colour_photos_of_any_size() -> None:
    model = create_model("cifar-net").eval()
    assert get_model_spec("cifar-net").input_size == (3, 32, 32)
    # a 2×2×3×24 whitening stem with its bias, (3×3×24×64 + 3×3×64×64),
    # (3×3×64×256 + 3×3×256×256) and (2 × 3×3×256×256) convolutions, their norms' weights
    # and biases, a 256×10 head
    stem = 288 + 24
    convs = 13_824 + 36_864 + 147_456 + 589_824 + 2 * 589_824
    norms = 2 * (2 * 64 + 2 * 256 + 2 * 256)
    assert count_parameters(model) == stem + convs + norms + 2_560
    # the stem's filters and the norms' scales are not learned
    assert count_parameters(model, trainable_only=True) == 24 + convs + norms // 2 + 2_560
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert model(torch.rand(1, 3, 64, 48)).shape == (1, 10)  # global pooling
    small = create_model("cifar-net", widths=[16, 32, 32], in_channels=1, num_classes=4)
    assert small(torch.rand(2, 1, 32, 32)).shape == (2, 4)
