"""Reading a handwritten number: every digit in a photo, left to right.

The picture's ink is found as for one digit (:func:`cnnlab.data.ink.find_ink`: local
background, threshold, ruled lines removed); its connected components are grouped
into digits (:func:`cnnlab.data.ink.number_components`: tall pieces, with the pieces
that overlap them horizontally, such as a 5's detached flag), each group is prepared
MNIST-style and classified by a digit run. Touching digits are not split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.data.ink import find_ink, number_components
from cnnlab.data.prepare import ImageInput, finish_digit, grey_image
from cnnlab.errors import CnnlabError
from cnnlab.runs import Run

__all__ = ["DigitReading", "NumberReading", "find_digits", "read_number"]


@dataclass(frozen=True)
class DigitReading:
    """One digit of a number: the class read, its probability, where it is in the
    analysed picture (``top, left, bottom, right``) and the image the model received."""

    digit: str
    confidence: float
    box: tuple[int, int, int, int]
    image: np.ndarray

    def to_dict(self) -> dict[str, object]:
        """The JSON form (without the image)."""
        return {"digit": self.digit, "confidence": round(self.confidence, 6), "box": list(self.box)}


@dataclass(frozen=True)
class NumberReading:
    """A number read from a picture: its digits left to right."""

    digits: list[DigitReading]

    @property
    def number(self) -> str:
        """The digits read, as one string ("" when none were found)."""
        return "".join(d.digit for d in self.digits)

    def to_dict(self) -> dict[str, object]:
        """The JSON form: the number and each digit's class, confidence and box."""
        return {"number": self.number, "digits": [d.to_dict() for d in self.digits]}


def find_digits(
    image: ImageInput, size: int = 28
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Every digit in a picture, left to right, as an MNIST-style ``size`` x ``size``
    uint8 image and its box in the analysed picture (``top, left, bottom, right``)."""
    found = find_ink(grey_image(image))
    if found.ink is None:
        return []
    by_label = {c.label: c for c in found.components}
    out = []
    for labels in number_components(found):
        digit = finish_digit(found, labels, size)[0]
        if not digit.any():
            continue
        parts = [by_label[label] for label in labels]
        box = (
            min(c.top for c in parts),
            min(c.left for c in parts),
            max(c.bottom for c in parts),
            max(c.right for c in parts),
        )
        out.append((digit, box))
    return out


def read_number(run: Run, image: ImageInput) -> NumberReading:
    """The number written in ``image``, read by the digit run ``run``."""
    if not run.preparation.digits:
        raise CnnlabError(f"{run.path.name}: reading numbers needs a digit run, not a photo run")
    channels, height, width = run.preparation.shape
    found = find_digits(image, height)
    if not found:
        return NumberReading([])
    batch = np.stack([digit for digit, _ in found])[:, None]
    if channels > 1:
        batch = np.repeat(batch, channels, axis=1)
    probs = run.predict(torch.from_numpy(batch))
    digits = []
    for (image28, box), p in zip(found, probs, strict=True):
        best = int(p.argmax())
        digits.append(DigitReading(run.classes[best], float(p[best]), box, image28))
    return NumberReading(digits)
