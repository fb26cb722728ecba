"""Training-history curves and labelled image grids, as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cnnlab.viz.figures import save_figure
from cnnlab.viz.tiles import tile_images


def plot_history(history: Sequence[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Accuracy and loss per epoch, training against validation, side by side."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    epochs = [int(r["epoch"]) for r in history]
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.plot(epochs, [r[metric] for r in history], "o-", label="train")
        if history and f"val_{metric}" in history[0]:
            ax.plot(epochs, [r[f"val_{metric}"] for r in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if metric == "accuracy" else "upper right")
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=110, tight=True)


def plot_image_grid(
    images: np.ndarray,
    titles: Sequence[str],
    path: str | Path,
    colors: Sequence[str] | None = None,
    columns: int = 8,
    title: str = "",
) -> Path:
    """A grid of images with one title each: grey (``N×H×W`` or ``N×1×H×W``) or colour
    (``N×3×H×W``), uint8 or floats in [0, 1] (see :func:`cnnlab.viz.tiles.tile_images`)."""
    images = tile_images(images)
    n = len(images)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    # Columns widen for long titles (about 0.075 inch a character at 9 points).
    longest = max((len(t) for t in titles), default=0)
    fig = Figure(figsize=(max(1.6, 0.075 * longest) * columns, 1.85 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            # A grey image is stretched to its own range; a colour one is drawn as it is.
            shown = {"cmap": "gray"} if images[i].ndim == 2 else {}
            ax.imshow(images[i], interpolation="nearest", **shown)
            ax.set_title(titles[i], fontsize=9, color=(colors[i] if colors else "black"))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110, tight=True)
