"""Lesson pictures: one image under every classical kernel, the pooling-shift lesson,
and the learned kernels and feature maps of a trained network."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from cnnlab.conv.filters import Kernel, apply_kernel, get_kernel, kernel_names, to_display
from cnnlab.conv.ops import conv2d, pool2d, to_tensor
from cnnlab.errors import CnnlabError
from cnnlab.viz.features import conv_layers, feature_map_figure, feature_maps, kernel_grid_figure
from cnnlab.viz.figures import Panel, panel_grid_figure, save_figure

SHEET_KERNELS = (
    "mean",
    "gaussian",
    "sharpen",
    "prewitt-vertical",
    "prewitt-horizontal",
    "prewitt-45",
    "prewitt-135",
    "sobel-x",
    "sobel-y",
    "sobel",
    "laplacian-4",
    "laplacian-8",
    "log",
    "emboss",
    "identity",
)
"""The kernels of :func:`filter_sheet`, in the order shown (every named kernel)."""


def filter_sheet(
    image: Any,
    kernels: Sequence[Kernel | str] | None = None,
    *,
    title: str = "",
    panel_inches: float = 3.0,
    mode: str = "reflect",
    display_side: int = 1200,
) -> Figure:
    """One labelled sheet: ``image`` (``C×H×W`` in [0, 1]) first, then under each kernel.

    Each result keeps the image's size ("same" padding, mirrored borders) and is shown as
    the kernel's ``display`` says (see :mod:`cnnlab.conv.filters`). Kernels run at the
    image's full resolution; each displayed result is then reduced to at most
    ``display_side`` pixels, so a sheet of a huge photo holds one full-size result at a time.
    """
    x, _ = to_tensor(image, name="image")
    x = x[0]
    chosen = [get_kernel(k) if isinstance(k, str) else k for k in (kernels or SHEET_KERNELS)]
    original = Kernel("original", np.ones((1, 1), np.float32), "the input")
    # Blocky pixels for small images (digits); smooth downscaling for photos.
    interp = {"interpolation": "nearest" if max(x.shape[1:]) <= 200 else "antialiased"}
    arr, kw = to_display(x, original)
    panels = [Panel("original", arr, {**kw, **interp}, f"{x.shape[1]}×{x.shape[2]}×{x.shape[0]}")]
    panels[0].image = _shrink(panels[0].image, display_side)
    for k in chosen:
        arr, kw = to_display(apply_kernel(x, k, mode=mode), k)
        subtitle = f"{k.size[0]}×{k.size[1]}, {k.display}"
        panels.append(Panel(k.name, _shrink(arr, display_side), {**kw, **interp}, subtitle))
    ncols = 4 if len(panels) > 9 else 3
    return panel_grid_figure(
        panels, ncols=ncols, title=title, panel_inches=panel_inches, title_size=11
    )


def _shrink(arr: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average an ``H×W`` or ``H×W×3`` array down to ``max_side`` pixels at most."""
    h, w = arr.shape[:2]
    if max(h, w) <= max_side:
        return arr
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    small = torch.nn.functional.interpolate(t, size=size, mode="area")[0]
    return small[0].numpy() if arr.ndim == 2 else small.permute(1, 2, 0).numpy()


@dataclass
class ShiftLesson:
    """The pooling-shift lesson's figure and the agreement it measured."""

    figure: Figure
    unpooled_agreement: float
    pooled_agreement: float

    def summary(self) -> str:
        """One line with both fractions."""
        return (
            f"cells that agree after a one-pixel shift: {self.unpooled_agreement:.0%} of the "
            f"edge responses, {self.pooled_agreement:.0%} after 2×2 max pooling"
        )


def agreement(a: torch.Tensor, b: torch.Tensor, *, tol: float = 0.1) -> float:
    """Fraction of active cells where ``a`` and ``b`` are near-equal.

    A cell is active when either map exceeds 5% of their largest magnitude there, and two
    values are near-equal when they differ by at most ``tol`` times that magnitude.
    Inactive (background) cells are left out so they do not inflate the score.
    """
    scale = float(torch.maximum(a.abs().max(), b.abs().max()))
    if scale == 0:
        return 1.0
    active = torch.maximum(a.abs(), b.abs()) > 0.05 * scale
    if not bool(active.any()):
        return 1.0
    close = (a - b).abs() <= tol * scale
    return float((close & active).sum()) / float(active.sum())


def shift_right(image: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """``image`` (``…×H×W``) moved right by ``pixels``, the new left columns zero."""
    out = torch.zeros_like(image)
    out[..., pixels:] = image[..., : image.shape[-1] - pixels]
    return out


def pooling_shift_lesson(image: Any, *, pool: int = 2, title: str = "") -> ShiftLesson:
    """Seed 004's lesson: an edge kernel ``[1, -1]`` then max pooling absorbs a small shift.

    ``image`` is grey (``H×W`` or ``1×H×W``; other channels are averaged). It is shifted
    one pixel right; both versions are convolved with ``[[1, -1]]`` (valid padding) and
    max-pooled over ``pool×pool`` windows. The figure shows the six maps; the lesson
    compares how many cells agree before and after pooling (see :func:`agreement`).
    """
    x, _ = to_tensor(image, name="image")
    grey = x[0].mean(dim=0)
    if min(grey.shape) < 2 * pool + 1:
        raise CnnlabError(f"pooling lesson: image {tuple(grey.shape)} is too small")
    shifted = shift_right(grey, 1)
    edge = torch.tensor([[1.0, -1.0]])
    e1 = conv2d(grey, edge, name="[1,-1] kernel")
    e2 = conv2d(shifted, edge, name="[1,-1] kernel")
    p1 = pool2d(e1, pool, method="max")
    p2 = pool2d(e2, pool, method="max")
    before, after = agreement(e1, e2), agreement(p1, p2)
    s = float(max(e1.abs().max(), e2.abs().max())) or 1.0
    signed = {"cmap": "RdBu_r", "vmin": -s, "vmax": s}
    grey_kw = {"cmap": "gray", "vmin": 0.0, "vmax": float(grey.max()) or 1.0}
    h, w = grey.shape
    panels = [
        Panel("input", grey.numpy(), grey_kw, subtitle=f"{h}×{w}"),
        Panel("edges [1, -1]", e1.numpy(), signed, subtitle=f"{e1.shape[0]}×{e1.shape[1]}"),
        Panel(
            f"{pool}×{pool} max pool", p1.numpy(), signed, subtitle=f"{p1.shape[0]}×{p1.shape[1]}"
        ),
        Panel("shifted 1 px right", shifted.numpy(), grey_kw, subtitle=f"{h}×{w}"),
        Panel("edges [1, -1]", e2.numpy(), signed, subtitle=f"agree: {before:.0%}"),
        Panel(f"{pool}×{pool} max pool", p2.numpy(), signed, subtitle=f"agree: {after:.0%}"),
    ]
    fig = panel_grid_figure(
        panels,
        ncols=3,
        title=title or "Max pooling absorbs a one-pixel shift",
        panel_inches=2.2,
        title_size=10,
    )
    return ShiftLesson(fig, before, after)


@dataclass
class Visualization:
    """The files :func:`write_visualization` wrote and the pooling lesson's numbers."""

    files: list[Path]
    lesson: ShiftLesson


def write_visualization(
    model: nn.Module,
    x: torch.Tensor,
    out_dir: str | os.PathLike[str],
    *,
    lesson_image: torch.Tensor | None = None,
    max_channels: int = 64,
) -> Visualization:
    """Write the first layer's kernels, each convolution's feature maps and the lesson.

    ``x`` is one preprocessed input (``1×C×H×W``) ready for ``model``. Files written into
    ``out_dir``: ``kernels.png`` (signed weights on one scale; of a colour input, its
    red, green and blue weights side by side), ``kernels-rgb.png`` when the first
    convolution reads three channels (each kernel as a colour picture, see
    :func:`cnnlab.viz.features.rgb_kernels`), ``features-<n>-<layer>.png`` per
    convolution layer and ``pooling-shift.png`` (on ``lesson_image``, default the
    input's first channel).
    """
    convs = conv_layers(model)
    if not convs:
        raise CnnlabError("visualize: the model has no convolution layer")
    out = Path(out_dir)
    files: list[Path] = []
    name, first = convs[0]
    kh, kw = first.kernel_size
    what = f"the first convolution ({name}): {first.out_channels}@{kh}×{kw}"
    colour = first.in_channels == 3
    fig = kernel_grid_figure(
        first.weight,
        title=f"learned kernels of {what}",
        view="signed" if colour else "auto",
    )
    files.append(_save(fig, out / "kernels.png"))
    if colour:
        fig = kernel_grid_figure(
            first.weight,
            title=f"learned kernels of {what} as colours\n(each scaled to its own range: "
            "the colour a kernel responds to most shows bright)",
            view="rgb",
        )
        files.append(_save(fig, out / "kernels-rgb.png"))
    was_training = model.training
    model.eval()
    try:
        maps = feature_maps(model, x)
    finally:
        model.train(was_training)
    for fm in maps:
        safe = "".join(ch if ch.isalnum() else "-" for ch in fm.name) or "conv"
        fig = feature_map_figure(fm.output[0], title=fm.title, max_channels=max_channels)
        files.append(_save(fig, out / f"features-{fm.index}-{safe}.png"))
    lesson = pooling_shift_lesson(lesson_image if lesson_image is not None else x[0, :1])
    files.append(_save(lesson.figure, out / "pooling-shift.png"))
    return Visualization(files, lesson)


def _save(fig: Figure, path: Path) -> Path:
    save_figure(fig, path)
    return path


__all__ = [
    "SHEET_KERNELS",
    "ShiftLesson",
    "Visualization",
    "agreement",
    "filter_sheet",
    "kernel_names",
    "pooling_shift_lesson",
    "shift_right",
    "write_visualization",
]
