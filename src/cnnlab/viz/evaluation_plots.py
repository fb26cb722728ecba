"""Pictures of a model's errors: a confusion-matrix heat map and pages of image tiles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from cnnlab.viz.figures import save_figure
from cnnlab.viz.tiles import short_name, tile_images

T = TypeVar("T")


def paginate(items: Sequence[T], per_page: int = 200, max_pages: int | None = 20) -> list[list[T]]:
    """Split ``items`` into pages of at most ``per_page``, keeping at most ``max_pages``.

    Items beyond the last page kept are dropped; compare the pages' total length with
    ``len(items)`` to tell whether that happened. No items give no pages.
    """
    if per_page < 1:
        raise ValueError(f"per_page must be at least 1, got {per_page}")
    if max_pages is not None and max_pages < 1:
        raise ValueError(f"max_pages must be at least 1, got {max_pages}")
    pages = [list(items[i : i + per_page]) for i in range(0, len(items), per_page)]
    return pages if max_pages is None else pages[:max_pages]


def page_path(folder: str | Path, stem: str, page: int, suffix: str = ".png") -> Path:
    """``folder/stem.png`` for page 1, ``folder/stem-2.png`` for page 2, and so on."""
    if page < 1:
        raise ValueError(f"pages are numbered from 1, got {page}")
    return Path(folder) / (f"{stem}{suffix}" if page == 1 else f"{stem}-{page}{suffix}")


def plot_confusion_matrix(
    confusion: torch.Tensor | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """The confusion matrix as a heat map with every non-zero count written in its cell.

    Rows are the true class, columns the predicted one. Errors (off the diagonal) are
    coloured by their share of the true class on a log scale, so that a handful of
    mistakes still shows next to a thousand correct predictions; the diagonal is
    coloured by recall. Recall and support are written right of each row, precision
    above each column.
    """
    cm = np.asarray(torch.as_tensor(confusion).cpu(), dtype=np.int64)
    k = cm.shape[0]
    if cm.shape != (k, k) or len(classes) != k:
        raise ValueError(f"a {cm.shape} matrix does not fit {len(classes)} classes")
    support = cm.sum(1)
    predicted = cm.sum(0)
    share = cm / np.maximum(support, 1)[:, None]
    diag = np.eye(k, dtype=bool)
    errors = np.where(~diag & (cm > 0), share, np.nan)
    correct = np.where(diag, share, np.nan)

    # The figure grows with the class count so that cells stay about 0.62 inch wide and
    # up to ~20 classes a count still fits in 7-point type.
    side = max(4.0, 0.62 * k + 2.5)
    font = 9 if k <= 12 else 7 if k <= 20 else max(5, int(140 / k))
    small = max(font - 2, 6)
    fig = Figure(figsize=(side + 1.8, side))
    ax = fig.subplots()
    # The colour bar keeps clear of the recall and support written right of the rows.
    right_text = (len(f"100.0%  n={int(support.max(initial=0))}") * 0.6 * (small + 1)) / 72
    pad = (right_text + 0.25) / ((side + 1.8) * 0.775)
    off = errors[~np.isnan(errors)]
    hi = 1.0
    if off.size:
        lo = min(float(off.min()), 1e-3)
        hi = max(float(off.max()), lo * 10)
        err_img = ax.imshow(errors, cmap="Reds", norm=LogNorm(lo / 2, hi), interpolation="nearest")
        bar = fig.colorbar(err_img, ax=ax, fraction=0.046, pad=pad, shrink=0.8)
        bar.set_label("errors: share of the true class (log scale)")
    ax.imshow(correct, cmap="Blues", norm=Normalize(0.0, 1.4), interpolation="nearest")

    for i in range(k):
        for j in range(k):
            if cm[i, j] == 0:
                continue
            if i == j:
                color, weight = "white" if share[i, j] > 0.7 else "black", "bold"
            else:
                color = "white" if share[i, j] > 0.3 * hi else "black"
                weight = "normal"
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=font,
                color=color,
                fontweight=weight,
            )
    for i in range(k):
        recall = cm[i, i] / support[i] if support[i] else 0.0
        _note(ax, f"{recall:6.1%}  n={support[i]}", (k - 0.5, i), (6, 0), small + 1, va="center")
    for j in range(k):
        precision = cm[j, j] / predicted[j] if predicted[j] else 0.0
        _note(ax, f"{precision:.1%}", (j, -0.5), (0, 4), small, ha="center")
    _note(ax, "recall  support", (k - 0.5, -0.5), (6, 4), small + 1)
    _note(ax, "precision", (-0.5, -0.5), (-4, 4), small, ha="right")

    # Folder names can be long: both axes show them cut to 20 characters (start and end),
    # the column labels slanted once they are wider than a cell.
    names = [short_name(c, 20) for c in classes]
    long_names = max(len(c) for c in names) > 3
    label_font = 10 if k <= 12 else 8
    ax.set_xticks(
        range(k),
        names,
        rotation=45 if long_names else 0,
        ha="right" if long_names else "center",
        rotation_mode="anchor" if long_names else "default",
        fontsize=label_font,
    )
    ax.set_yticks(range(k), names, fontsize=label_font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(np.arange(-0.5, k), minor=True)
    ax.set_yticks(np.arange(-0.5, k), minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(k - 0.5, -0.5)
    total = int(cm.sum())
    accuracy = np.trace(cm) / total if total else 0.0
    heading = f"{title}\n" if title else ""
    ax.set_title(
        f"{heading}confusion matrix: {total:,} test images, {total - np.trace(cm):,} wrong, "
        f"accuracy {accuracy:.2%}",
        fontsize=10,
        pad=22,
    )
    return save_figure(fig, path, dpi=110, tight=True)


def _note(
    ax, text: str, xy: tuple[float, float], offset: tuple[float, float], size: float, **align: str
) -> None:
    """``text`` beside the data point ``xy``, ``offset`` points away: the distance from
    the matrix stays the same whatever the cell size."""
    align = {"va": "bottom", "ha": "left", **align}
    ax.annotate(text, xy, xytext=offset, textcoords="offset points", fontsize=size, **align)


def plot_tiles(
    images: torch.Tensor | np.ndarray,
    titles: Sequence[str],
    path: str | Path,
    *,
    notes: Sequence[str] | None = None,
    columns: int | None = None,
    title: str = "",
    tile_pixels: int = 84,
    max_width: int = 2000,
    dpi: int = 100,
) -> Path:
    """Images in a compact grid, each under a one-line title and an optional note.

    ``images`` is ``N×H×W``, ``N×1×H×W`` (grey) or ``N×3×H×W`` (colour), uint8 or floats
    in [0, 1] (see :func:`cnnlab.viz.tiles.tile_images`). Each image is enlarged by a
    whole factor to about ``tile_pixels`` on its longer side and drawn pixel for pixel
    (nearest neighbour); ``columns`` defaults to as many as fit in ``max_width`` pixels.
    Titles are written in 9-point type, notes in smaller grey.
    """
    imgs = tile_images(images)
    n, h, w = imgs.shape[:3]
    colour = imgs.ndim == 4
    if len(titles) != n or (notes is not None and len(notes) != n):
        raise ValueError(f"{n} images need {n} titles (and notes)")
    scale = max(1, round(tile_pixels / max(h, w)))
    tile_h, tile_w = h * scale, w * scale
    title_px, note_px = 9 * dpi / 72, 7 * dpi / 72
    longest = max((len(t) for t in titles), default=0)
    gap = 10
    cell_w = int(max(tile_w, 0.6 * title_px * longest)) + gap
    band = int(title_px * 1.35 + (note_px * 1.3 if notes is not None else 0)) + 2
    cell_h = tile_h + band + gap
    if columns is None:
        columns = max(1, (max_width - gap) // cell_w)
    columns = max(1, min(columns, n)) if n else 1
    rows = max(1, -(-n // columns))
    header = 34 if title else 4
    width, height = columns * cell_w + gap, header + rows * cell_h
    canvas = np.full((height, width, 3) if colour else (height, width), 255, dtype=np.uint8)
    corners = []
    for i in range(n):
        r, c = divmod(i, columns)
        x = gap + c * cell_w + (cell_w - gap - tile_w) // 2
        y = header + r * cell_h + band
        canvas[y : y + tile_h, x : x + tile_w] = imgs[i].repeat(scale, 0).repeat(scale, 1)
        corners.append((x, y))

    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    # An RGB canvas is drawn as it is; cmap and limits only apply to a grey one.
    shown = {} if colour else {"cmap": "gray", "vmin": 0, "vmax": 255}
    ax.imshow(canvas, interpolation="nearest", aspect="equal", **shown)
    ax.set_axis_off()
    for i, (x, y) in enumerate(corners):
        cx = x + tile_w / 2
        top = y - band
        ax.text(cx, top + 1, titles[i], ha="center", va="top", fontsize=9)
        if notes is not None:
            ax.text(
                cx,
                top + 1 + title_px * 1.3,
                notes[i],
                ha="center",
                va="top",
                fontsize=7,
                color="0.4",
            )
    if title:
        ax.text(gap, header / 2, title, ha="left", va="center", fontsize=11)
    return save_figure(fig, path, dpi=dpi, tight=True)
