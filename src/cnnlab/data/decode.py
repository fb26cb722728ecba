"""Opening untrusted image files cheaply and safely.

Every failure of a decoder on a hostile or broken file becomes one
:class:`~cnnlab.errors.CnnlabError` line naming the file. Big images are decoded
reduced (JPEG at 1/2, 1/4 or 1/8 scale inside libjpeg, other formats with an
integer box reduction right after decoding), and every colour mode is brought to
one of a few standard ones in Pillow, so no full-size float copy is ever built.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from cnnlab.errors import CnnlabError

__all__ = [
    "MAX_PIXELS",
    "check_pixels",
    "decoding",
    "open_image",
    "reduce_factor",
    "level_multiplier",
    "scale_levels",
    "shrink_on_load",
    "split_alpha",
    "standard_mode",
]

#: Images larger than this are refused before decoding (a decompression-bomb guard).
MAX_PIXELS = 40_000_000

#: Modes whose pixels are wider than 8 bits; they become "F" (32-bit float).
HIGH_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
#: Modes that carry an alpha band.
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


def check_pixels(width: int, height: int, label: str) -> None:
    """Refuse an image of no pixels, or of more than :data:`MAX_PIXELS`."""
    if width <= 0 or height <= 0:
        raise CnnlabError(f"{label}: image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise CnnlabError(
            f"{label}: image is {width}x{height} pixels, over the "
            f"{MAX_PIXELS / 1e6:.0f} megapixel limit"
        )


@contextmanager
def decoding(label: str) -> Iterator[None]:
    """Turn any exception a decoder raises on a broken file into a one-line CnnlabError.

    Pillow's plugins raise OSError, ValueError, SyntaxError, struct.error,
    NotImplementedError, IndexError and more on malformed headers and data;
    all of them mean the same thing to the user.
    """
    try:
        yield
    except CnnlabError:
        raise
    except MemoryError:
        raise CnnlabError(f"{label}: not enough memory to decode the image") from None
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise CnnlabError(f"{label}: truncated or corrupt image ({detail})") from None


def open_image(source: str | os.PathLike[str] | bytes, label: str) -> Image.Image:
    """Open an image file lazily (header only), refusing anything too big to decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise CnnlabError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise CnnlabError(f"{label}: is a folder, expected an image file") from None
    except Image.UnidentifiedImageError:
        raise CnnlabError(f"{label}: not an image (unrecognised file format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CnnlabError(
            f"{label}: image too large (over {MAX_PIXELS / 1e6:.0f} megapixels)"
        ) from None
    except PermissionError:
        raise CnnlabError(f"{label}: permission denied") from None
    except Exception as exc:  # plugins raise many types on malformed headers
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise CnnlabError(f"{label}: cannot read image ({detail})") from None
    check_pixels(*img.size, label)
    return img


def reduce_factor(size: tuple[int, int], side: int) -> int:
    """The largest integer factor that keeps the longer side at least ``side`` pixels."""
    return max(1, max(size) // side) if side > 0 else 1


#: EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def shrink_on_load(
    img: Image.Image, side: int, label: str, *, grey: bool, may_draft: bool = True
) -> Image.Image:
    """Decode ``img`` with its longer side at no less than ``side`` pixels where possible.

    JPEG decodes straight to 1/2, 1/4 or 1/8 scale (and to grey when ``grey`` and the
    file is colour, skipping the colour conversion); other formats decode at full
    size, then shrink by an integer box reduction (alpha premultiplied, so transparent
    pixels do not bleed). The result is loaded, upright (EXIF orientation applied),
    in a standard mode (see :func:`standard_mode`); with ``grey`` in "L", "LA" or "F".
    ``may_draft=False`` leaves a caller's JPEG object as it is (draft changes it).
    """
    check_pixels(*img.size, label)
    with decoding(label):
        orientation = img.getexif().get(0x0112)
        if may_draft and side > 0 and max(img.size) > side and img.format == "JPEG":
            scale = reduce_factor(img.size, side)
            target = (max(1, img.size[0] // scale), max(1, img.size[1] // scale))
            img.draft("L" if grey and img.mode in ("RGB", "YCbCr") else None, target)
        img.load()
        img = standard_mode(img, label)
        if grey and img.mode in ("RGB", "RGBA"):
            img = img.convert("L" if img.mode == "RGB" else "LA")
        factor = reduce_factor(img.size, side)
        if factor > 1:
            img = img.reduce(factor)
        if orientation in _UPRIGHT:
            img = img.transpose(_UPRIGHT[orientation])
        check_pixels(*img.size, label)
        return img


def standard_mode(img: Image.Image, label: str) -> Image.Image:
    """``img`` as one of "L", "LA", "RGB", "RGBA" or "F", converted inside Pillow.

    LAB keeps its lightness band, CMYK/YCbCr/HSV become RGB, palettes and 1-bit become
    grey or colour (with alpha where the file marks a transparent colour), and every
    deeper-than-8-bit mode becomes 32-bit float.
    """
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA", "F"):
        out = img
    elif mode in HIGH_DEPTH_MODES:
        out = img.convert("F")
    elif mode == "LAB":
        out = img.getchannel(0)
    elif mode in ("CMYK", "YCbCr", "HSV", "RGBX"):
        out = img.convert("RGB")
    elif mode in ALPHA_MODES or "transparency" in img.info:
        out = img.convert("RGBA")
    elif mode in ("1", "P"):
        out = img.convert("RGB" if mode == "P" else "L")
    else:
        raise CnnlabError(f"{label}: unsupported colour mode {mode!r}")
    if out.mode == "LA" or out.mode == "RGBA":
        low = out.getchannel("A").getextrema()[0]
        if isinstance(low, int | float) and low >= 0.99 * 255:  # opaque: alpha adds nothing
            out = out.convert(out.mode[:-1])
    if out is img and "transparency" in img.info and mode in ("L", "RGB"):
        out = img.convert("RGBA")
    return out


def split_alpha(img: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """The colour or grey bands of a standard-mode image and its alpha as floats in 0..1."""
    if img.mode not in ("LA", "RGBA"):
        return img, None
    alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
    return img.convert(img.mode[:-1]), alpha


def level_multiplier(x: np.ndarray, label: str) -> float:
    """What to multiply ``x`` by for levels in 0..255, refusing values that fit no rule.

    Floats in 0..1 are fractions, values up to 255 are 8-bit levels and values up to
    65535 are 16-bit levels; NaN, infinity and anything else is refused.
    """
    lo, hi = float(x.min()), float(x.max())  # NaN propagates through min and max
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise CnnlabError(f"{label}: pixel values include NaN or infinity")
    if lo < 0.0 or hi > 65535.0:
        raise CnnlabError(
            f"{label}: pixel values from {lo:g} to {hi:g}, outside 0..65535 (or 0..1 for fractions)"
        )
    if x.dtype.kind == "f" and hi <= 1.0:
        return 255.0
    return 255.0 / 65535.0 if hi > 255.0 else 1.0


def scale_levels(x: np.ndarray, label: str) -> np.ndarray:
    """A decoded file's pixels as float32 levels in 0..255.

    The rules of :func:`level_multiplier` apply; a 32-bit integer or float file out of
    their range (its range is the file's business) has a few extreme outliers clipped
    and the rest stretched from its minimum to its maximum.
    """
    try:
        multiplier = level_multiplier(x, label)
    except CnnlabError:
        if not (math.isfinite(float(x.min())) and math.isfinite(float(x.max()))):
            raise
        x = robust_levels(x)
        lo, hi = float(x.min()), float(x.max())
        if hi <= lo:
            return np.zeros(x.shape, dtype=np.float32)
        # float64 so that a range near float32's limit does not overflow
        return ((x - lo) * (255.0 / (hi - lo))).astype(np.float32)
    x = x.astype(np.float32)
    if multiplier != 1.0:
        x *= multiplier
    return x


def robust_levels(x: np.ndarray) -> np.ndarray:
    """float64 levels with extreme outliers replaced by the median (the background).

    A single stray value of 1e30 in a float TIFF would otherwise squash the digit
    into one grey level; values beyond the 0.1 and 99.9 percentiles are such strays.
    """
    x = x.astype(np.float64)
    lo, hi = np.percentile(x, [0.1, 99.9])
    outside = (x < lo) | (x > hi)
    if outside.any():
        x[outside] = np.median(x)
    return x
