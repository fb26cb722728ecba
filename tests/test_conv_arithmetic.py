"""Layer arithmetic: the output-size formula, per-layer tables of the registered models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from cnnlab.conv import conv2d, layer_table, output_size
from cnnlab.errors import CnnlabError
from cnnlab.models import count_parameters, create_model, get_model_spec, list_models


@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 9),
    stride=st.integers(1, 5),
    pad=st.integers(0, 4),
)
def test_output_size_counts_kernel_positions(size: int, kernel: int, stride: int, pad: int) -> None:
    padded = size + 2 * pad
    positions = len(range(0, padded - kernel + 1, stride))
    if kernel > padded:
        with pytest.raises(CnnlabError):
            output_size(size, kernel, stride, pad)
        return
    assert output_size(size, kernel, stride, pad) == positions
    assert output_size(size, kernel, stride, pad) == (size + 2 * pad - kernel) // stride + 1


def test_output_size_matches_conv2d_and_tutorial_examples() -> None:
    assert output_size(28, 3) == 26  # a 3×3 kernel loses a ring of one pixel
    assert output_size(28, 5) == 24  # a 5×5 loses two
    assert output_size(28, 5, padding=2) == 28  # pad (k-1)/2 keeps the size
    assert output_size(12, 3, stride=3) == 4  # stride = kernel shrinks by the stride
    assert output_size(227, 11, stride=4) == 55
    assert output_size(10, 4, padding=(1, 2)) == 10  # even kernel, asymmetric "same"
    assert output_size(7, 2, stride=2, ceil_mode=True) == 4
    x = torch.zeros(1, 1, 19, 23)
    out = conv2d(x, torch.zeros(2, 1, 4, 3), stride=(2, 3), padding=(1, 2))
    assert tuple(out.shape[-2:]) == (output_size(19, 4, 2, 1), output_size(23, 3, 3, 2))


@pytest.mark.parametrize(
    "args, words",
    [
        ((28, 3, 0), "stride 0"),
        ((28, 3, -2), "stride -2"),
        ((4, 7, 1, 1), "larger than the padded input 6"),
        ((4, 0), "kernel size 0"),
        ((4, 3, 1, -1), "negative"),
    ],
)
def test_output_size_errors_name_the_layer(args: tuple, words: str) -> None:
    with pytest.raises(CnnlabError) as info:
        output_size(*args, name="conv7")
    assert "conv7" in str(info.value) and words in str(info.value)


def test_lenet5_table_shapes_and_formulas() -> None:
    table = layer_table("seed001-lenet5")
    text = table.format()
    assert "28×28×6 → 14×14×6 → 10×10×16 → 5×5×16 → 120" in text
    for formula in [
        "(5·5·1+1)·6 = 156",
        "(5·5·6+1)·16 = 2,416",
        "(5·5·16+1)·120 = 48,120",
        "(120+1)·84 = 10,164",
        "(84+1)·10 = 850",
    ]:
        assert formula in text
    assert table.total_params == 61_706
    assert "= 61,706" in text
    convs = [r for r in table.rows if r.kind == "Conv2d"]
    assert [r.receptive_field for r in convs] == ["5×5", "14×14", "32×32"]
    assert [r.shape_text for r in convs] == ["28×28×6", "10×10×16", "1×1×120"]


def test_alexnet_first_conv_and_pool() -> None:
    table = layer_table("seed001-alexnet")
    shapes = [r.shape_text for r in table.rows]
    assert shapes[0] == "55×55×96"
    first_pool = next(r for r in table.rows if r.kind == "MaxPool2d")
    assert first_pool.shape_text == "27×27×96"
    assert (first_pool.kernel, first_pool.stride) == ("3×3", "2")
    assert table.rows[0].formula == "(11·11·3+1)·96 = 34,944"
    assert table.total_params == 58_322_314


def test_seed000_receptive_fields_and_padding() -> None:
    table = layer_table("seed000-cnn")
    rf = [r.receptive_field for r in table.rows if r.kind in ("Conv2d", "MaxPool2d")]
    assert rf == ["3×3", "4×4", "8×8", "10×10"]
    assert table.rows[0].padding == "1"
    assert table.rows[-1].receptive_field == "all"


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_tabulates(name: str) -> None:
    table = layer_table(name)
    model = create_model(name)
    assert table.total_params == count_parameters(model)
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, *get_model_spec(name).input_size))
    assert table.rows[-1].out_shape == tuple(out.shape[1:])


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_class_model_uses_attribute_names_and_batchnorm() -> None:
    table = layer_table(
        nn.Sequential(
            nn.Conv2d(3, 8, 4, padding="same", bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 2),
        ),
        (3, 9, 9),
    )
    rows = table.rows
    assert rows[0].formula == "4·4·3·8 = 384"
    assert rows[0].padding == "1,2,1,2"
    assert rows[0].shape_text == "9×9×8"
    assert rows[1].formula == "2·8 = 16"
    assert rows[3].receptive_field == "all"
    assert table.total_params == 384 + 16 + 18
    named = layer_table("seed004-lenet-max")
    assert [r.name for r in named.rows][:3] == ["conv1", "act1", "pool1"]


@pytest.mark.parametrize(
    "model, size, words",
    [
        (nn.Sequential(nn.Conv2d(1, 2, 5)), (1, 3, 3), "layer 0 (Conv2d): kernel 5"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, stride=0)), (1, 8, 8), "layer 0 (Conv2d): stride 0"),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, stride=0)),
            (1, 8, 8),
            "layer 1 (MaxPool2d): stride 0",
        ),
        (nn.Sequential(nn.Conv2d(3, 2, 3)), (1, 8, 8), "expects 3 input channels, gets 1"),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(10, 2)),
            (1, 4, 4),
            "layer 1 (Linear): expects 10 input features, gets 16",
        ),
    ],
)
def test_inconsistent_layers_are_named(model: nn.Module, size: tuple, words: str) -> None:
    with pytest.raises(CnnlabError) as info:
        layer_table(model, size)
    assert words in str(info.value)


def test_registered_model_with_too_small_input() -> None:
    with pytest.raises(CnnlabError, match=r"layer \d+ \(\w+\)"):
        layer_table("seed001-lenet5", (1, 12, 12))
    with pytest.raises(CnnlabError, match="unknown model"):
        layer_table("no-such-model")
    with pytest.raises(CnnlabError, match="input size"):
        layer_table(nn.Sequential(nn.ReLU()))
