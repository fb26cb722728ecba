"""How a run turns one picture into the uint8 image its model was trained on.

Two kinds of run need different preparation:

- ``digits`` (MNIST and the other IDX data sets): a drawing or photo of one digit is made
  to look like MNIST by :func:`cnnlab.data.prepare_digit` (white ink on black, 20-pixel
  box, centred by mass);
- ``photos`` (CIFAR-10 and folders of images): the picture is decoded like every image of
  the training folder (:func:`cnnlab.data.folders.decode_file`: EXIF orientation, colour
  modes and bit depths) and brought to the training images' size with the run's resize
  mode. Normalisation then happens inside the model's preprocessing, as in training.

:class:`ImagePreparation` is stored in the run folder's ``config.json`` (``"images"``),
so ``predict``, ``serve`` and ``export`` prepare pictures exactly as the run's data was.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from cnnlab.data.folders import RESIZE_MODES, FolderSettings, decode_file
from cnnlab.data.prepare import ImageInput, prepare_digit
from cnnlab.errors import CnnlabError

__all__ = ["KINDS", "ImagePreparation"]

#: The kinds of preparation.
KINDS = ("digits", "photos")


def _label(image: ImageInput) -> str:
    return str(image) if isinstance(image, str | os.PathLike) else type(image).__name__


@dataclass(frozen=True)
class ImagePreparation:
    """One picture to a (C, H, W) uint8 image like the run's training images.

    ``kind`` is ``"digits"`` or ``"photos"``; ``shape`` the stored images' (channels,
    height, width); ``resize`` (photos only) ``pad``, ``squish`` or ``crop``.
    """

    kind: str = "digits"
    shape: tuple[int, int, int] = (1, 28, 28)
    resize: str = "pad"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CnnlabError(
                f"image preparation must be one of {', '.join(KINDS)}, not {self.kind!r}"
            )
        if self.resize not in RESIZE_MODES:
            raise CnnlabError(
                f"resize must be one of {', '.join(RESIZE_MODES)}, not {self.resize!r}"
            )
        if len(self.shape) != 3 or self.shape[0] not in (1, 3) or min(self.shape) < 1:
            raise CnnlabError(f"image shape must be (1 or 3, height, width), not {self.shape!r}")

    @property
    def digits(self) -> bool:
        """Whether pictures are prepared as MNIST-style digits (a blank one has no ink)."""
        return self.kind == "digits"

    def __call__(self, image: ImageInput) -> np.ndarray:
        """``image`` (a path, encoded bytes, a PIL image or an (H, W[, 1|3|4]) array) as a
        (C, H, W) uint8 array; a picture that cannot be read raises a one-line
        :class:`~cnnlab.errors.CnnlabError` naming it."""
        channels, height, width = self.shape
        if self.digits:
            if height != width:
                raise CnnlabError(f"digit preparation needs a square size, not {height}×{width}")
            digit = prepare_digit(image, height)[None]
            return np.repeat(digit, channels, axis=0) if channels > 1 else digit
        settings = FolderSettings(size=(height, width), channels=channels, resize=self.resize)
        return decode_file(_encoded(image), settings, _label(image))

    def prepare_all(self, images: list[ImageInput]) -> np.ndarray:
        """Each of ``images`` prepared, stacked as an (N, C, H, W) uint8 array."""
        if not images:
            return np.zeros((0, *self.shape), dtype=np.uint8)
        return np.stack([self(image) for image in images])

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in ``config.json``."""
        return {"kind": self.kind, "shape": list(self.shape), "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ImagePreparation:
        """Inverse of :meth:`to_dict`; ``None`` (runs saved before photos) means MNIST digits."""
        if d is None:
            return cls()
        shape = tuple(int(v) for v in d["shape"])
        if len(shape) != 3:
            raise CnnlabError(f"image shape must have 3 entries, not {list(shape)}")
        return cls(str(d["kind"]), (shape[0], shape[1], shape[2]), str(d.get("resize", "pad")))


def _encoded(image: ImageInput) -> str | os.PathLike[str] | bytes:
    """What :func:`decode_file` opens: a path or encoded bytes (arrays and PIL images are
    encoded as PNG, losslessly, so every input takes the one checked decoding path)."""
    if isinstance(image, str | os.PathLike | bytes):
        return image
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise CnnlabError(
                f"ndarray: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}"
            )
        if arr.dtype != np.uint8:
            if arr.dtype.kind == "f":
                top = 1.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 255.0
                arr = np.clip(np.nan_to_num(arr) * (255.0 / top), 0, 255)
            elif arr.dtype.kind not in "biu":
                raise CnnlabError(f"ndarray: dtype {arr.dtype} is not an image type")
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(arr))
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise CnnlabError(f"{type(image).__name__}: not an image (expected a path, bytes or an array)")
