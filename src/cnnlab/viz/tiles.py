"""Test images as picture tiles, and class names short enough to title them.

Grids of test images (misclassified, top losses, ``cnnlab plot``'s predictions) take the
split's ``N×C×H×W`` uint8 images straight from the data: one channel is drawn grey, three
in colour. Class names of image folders can be long; :func:`short_name` keeps both ends
of a long name so that names differing only at the end stay distinguishable.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["short_name", "tile_images"]


def tile_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """``images`` as uint8 pictures ready to draw: ``N×H×W`` (grey) or ``N×H×W×3`` (colour).

    Accepts ``N×H×W``, ``N×1×H×W`` or ``N×3×H×W`` (channels first, as the data sets keep
    them), uint8 or floats in [0, 1]. Anything else raises :class:`ValueError`.
    """
    imgs = np.asarray(torch.as_tensor(images).detach().cpu())
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    elif imgs.ndim == 4 and imgs.shape[1] == 3:
        imgs = imgs.transpose(0, 2, 3, 1)
    elif imgs.ndim != 3:
        raise ValueError(f"expected N×H×W, N×1×H×W or N×3×H×W images, got shape {imgs.shape}")
    if imgs.dtype != np.uint8:
        imgs = np.clip(np.rint(imgs.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(imgs)


def short_name(name: str, limit: int = 14) -> str:
    """``name`` cut to at most ``limit`` characters, keeping its start and its end.

    ``"golden_retriever_puppies"`` becomes ``"golden_ret…ies"``: the end survives because
    folder names often differ only there (``class_1``, ``class_2``).
    """
    if limit < 3:
        raise ValueError(f"limit must be at least 3, got {limit}")
    if len(name) <= limit:
        return name
    tail = max(1, (limit - 1) // 4)
    return f"{name[: limit - 1 - tail]}…{name[-tail:]}"
