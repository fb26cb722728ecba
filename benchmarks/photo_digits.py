"""MNIST test digits rendered as phone photos of handwriting, seeded.

Each picture is one MNIST digit (or a five-digit number made of them) drawn in ink on
textured paper and then put through one *condition* of a phone photo: lighting
gradients, a shadow edge, perspective tilt with the table showing, a thin pen or a
fat marker, blur, sensor noise, heavy JPEG, ruled paper, a small digit off-centre on a
big canvas, or chalk on a dark board. Every picture is JPEG-encoded like a phone's.

Used by ``benchmarks/digit_photos.py`` and by the tests of ``cnnlab read``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.morphology import disk, skeletonize

__all__ = ["CONDITIONS", "Photo", "digit_photo", "number_photo", "photo_set"]

#: The photo conditions, each applied on top of paper texture and JPEG (quality 70-90).
CONDITIONS = (
    "paper",
    "gradient",
    "shadow",
    "tilt",
    "thin-pen",
    "marker",
    "blur",
    "noise",
    "jpeg",
    "ruled",
    "small",
    "light-on-dark",
    "mixed",
)


@dataclass(frozen=True)
class Photo:
    """One rendered picture: JPEG bytes, its label (a digit, or the number's digits),
    the condition and the MNIST test indices of its digits."""

    data: bytes
    label: str
    condition: str
    indices: tuple[int, ...]


def _ink_alpha(digit: np.ndarray, height: int, rng: np.random.Generator, pen: str) -> np.ndarray:
    """An MNIST digit (28×28 uint8, ink bright) as ink coverage 0..1 about ``height``
    pixels tall, its stroke drawn by ``pen`` ("normal", "thin" or "marker")."""
    big = Image.fromarray(digit).resize((height, height), Image.Resampling.BICUBIC)
    alpha = np.clip(np.asarray(big, dtype=np.float32) / 255.0, 0.0, 1.0)
    if pen == "thin":  # a ballpoint: the skeleton, one or two pixels wide
        core = skeletonize(alpha > 0.5)
        alpha = ndimage.binary_dilation(core, disk(int(rng.integers(0, 2)))).astype(np.float32)
        alpha = ndimage.gaussian_filter(alpha, 0.6)
        alpha = np.clip(alpha / max(float(alpha.max()), 1e-6), 0.0, 1.0)
    elif pen == "marker":  # a felt-tip marker: strokes a fifth to a quarter of the digit
        radius = max(2, round(height * rng.uniform(0.03, 0.05)))
        alpha = ndimage.grey_dilation(alpha, footprint=disk(radius))
    rows, cols = np.flatnonzero(alpha.max(1) > 0.1), np.flatnonzero(alpha.max(0) > 0.1)
    if len(rows) == 0:
        return alpha
    return alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _pen(condition: str, rng: np.random.Generator) -> str:
    if condition == "thin-pen":
        return "thin"
    if condition == "marker":
        return "marker"
    if condition == "mixed":
        return str(rng.choice(["normal", "thin", "marker"]))
    return "normal"


def _paste(canvas: np.ndarray, piece: np.ndarray, top: int, left: int) -> None:
    h, w = piece.shape
    region = canvas[top : top + h, left : left + w]
    np.maximum(region, piece[: region.shape[0], : region.shape[1]], out=region)


def _render(alpha: np.ndarray, condition: str, rng: np.random.Generator) -> bytes:
    """Ink coverage ``alpha`` as a JPEG photo of paper under ``condition``."""
    h, w = alpha.shape
    effects = {condition}
    if condition == "mixed":
        effects = set(
            rng.choice(
                ["gradient", "shadow", "tilt", "blur", "noise", "jpeg", "ruled"],
                size=3,
                replace=False,
            )
        )
    dark = condition == "light-on-dark"
    # Paper: a base tone and a fibre texture; chalk boards are dark and smoother.
    tone = rng.uniform(35, 70) if dark else rng.uniform(190, 245)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 1.5)
    paper = tone + texture * (3.0 / max(float(texture.std()), 1e-6))
    if "ruled" in effects:
        spacing = int(rng.integers(18, 32))
        offset = int(rng.integers(0, spacing))
        thickness = int(rng.integers(1, 3))
        for y in range(offset, h, spacing):
            paper[y : y + thickness] -= rng.uniform(50, 90)
    ink_level = rng.uniform(195, 235) if dark else rng.uniform(15, 70)
    grey = paper * (1.0 - alpha) + ink_level * alpha
    light = np.ones((h, w), dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    if "gradient" in effects:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / w + np.sin(angle) * yy / h
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        light *= 1.0 - rng.uniform(0.35, 0.55) * ramp
    if "shadow" in effects:
        angle = rng.uniform(0, 2 * np.pi)
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        side = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
        edge = np.clip(side / rng.uniform(1.0, 4.0) + 0.5, 0.0, 1.0)
        light *= 1.0 - rng.uniform(0.3, 0.5) * edge
    grey = grey * light
    img = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    if "tilt" in effects:
        d = 0.08 * min(h, w)
        quad = [
            v + rng.uniform(-d, d)
            for v in (0, 0, 0, h, w, h, w, 0)  # corners: top-left, bottom-left, ...
        ]
        table = int(rng.uniform(40, 90)) if not dark else int(rng.uniform(120, 160))
        img = img.transform(
            (w, h), Image.Transform.QUAD, quad, Image.Resampling.BICUBIC, fillcolor=table
        )
    arr = np.asarray(img, dtype=np.float64)
    if "blur" in effects:
        arr = ndimage.gaussian_filter(arr, rng.uniform(1.0, 2.5))
    else:
        arr = ndimage.gaussian_filter(arr, 0.5)  # every lens softens a little
    sigma = rng.uniform(8, 16) if "noise" in effects else rng.uniform(1, 3)
    arr = arr + rng.normal(0, sigma, arr.shape)
    # Phones photograph in colour: a faint warm cast, then JPEG.
    rgb = np.stack([arr * 1.02, arr, arr * 0.95], axis=-1)
    quality = int(rng.integers(30, 51)) if "jpeg" in effects else int(rng.integers(70, 91))
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def digit_photo(digit: np.ndarray, condition: str, rng: np.random.Generator) -> bytes:
    """One MNIST digit (28×28 uint8) as a JPEG photo under ``condition``."""
    if condition == "small":
        height = int(rng.integers(36, 56))
        canvas = np.zeros((int(rng.integers(420, 600)), int(rng.integers(560, 800))))
    else:
        height = int(rng.integers(90, 160))
        side = int(height * rng.uniform(1.5, 2.2))
        canvas = np.zeros((side, side))
    piece = _ink_alpha(digit, height, rng, _pen(condition, rng))
    ph, pw = piece.shape
    if condition == "small":  # anywhere, away from the edges
        top = int(rng.integers(ph, canvas.shape[0] - 2 * ph))
        left = int(rng.integers(pw, canvas.shape[1] - 2 * pw))
    else:
        top = (canvas.shape[0] - ph) // 2 + int(rng.integers(-ph // 5, ph // 5 + 1))
        left = (canvas.shape[1] - pw) // 2 + int(rng.integers(-ph // 5, ph // 5 + 1))
    _paste(canvas, piece, max(0, top), max(0, left))
    return _render(canvas, condition, rng)


def number_photo(digits: list[np.ndarray], condition: str, rng: np.random.Generator) -> bytes:
    """MNIST digits written side by side as a number (spacing and baseline jitter) and
    photographed under ``condition``."""
    height = int(rng.integers(40, 56)) if condition == "small" else int(rng.integers(70, 110))
    pen = _pen(condition, rng)
    pieces = [_ink_alpha(d, height, rng, pen) for d in digits]
    gaps = [int(height * rng.uniform(0.12, 0.35)) for _ in pieces]
    jitter = [int(height * rng.uniform(-0.1, 0.1)) for _ in pieces]
    width = sum(p.shape[1] for p in pieces) + sum(gaps)
    margin_x = int(
        height * (rng.uniform(1.5, 3.0) if condition == "small" else rng.uniform(0.4, 0.8))
    )
    margin_y = int(
        height * (rng.uniform(1.5, 3.0) if condition == "small" else rng.uniform(0.4, 0.7))
    )
    canvas = np.zeros((height + 2 * margin_y + height // 5, width + 2 * margin_x))
    left = margin_x
    for piece, gap, dy in zip(pieces, gaps, jitter, strict=True):
        ph, pw = piece.shape
        top = margin_y + (height - ph) // 2 + dy + height // 10
        _paste(canvas, piece, max(0, top), left)
        left += pw + gap
    return _render(canvas, condition, rng)


def photo_set(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    per_condition: int,
    numbers: int = 0,
    length: int = 5,
) -> tuple[list[Photo], list[Photo]]:
    """Digit photos (``per_condition`` for each of :data:`CONDITIONS`) and ``numbers``
    number photos of ``length`` digits, from MNIST test ``images`` (N×28×28 uint8) and
    their ``labels``, chosen and rendered reproducibly from ``seed``."""
    rng = np.random.default_rng(seed)
    digits = []
    for condition in CONDITIONS:
        for index in rng.choice(len(images), per_condition, replace=False):
            data = digit_photo(images[index], condition, rng)
            digits.append(Photo(data, str(int(labels[index])), condition, (int(index),)))
    numbers_out = []
    for n in range(numbers):
        condition = CONDITIONS[n % len(CONDITIONS)]
        picks = tuple(int(i) for i in rng.choice(len(images), length, replace=False))
        data = number_photo([images[i] for i in picks], condition, rng)
        label = "".join(str(int(labels[i])) for i in picks)
        numbers_out.append(Photo(data, label, condition, picks))
    return digits, numbers_out
