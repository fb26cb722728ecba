"""What a network's convolution layers learned and what they see in one image.

:func:`feature_maps` runs a model once and returns every convolution layer's output (the
web app uses it too); the figure helpers draw learned kernels and feature maps as
labelled grids (save them with :func:`cnnlab.viz.figures.save_figure`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from cnnlab.models.trace import trace_layers
from cnnlab.viz.figures import Panel, panel_grid_figure


@dataclass
class FeatureMap:
    """The output of one layer for the input batch (``N×C×H×W``, detached, on the CPU)."""

    name: str
    index: int
    module: nn.Module
    output: torch.Tensor

    @property
    def title(self) -> str:
        """A label such as ``conv 1 (layer 0): 16@3×3 → 28×28×16``."""
        m = self.module
        _, c, h, w = self.output.shape
        what = type(m).__name__
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            what = f"{m.out_channels}@{kh}×{kw}"
        return f"conv {self.index} (layer {self.name}): {what} → {h}×{w}×{c}"


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The model's ``Conv2d`` modules with their names, in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def feature_maps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer_types: tuple[type[nn.Module], ...] = (nn.Conv2d,),
) -> list[FeatureMap]:
    """Run ``model`` on ``x`` (``N×C×H×W``) and collect each matching layer's output.

    Outputs are taken straight from the layers (for convolutions: before the activation),
    in the order the layers run (:func:`cnnlab.models.trace.trace_layers`). The model's
    train/eval mode is left as it was; no gradients are recorded.
    """
    calls = trace_layers(model, x, select=lambda m: isinstance(m, layer_types))
    images = [c for c in calls if isinstance(c.output, torch.Tensor) and c.output.ndim == 4]
    return [
        FeatureMap(c.name, i, c.module, c.output.detach().float().cpu())
        for i, c in enumerate(images, 1)
    ]


def rgb_kernels(weight: torch.Tensor) -> np.ndarray:
    """Three-channel kernels (``Cout×3×kh×kw``) as RGB pictures, ``Cout×kh×kw×3`` in [0, 1].

    Each kernel is scaled on its own, jointly over its three channels: its smallest weight
    becomes 0 and its largest 1. A kernel that weighs red up and blue down so shows as
    red, whatever the strength of the other kernels; a flat kernel is mid-grey.
    """
    w = weight.detach().float().cpu()
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected Cout×3×kh×kw kernels, got shape {tuple(w.shape)}")
    return scale_each(w).permute(0, 2, 3, 1).numpy()


def scale_each(w: torch.Tensor) -> torch.Tensor:
    """Each of ``w``'s first-dimension entries scaled on its own to [0, 1]: its smallest
    value becomes 0 and its largest 1; a flat one becomes 0.5 (mid-grey)."""
    dims = tuple(range(1, w.ndim))
    lo = w.amin(dim=dims, keepdim=True)
    span = w.amax(dim=dims, keepdim=True) - lo
    return torch.where(span > 0, (w - lo) / span.clamp_min(1e-12), torch.full_like(w, 0.5))


def kernel_grid_figure(
    weight: torch.Tensor,
    *,
    title: str = "",
    max_kernels: int = 64,
    panel_inches: float = 0.9,
    view: str = "auto",
) -> Figure:
    """The kernels of one convolution layer (``Cout×Cin×kh×kw``) as a labelled grid.

    ``view`` says how a kernel is drawn: ``"signed"`` on one diverging colour scale shared
    by all kernels (red positive, blue negative), so strong and weak kernels can be
    compared, each input channel side by side (the first three); ``"rgb"`` as a colour
    picture of a three-channel kernel (:func:`rgb_kernels`); ``"auto"`` is ``"rgb"`` for
    three input channels and otherwise ``"signed"`` on the first input channel. Each
    kernel cell is drawn as a block (nearest-neighbour upscaling).
    """
    if view not in ("auto", "signed", "rgb"):
        raise ValueError(f"view must be auto, signed or rgb, not {view!r}")
    w = weight.detach().float().cpu()[:max_kernels]
    panels: list[Panel] = []
    if view == "rgb" or (view == "auto" and w.shape[1] == 3):
        rgb = rgb_kernels(w)
        panels = [Panel(f"{i}", rgb[i]) for i in range(len(w))]
        ncols = min(len(panels), 8)
    else:
        channels = 1 if view == "auto" else min(w.shape[1], 3)
        scale = float(w[:, :channels].abs().max()) or 1.0
        signed = {"cmap": "RdBu_r", "vmin": -scale, "vmax": scale}
        for i in range(len(w)):
            panels.append(Panel(f"{i}", _side_by_side(w[i, :channels].numpy()), signed))
        if channels > 1:
            names = "R, G, B" if w.shape[1] == 3 else f"input channels 0-{channels - 1}"
            title = f"{title} ({names} side by side; red positive, blue negative)".strip()
        elif w.shape[1] != 1:
            title = f"{title} (input channel 0 of {w.shape[1]})".strip()
        # Wider panels (several channels each) get fewer columns.
        ncols = min(len(panels), 8 if channels == 1 else 4)
        panel_inches *= 1 if channels == 1 else 0.75 * channels
    return panel_grid_figure(
        panels, ncols=ncols, title=title, panel_inches=panel_inches, title_size=8
    )


def _side_by_side(channels: np.ndarray, block: int = 4) -> np.ndarray:
    """``C×kh×kw`` as one picture, the channels left to right; each weight drawn as a
    ``block×block`` square so that the blank (NaN) line between channels stays thin next
    to a weight and the channels of one kernel read as one group."""
    big = channels.repeat(block, axis=1).repeat(block, axis=2)
    if len(big) == 1:
        return channels[0]
    gap = np.full((big.shape[1], 1), np.nan, dtype=big.dtype)
    parts: list[np.ndarray] = []
    for i, part in enumerate(big):
        parts += [gap, part] if i else [part]
    return np.concatenate(parts, axis=1)


def feature_map_figure(
    output: torch.Tensor, *, title: str = "", max_channels: int = 64, panel_inches: float = 1.1
) -> Figure:
    """The channels of one feature map (``C×H×W``) as a labelled grid.

    Each channel is scaled to its own range (``viridis``: dark low, yellow high), and its
    minimum and maximum are printed under its number, so a channel that is flat stays
    recognisable as such.
    """
    out = output.detach().float().cpu()[:max_channels]
    panels = []
    for c in range(out.shape[0]):
        a = out[c].numpy()
        lo, hi = float(a.min()), float(a.max())
        panels.append(
            Panel(
                f"ch {c}",
                a,
                {"cmap": "viridis", "vmin": lo, "vmax": hi if hi > lo else lo + 1e-6},
                subtitle=f"{lo:.2g}..{hi:.2g}",
            )
        )
    ncols = min(len(panels), 8)
    return panel_grid_figure(
        panels, ncols=ncols, title=title, panel_inches=panel_inches, title_size=7
    )
