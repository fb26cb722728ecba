"""Feature maps, kernel grids and lesson pictures as a library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

from cnnlab.conv import load_image
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.viz.features import conv_layers, feature_map_figure, feature_maps, kernel_grid_figure
from cnnlab.viz.figures import figure_png
from cnnlab.viz.sheets import (
    agreement,
    filter_sheet,
    pooling_shift_lesson,
    shift_right,
    write_visualization,
)


def _stroke_digit() -> torch.Tensor:
    img = Image.new("L", (28, 28), 0)
    d = ImageDraw.Draw(img)
    d.line([(7, 6), (20, 6), (12, 23)], fill=255, width=2)
    d.line([(8, 14), (17, 14)], fill=255, width=2)
    return torch.from_numpy(np.asarray(img, np.float32) / 255.0)


def test_feature_maps_collect_every_conv_in_order() -> None:
    model = create_model("seed000-cnn").train()
    maps = feature_maps(model, torch.rand(2, 1, 28, 28))
    assert [m.name for m in maps] == ["0", "3"]
    assert [tuple(m.output.shape) for m in maps] == [(2, 16, 28, 28), (2, 32, 14, 14)]
    assert maps[0].title == "conv 1 (layer 0): 16@3×3 → 28×28×16"
    assert model.training  # mode left alone
    assert not maps[0].output.requires_grad
    assert [n for n, _ in conv_layers(model)] == ["0", "3"]
    pools = feature_maps(model, torch.rand(1, 1, 28, 28), layer_types=(nn.MaxPool2d,))
    assert [tuple(m.output.shape) for m in pools] == [(1, 16, 14, 14), (1, 32, 7, 7)]


def test_feature_map_output_equals_manual_forward() -> None:
    model = create_model("seed004-lenet-max").eval()
    x = torch.rand(1, 1, 28, 28)
    maps = feature_maps(model, x)
    torch.testing.assert_close(maps[0].output, model.conv1(x))


def test_kernel_grids_grey_rgb_and_deep() -> None:
    for weight in (torch.randn(6, 1, 5, 5), torch.randn(8, 3, 11, 11), torch.randn(4, 16, 3, 3)):
        png = figure_png(kernel_grid_figure(weight, title="k"))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure_png(feature_map_figure(torch.zeros(3, 7, 7)))) > 1000  # flat maps work


def test_shift_and_agreement() -> None:
    x = torch.arange(12.0).reshape(3, 4)
    s = shift_right(x)
    assert s[:, 0].tolist() == [0, 0, 0] and s[:, 1:].tolist() == x[:, :3].tolist()
    assert agreement(x, x) == 1.0
    assert agreement(torch.zeros(3, 3), torch.zeros(3, 3)) == 1.0


def test_pooling_absorbs_a_shift_on_a_digit() -> None:
    lesson = pooling_shift_lesson(_stroke_digit())
    assert lesson.pooled_agreement > lesson.unpooled_agreement
    assert "after 2×2 max pooling" in lesson.summary()
    with pytest.raises(CnnlabError, match="too small"):
        pooling_shift_lesson(torch.zeros(3, 3))


def test_filter_sheet_and_visualization_files(tmp_path: Path) -> None:
    rgb = torch.rand(3, 40, 60)
    assert len(figure_png(filter_sheet(rgb, ["sobel", "mean-5"]))) > 1000
    small = filter_sheet(rgb, ["sobel-x"], display_side=20)  # results shrunk for display
    assert [im.get_array().shape[:2] for ax in small.axes for im in ax.images] == [(13, 20)] * 2
    model = create_model("seed002-cnn")
    vis = write_visualization(model, torch.rand(1, 1, 28, 28), tmp_path / "v", max_channels=8)
    assert [p.name for p in vis.files] == [
        "kernels.png",
        "features-1-0.png",
        "features-2-3.png",
        "pooling-shift.png",
    ]
    with pytest.raises(CnnlabError, match="no convolution"):
        write_visualization(create_model("seed002-mlp"), torch.rand(1, 1, 28, 28), tmp_path)


def test_load_image_modes(tmp_path: Path) -> None:
    Image.new("RGBA", (30, 20), (255, 0, 0, 128)).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert tuple(img.pixels.shape) == (3, 20, 30) and not img.scaled
    assert float(img.pixels[0].min()) == 1.0  # red over white
    grey = load_image(tmp_path / "a.png", color="grey")
    assert tuple(grey.pixels.shape) == (1, 20, 30)
    small = load_image(tmp_path / "a.png", max_side=10)
    assert tuple(small.pixels.shape) == (3, 7, 10) and small.scaled
    assert small.describe() == "7×10×3 (scaled down from 20×30)"
    Image.new("L", (5, 5), 9).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").pixels.shape[0] == 1
    with pytest.raises(CnnlabError, match="colour mode"):
        load_image(tmp_path / "g.png", color="cmyk")
