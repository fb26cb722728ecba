"""Figures as PNG: labelled picture grids, and writing a figure to a file atomically.

Figures are :class:`matplotlib.figure.Figure` objects built without pyplot, so they are
safe in servers and threads and need no closing.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cnnlab.atomic import write_bytes

__all__ = ["Panel", "figure_png", "panel_grid_figure", "save_figure"]


@dataclass
class Panel:
    """One picture in a grid: an ``H×W`` or ``H×W×3`` array, its title and ``imshow`` options."""

    title: str
    image: np.ndarray
    imshow: dict[str, Any] = field(default_factory=dict)
    subtitle: str = ""


def panel_grid_figure(
    panels: Sequence[Panel],
    *,
    ncols: int | None = None,
    title: str = "",
    panel_inches: float = 2.0,
    title_size: float = 9.0,
) -> Figure:
    """A grid of labelled pictures, row by row, axes hidden."""
    n = max(len(panels), 1)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    h, w = panels[0].image.shape[:2] if panels else (1, 1)
    aspect = h / max(w, 1)
    extra = 0.35 if any(p.subtitle for p in panels) else 0.2
    fig = Figure(
        figsize=(
            ncols * panel_inches,
            nrows * (panel_inches * aspect + extra) + (0.4 if title else 0),
        ),
        layout="constrained",
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(panels):
            continue
        p = panels[i]
        options = {"interpolation": "nearest", **p.imshow}
        ax.imshow(p.image, **options)
        label = p.title if not p.subtitle else f"{p.title}\n{p.subtitle}"
        ax.set_title(label, fontsize=title_size)
    if title:
        fig.suptitle(title, fontsize=title_size + 2)
    return fig


def figure_png(fig: Figure, *, dpi: int = 100, tight: bool = False) -> bytes:
    """The figure rendered as PNG bytes; ``tight`` crops the white margins."""
    buf = io.BytesIO()
    fig.savefig(
        buf, format="png", dpi=dpi, facecolor="white", bbox_inches="tight" if tight else None
    )
    return buf.getvalue()


def save_figure(
    fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100, tight: bool = False
) -> Path:
    """Write the figure to ``path`` as PNG, atomically; returns the path."""
    write_bytes(path, figure_png(fig, dpi=dpi, tight=tight))
    return Path(path)
