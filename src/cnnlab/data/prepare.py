"""Turn any picture of a digit into an MNIST-style 28x28 image.

A network trained on MNIST expects what MNIST looks like: white ink on black,
the digit scaled so its longer side is 20 pixels, and its centre of mass at the
centre of the 28x28 field. Photos and drawings differ in size, polarity,
contrast and position, so :func:`prepare_digit` normalises all of those.

Photos add uneven lighting, shadows, ruled lines, specks and pens of every width:
:mod:`cnnlab.data.ink` finds the ink against a locally estimated background and brings
the strokes to MNIST's width before the MNIST steps here. :func:`prepare_steps` keeps
every intermediate image (``cnnlab predict --explain``, the web page).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

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
from cnnlab.data.ink import InkImage, digit_components, find_ink, normalise_stroke
from cnnlab.errors import CnnlabError

__all__ = [
    "MAX_PIXELS",
    "WORK_SIDE",
    "grey_image",
    "PreparationSteps",
    "center_by_mass",
    "finish_digit",
    "prepare_digit",
    "prepare_digits",
    "prepare_steps",
]

#: Ink weaker than this fraction of the digit's typical ink is left out of its box.
NOISE_FLOOR = 0.12
#: Stroke widths are measured and normalised on the digit resized to this longer side.
STROKE_SIDE = 80
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


def _label(image: ImageInput) -> str:
    return str(image) if isinstance(image, str | os.PathLike) else type(image).__name__


def grey_image(image: ImageInput) -> np.ndarray:
    """Any accepted input as a float32 grey array in 0..255 (one-line errors naming it)."""
    return _to_array(image, _label(image))


def _as_uint8(x: np.ndarray, top: float = 255.0) -> np.ndarray:
    return np.rint(np.clip(x * (255.0 / top), 0.0, 255.0)).astype(np.uint8)


def _shrunk(x: np.ndarray, side: int, resample: Image.Resampling) -> np.ndarray:
    """``x`` (float) resized so its longer side is ``side``, the aspect ratio kept."""
    h, w = x.shape
    scale = side / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    out = Image.fromarray(x.astype(np.float32)).resize((new_w, new_h), resample)
    return np.asarray(out, dtype=np.float32)


def finish_digit(
    found: InkImage, labels: list[int], size: int = 28
) -> tuple[np.ndarray, dict[str, np.ndarray], float, str]:
    """The components ``labels`` of ``found`` as an MNIST-style ``size`` x ``size`` digit.

    Their ink (relative to the paper, its soft edges kept) is cropped, its stroke width
    brought to MNIST's (:func:`~cnnlab.data.ink.normalise_stroke`), its longer side
    scaled to 20/28 of ``size`` with antialiasing and its centre of mass centred.
    Returns the uint8 digit, the stroke stage image, the stroke width measured (pixels
    of the 20-pixel box) and what was done to it.
    """
    blank = np.zeros((size, size), dtype=np.uint8)
    piece = found.pieces(labels)
    if found.ink is None or not piece.any():
        return blank, {}, 0.0, "none"
    # One pixel around the mask keeps the strokes' antialiased edges.
    grown = ndimage.binary_dilation(piece, structure=np.ones((3, 3), dtype=bool))
    peak = float(np.percentile(found.ink[piece], 95))
    strength = np.clip(found.ink * grown / max(peak, 1e-6), 0.0, 1.0)
    visible = strength > NOISE_FLOOR
    rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    strength, mask = strength[crop], piece[crop]
    # Stroke widths are measured and redrawn at one resolution, four times the box: fast
    # for any photo, and fine enough that whole-pixel dilations are small steps.
    resample = Image.Resampling.BOX if max(mask.shape) > STROKE_SIDE else Image.Resampling.BILINEAR
    fixed = np.clip(_shrunk(strength, STROKE_SIDE, resample), 0.0, 1.0)
    mask = _shrunk(mask.astype(np.float32), STROKE_SIDE, resample) >= 0.5
    # Room around the digit for strokes that grow.
    pad = STROKE_SIDE // 8
    fixed, mask = np.pad(fixed, pad), np.pad(mask, pad)
    strokes, width, action = normalise_stroke(fixed, mask)
    if action == "kept":  # no detour through another resolution
        strokes = strength
    else:
        on = strokes > NOISE_FLOOR
        rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
        if len(rows):
            strokes = strokes[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = max(1, round(size * 20 / 28))
    small = np.clip(_shrunk(strokes, box, Image.Resampling.LANCZOS), 0.0, None)
    top = float(small.max())
    if top <= 0:
        return blank, {}, width, action
    frame = center_by_mass(small / top, size)
    return _as_uint8(frame, 1.0), {"strokes": _as_uint8(strokes, 1.0)}, width, action


@dataclass
class PreparationSteps:
    """How one picture became the model's input, stage by stage.

    ``stages`` maps each stage's name to a uint8 image, in order: ``picture`` (grey, as
    analysed), ``background`` (the paper level estimated under it), ``ink`` (ink
    strength relative to the paper), ``mask`` (thresholded ink; grey: ruled lines taken
    out), ``digit`` (the components kept; grey: the ones dropped), ``strokes`` (the digit
    with MNIST's stroke width) and ``prepared`` (the ``size`` x ``size`` input).
    ``result`` is the prepared digit (all zeros when no ink was found).
    """

    result: np.ndarray
    stages: dict[str, np.ndarray] = field(default_factory=dict)
    dark_ink: bool = True
    stroke_width: float = 0.0
    stroke: str = "none"

    @property
    def blank(self) -> bool:
        """Whether no ink was found."""
        return not self.result.any()

    def save(self, folder: str | os.PathLike[str], enlarge: int = 8) -> list[Path]:
        """Each stage as ``NN-name.png`` in ``folder`` (made if missing); the prepared
        image is also written ``enlarge`` times larger (``prepared-large.png``)."""
        out = Path(folder)
        try:
            out.mkdir(parents=True, exist_ok=True)
            paths = []
            for i, (name, image) in enumerate(self.stages.items(), start=1):
                path = out / f"{i:02d}-{name}.png"
                Image.fromarray(image).save(path)
                paths.append(path)
            big = np.kron(self.result, np.ones((enlarge, enlarge), dtype=np.uint8))
            path = out / "prepared-large.png"
            Image.fromarray(big).save(path)
            paths.append(path)
        except OSError as exc:
            raise CnnlabError(f"{out}: cannot write the preparation images ({exc})") from None
        return paths


def ink_stages(found: InkImage) -> dict[str, np.ndarray]:
    """The picture-wide stages of :class:`PreparationSteps` for ``found``."""
    background = found.background if found.dark_ink else 255.0 - found.background
    ink = found.ink if found.ink is not None else np.zeros(found.grey.shape, np.float32)
    mask = np.where(found.mask, 255, np.where(found.lines, 96, 0)).astype(np.uint8)
    return {
        "picture": _as_uint8(found.grey),
        "background": _as_uint8(background),
        "ink": _as_uint8(ink, 1.0),
        "mask": mask,
    }


def prepare_steps(image: ImageInput, size: int = 28) -> PreparationSteps:
    """:func:`prepare_digit` with every intermediate image kept (:class:`PreparationSteps`)."""
    if size < 4:
        raise CnnlabError(f"size {size}: must be at least 4 pixels")
    found = find_ink(grey_image(image))
    labels = digit_components(found)
    result, extra, width, action = finish_digit(found, labels, size)
    stages = ink_stages(found)
    kept = found.pieces(labels)
    stages["digit"] = np.where(kept, 255, np.where(found.mask, 80, 0)).astype(np.uint8)
    stages.update(extra)
    stages["prepared"] = result
    return PreparationSteps(result, stages, found.dark_ink, width, action)


def prepare_digit(image: ImageInput, size: int = 28) -> np.ndarray:
    """An MNIST-style ``size`` x ``size`` uint8 image (white ink on black) of one digit.

    Accepts a file path, encoded image bytes, a PIL image or an array. Steps (see
    :mod:`cnnlab.data.ink`): grey (alpha composited), polarity detected, the paper's
    uneven lighting divided out, ink thresholded, ruled lines removed, the digit's
    connected components kept and specks dropped, stroke width brought to MNIST's,
    longer side scaled to 20/28 of ``size`` with antialiasing, centred by centre of
    mass. A picture without ink gives all zeros.
    """
    if size < 4:
        raise CnnlabError(f"size {size}: must be at least 4 pixels")
    found = find_ink(grey_image(image))
    return finish_digit(found, digit_components(found), size)[0]


def prepare_digits(images: Iterable[ImageInput], size: int = 28) -> np.ndarray:
    """:func:`prepare_digit` for each image, stacked as an (N, size, size) uint8 array."""
    out = [prepare_digit(image, size) for image in images]
    if not out:
        return np.zeros((0, size, size), dtype=np.uint8)
    return np.stack(out)
