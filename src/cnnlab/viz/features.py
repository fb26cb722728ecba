"""What a network's convolution layers learned and what they see in one image.

:func:`feature_maps` runs a model once and returns every convolution layer's output (the
web app uses it too); the figure helpers draw learned kernels and feature maps as
labelled grids (save them with :func:`cnnlab.viz.figures.save_figure`).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def kernel_grid_figure(
    weight: torch.Tensor, *, title: str = "", max_kernels: int = 64, panel_inches: float = 0.9
) -> Figure:
    """The kernels of one convolution layer (``Cout×Cin×kh×kw``) as a labelled grid.

    One-channel kernels share one diverging colour scale (red positive, blue negative), so
    strong and weak kernels can be compared; three-channel kernels are shown in colour,
    scaled together to [0, 1]; for other inputs the first input channel is shown. Each
    kernel cell is drawn as a block (nearest-neighbour upscaling).
    """
    w = weight.detach().float().cpu()[:max_kernels]
    panels: list[Panel] = []
    if w.shape[1] == 3:
        lo, hi = float(w.min()), float(w.max())
        rgb = ((w - lo) / max(hi - lo, 1e-12)).permute(0, 2, 3, 1).numpy()
        panels = [Panel(f"{i}", rgb[i]) for i in range(len(w))]
    else:
        scale = float(w.abs().max()) or 1.0
        for i in range(len(w)):
            panels.append(
                Panel(f"{i}", w[i, 0].numpy(), {"cmap": "RdBu_r", "vmin": -scale, "vmax": scale})
            )
        if w.shape[1] != 1:
            title = f"{title} (input channel 0 of {w.shape[1]})".strip()
    ncols = min(len(panels), 8)
    return panel_grid_figure(
        panels, ncols=ncols, title=title, panel_inches=panel_inches, title_size=8
    )


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
