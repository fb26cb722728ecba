"""Reading the user's images for the workbench, and saving arrays as PNG.

Photos larger than ``max_side`` pixels on their longer side are scaled down while they
are decoded (JPEG draft mode or an integer box reduction, then a high-quality
thumbnail), so a 12-megapixel photo never needs more than a few megabytes as float32.
Files are opened through :mod:`cnnlab.data.decode`: the same pixel limit, colour modes
and one-line errors as ``cnnlab predict``.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from cnnlab.atomic import write_bytes
from cnnlab.data.decode import HIGH_DEPTH_MODES, decoding, open_image, shrink_on_load
from cnnlab.errors import CnnlabError

DEFAULT_MAX_SIDE = 1024


@dataclass
class LoadedImage:
    """An image as a float32 ``C×H×W`` tensor in [0, 1] and how it was read."""

    pixels: torch.Tensor
    original_size: tuple[int, int]  # (height, width) of the file
    path: str = ""

    @property
    def scaled(self) -> bool:
        """True when the image was scaled down on reading."""
        return tuple(self.pixels.shape[-2:]) != self.original_size

    def describe(self) -> str:
        """``H×W×C`` with a note when the file was scaled down."""
        c, h, w = self.pixels.shape
        text = f"{h}×{w}×{c}"
        if self.scaled:
            oh, ow = self.original_size
            text += f" (scaled down from {oh}×{ow})"
        return text


def load_image(
    path: str | os.PathLike[str],
    *,
    color: str = "auto",
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> LoadedImage:
    """Read an image file as a float32 ``C×H×W`` tensor with values in [0, 1].

    ``color`` is ``"auto"`` (grey files stay grey, anything else becomes RGB), ``"grey"``
    or ``"rgb"``. ``max_side`` bounds the longer side (``None`` or 0 keeps full size).
    """
    if color not in ("auto", "grey", "gray", "rgb"):
        raise CnnlabError(f"colour mode {color!r} must be auto, grey or rgb")
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise CnnlabError(f"image {p!r} does not exist or is not a file")
    try:
        arr, original = _decode(p, color, max_side)
    except CnnlabError as exc:
        reason = str(exc).removeprefix(f"{p}: ")
        raise CnnlabError(f"image {p!r} cannot be read: {reason}") from None
    t = torch.from_numpy(arr.astype(np.float32) / 255.0)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
    return LoadedImage(pixels=t, original_size=original, path=p)


def _decode(p: str, color: str, max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """The file's pixels as uint8 (H, W) or (H, W, 3), and its (height, width)."""
    img = open_image(p, p)
    original = (img.height, img.width)
    with decoding(p):
        grey = img.mode in _GREY_MODES and _is_grey(img)
    want_grey = color in ("grey", "gray") or (color == "auto" and grey)
    img = shrink_on_load(img, max_side or 0, p, grey=want_grey)
    with decoding(p):
        img = _to_mode(img, "L" if want_grey else "RGB", p)
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        arr = np.asarray(img, dtype=np.uint8)
    return arr, original


_GREY_MODES = frozenset({"1", "L", "LA", "La", "P", "LAB"} | HIGH_DEPTH_MODES)


def _is_grey(img: Image.Image) -> bool:
    if img.mode != "P":
        return True
    palette = img.convert("RGB")
    a = np.asarray(palette)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def _to_mode(img: Image.Image, mode: str, label: str) -> Image.Image:
    """A standard-mode image (see cnnlab.data.decode) as "L" or "RGB": alpha over
    white, deep images stretched from their minimum to their maximum."""
    if img.mode in ("RGBA", "LA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise CnnlabError(f"{label}: pixel values include NaN or infinity")
        a = (a - lo) / (hi - lo or 1.0) * 255.0
        img = Image.fromarray(a.astype(np.uint8), "L")
    return img.convert(mode)


def save_png(path: str | os.PathLike[str], pixels: np.ndarray) -> None:
    """Save an ``H×W`` or ``H×W×3`` uint8 array as a PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())
