"""Feature maps as pictures the page can show: each channel a small viridis PNG."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnlab.viz.features import feature_maps

_VIRIDIS: np.ndarray | None = None


def _viridis() -> np.ndarray:
    """matplotlib's viridis as a 256×3 uint8 lookup table (computed once)."""
    global _VIRIDIS
    if _VIRIDIS is None:
        from matplotlib import colormaps

        _VIRIDIS = (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    return _VIRIDIS


def _png_data_url(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def layer_feature_maps(
    model: nn.Module, x: torch.Tensor, max_channels: int = 64
) -> list[dict[str, Any]]:
    """Each convolution layer's output for ``x`` (one image), as JSON-ready dicts.

    The outputs are :func:`cnnlab.viz.features.feature_maps`' (before the activation);
    each channel becomes a small viridis PNG scaled to its own range.
    """
    lut = _viridis()
    layers = []
    for fm in feature_maps(model, x):
        out = fm.output[0].numpy()
        maps, ranges = [], []
        for channel in out[:max_channels]:
            lo, hi = float(channel.min()), float(channel.max())
            scaled = (channel - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(channel)
            maps.append(_png_data_url(lut[np.clip(scaled, 0, 255).astype(np.uint8)]))
            ranges.append([round(lo, 4), round(hi, 4)])
        layers.append(
            {
                "layer": fm.name,
                "index": fm.index,
                "type": type(fm.module).__name__,
                "title": fm.title,
                "shape": list(out.shape),
                "maps": maps,
                "ranges": ranges,
            }
        )
    return layers
