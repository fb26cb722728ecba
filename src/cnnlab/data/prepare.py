"""Turn any picture of a digit into an MNIST-style 28x28 image.

A network trained on MNIST expects what MNIST looks like: white ink on black,
the digit scaled so its longer side is 20 pixels, and its centre of mass at the
centre of the 28x28 field. Photos and drawings differ in size, polarity,
contrast and position, so :func:`prepare_digit` normalises all of those.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
from PIL import Image

from cnnlab.data.decode import (
    MAX_PIXELS,
    check_pixels,
    decoding,
    level_multiplier,
    open_image,
    reduce_factor,
    scale_levels,
    shrink_on_load,
    split_alpha,
)
from cnnlab.errors import CnnlabError

__all__ = ["MAX_PIXELS", "WORK_SIDE", "center_by_mass", "prepare_digit", "prepare_digits"]

#: Ink must differ from the background by this many grey levels (of 255), or the image is blank.
MIN_CONTRAST = 24.0
#: After contrast normalisation, values below this fraction are background noise.
NOISE_FLOOR = 0.12
#: Bigger images are decoded reduced to a longer side of 1 to 2 times this: a digit
#: covering a tenth of the picture is still ~100 pixels tall, five times the 20 it becomes.
WORK_SIDE = 1024

ImageInput = str | os.PathLike[str] | bytes | Image.Image | np.ndarray


def _composite(grey: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Transparent pixels composited onto a background that contrasts with the opaque
    ink, so both dark and light strokes on a transparent canvas survive."""
    if alpha is None or float(alpha.min()) >= 0.99:
        return grey
    opaque = alpha > 0.5
    ink = float(grey[opaque].mean()) if opaque.any() else 0.0
    background = 0.0 if ink > 127.5 else 255.0
    return grey * alpha + background * (1.0 - alpha)


def _block_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """``arr`` box-reduced by ``factor`` along its first two axes, as float32."""
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    blocks = arr[: h * factor, : w * factor].reshape(h, factor, w, factor, *arr.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _array_grey(arr: np.ndarray, label: str) -> np.ndarray:
    """A float32 grey image in 0..255 from an (H, W), (H, W, 1|3|4) array.

    Arrays are checked as strictly as files: shape, pixel count, dtype and value
    range; big ones are box-reduced before any float copy is made.
    """
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise CnnlabError(
            f"{label}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}"
        )
    check_pixels(arr.shape[1], arr.shape[0], label)
    if arr.dtype.kind not in "biuf":
        raise CnnlabError(
            f"{label}: dtype {arr.dtype} is not an image type (expected bool, integer or float)"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    multiplier = 255.0 if arr.dtype == bool else level_multiplier(arr, label)
    factor = reduce_factor((arr.shape[1], arr.shape[0]), WORK_SIDE)
    x = _block_mean(arr, factor) if factor > 1 else arr.astype(np.float32)
    if multiplier != 1.0:
        x *= multiplier
    if x.ndim == 2:
        return x
    grey = x[:, :, 0] * 0.299 + x[:, :, 1] * 0.587 + x[:, :, 2] * 0.114
    alpha = np.clip(x[:, :, 3] / 255.0, 0.0, 1.0) if x.shape[2] == 4 else None
    return _composite(grey, alpha)


def _to_array(image: ImageInput, label: str) -> np.ndarray:
    """Any accepted input as a float32 grey array in 0..255, at most about 2 x WORK_SIDE."""
    if isinstance(image, np.ndarray):
        return _array_grey(image, label)
    owned = not isinstance(image, Image.Image)
    img = open_image(image, label) if owned else image
    img = shrink_on_load(img, WORK_SIDE, label, grey=True, may_draft=owned)
    with decoding(label):
        if img.mode == "F":
            return scale_levels(np.asarray(img, dtype=np.float32), label)
        band, alpha = split_alpha(img)
        return _composite(np.asarray(band, dtype=np.float32), alpha)


def _ink(grey: np.ndarray) -> np.ndarray | None:
    """Background-subtracted ink in 0..1 (bright ink), or None for a blank image.

    The background is the median of a thin border ring; the ink is whichever
    extreme (darkest or brightest) lies further from it, which decides polarity.
    """
    h, w = grey.shape
    ring = max(1, round(0.02 * min(h, w)))
    border = np.concatenate(
        [grey[:ring].ravel(), grey[-ring:].ravel(), grey[:, :ring].ravel(), grey[:, -ring:].ravel()]
    )
    background = float(np.median(border))
    lo, hi = float(grey.min()), float(grey.max())
    ink = background - grey if background - lo > hi - background else grey - background
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        return None
    ink = ink / contrast
    return np.clip((ink - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0)


def center_by_mass(box: np.ndarray, size: int = 28) -> np.ndarray:
    """Paste ``box`` into a ``size`` x ``size`` float frame with its centre of mass centred.

    The centre is pixel ``size / 2`` (14, 14), where MNIST's digits have theirs on
    average. The shift is rounded to whole pixels; whatever leaves the frame is clipped.
    """
    frame = np.zeros((size, size), dtype=np.float32)
    total = float(box.sum())
    if total <= 0:
        return frame
    h, w = box.shape
    cy = float((box.sum(axis=1) * np.arange(h)).sum()) / total
    cx = float((box.sum(axis=0) * np.arange(w)).sum()) / total
    centre = size / 2.0
    top, left = int(np.rint(centre - cy)), int(np.rint(centre - cx))
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, size), min(left + w, size)
    if y1 > y0 and x1 > x0:
        frame[y0:y1, x0:x1] = box[y0 - top : y1 - top, x0 - left : x1 - left]
    return frame


def prepare_digit(image: ImageInput, size: int = 28) -> np.ndarray:
    """An MNIST-style ``size`` x ``size`` uint8 image (white ink on black) of one digit.

    Accepts a file path, encoded image bytes, a PIL image or an array. Steps: grey
    (alpha composited), polarity detected from the border, contrast stretched,
    cropped to the ink, longer side scaled to 20/28 of ``size`` with antialiasing,
    centred by centre of mass. A blank image gives all zeros.
    """
    if size < 4:
        raise CnnlabError(f"size {size}: must be at least 4 pixels")
    label = str(image) if isinstance(image, str | os.PathLike) else type(image).__name__
    ink = _ink(_to_array(image, label))
    if ink is None:
        return np.zeros((size, size), dtype=np.uint8)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = max(1, round(size * 20 / 28))
    h, w = crop.shape
    scale = box / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = Image.fromarray(crop.astype(np.float32)).resize(
        (new_w, new_h), Image.Resampling.LANCZOS
    )
    small = np.clip(np.asarray(resized, dtype=np.float32), 0.0, None)
    peak = float(small.max())
    if peak <= 0:
        return np.zeros((size, size), dtype=np.uint8)
    frame = center_by_mass(small / peak, size)
    return np.rint(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)


def prepare_digits(images: Iterable[ImageInput], size: int = 28) -> np.ndarray:
    """:func:`prepare_digit` for each image, stacked as an (N, size, size) uint8 array."""
    out = [prepare_digit(image, size) for image in images]
    if not out:
        return np.zeros((0, size, size), dtype=np.uint8)
    return np.stack(out)
