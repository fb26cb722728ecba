"""One trained run behind the page and the API: request image -> prediction, and the
model's description.

Probabilities come from the run's :class:`~cnnlab.predict.Predictor`, the same path as
``cnnlab predict``; feature maps and the layer table come from watching the plain model
run (:mod:`cnnlab.models.trace`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.trace import trace_layers
from cnnlab.predict import is_blank
from cnnlab.runs import Run
from cnnlab.serve.inputs import ApiError, Limits, check_image_header, json_image_form
from cnnlab.serve.pictures import layer_feature_maps

T = TypeVar("T")

log = logging.getLogger("cnnlab.serve")


def layer_rows(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """The model's layers in the order they run, with output shapes and parameters."""
    return [
        {
            "name": call.name,
            "type": type(call.module).__name__,
            "output_shape": list(call.output.shape[1:])
            if isinstance(call.output, torch.Tensor)
            else [],
            "parameters": sum(p.numel() for p in call.module.parameters(recurse=False)),
        }
        for call in trace_layers(model, x)
    ]


def input_picture(image: np.ndarray) -> list[Any]:
    """A (C, H, W) uint8 image as the page draws it: H rows of W grey levels for one
    channel, H rows of W ``[red, green, blue]`` triples for three."""
    if image.shape[0] == 1:
        return image[0].tolist()
    return image.transpose(1, 2, 0).tolist()


def sample_image(shape: tuple[int, int, int]) -> np.ndarray:
    """A (C, H, W) image with one vertical stroke: not blank, so it reaches the model
    (a blank digit never does) and warms up every layer."""
    image = np.zeros(shape, dtype=np.uint8)
    _, height, width = shape
    image[:, height // 7 : height - height // 7, width // 2 - 1 : width // 2 + 1] = 255
    return image


def _summary_text(run: Run) -> str:
    try:
        from cnnlab.summary import summary

        return summary(run.model, tuple(run.preprocess.input_size))
    except Exception as exc:  # the summary is a nicety; the page works without it
        log.warning("no summary table: %s", exc)
        return str(run.model)


class ModelService:
    """One loaded run, its lock, and the request -> prediction pipeline."""

    def __init__(self, run: Run, limits: Limits) -> None:
        self.run = run
        self.limits = limits
        self.model_lock = threading.Lock()
        self.decode_slots = threading.BoundedSemaphore(max(1, limits.max_concurrent_decodes))
        self._info: dict[str, Any] | None = None
        self._info_lock = threading.Lock()

    def prepare_image(self, data: bytes) -> np.ndarray:
        """Check an encoded image's header, then prepare it as ``cnnlab predict`` does
        (the run's preparation: a digit MNIST-style, a photo like the run's images), as
        a (C, H, W) uint8 image.

        Both happen inside ``decode_slots``: opening a file can already allocate (PIL reads
        chunks, EXIF and palettes while parsing the header), so the bound covers it too.
        """
        return self._decode(data, self._prepare)

    def _decode(self, data: bytes, decode: Callable[[bytes], T]) -> T:
        """``decode(data)`` inside ``decode_slots`` after the header check; its errors
        become 400s naming the image (a decoder failing on hostile input is the
        client's problem, never a 500)."""
        with self.decode_slots:
            check_image_header(data, self.limits)
            try:
                return decode(data)
            except CnnlabError as exc:
                message = str(exc)
                if message.startswith("bytes: "):
                    message = "the image: " + message[len("bytes: ") :]
                raise ApiError(400, message) from None
            except Exception as exc:
                log.warning("image decoding failed: %r", exc)
                raise ApiError(400, f"cannot decode the image ({type(exc).__name__})") from None

    def read(self, data: bytes) -> dict[str, Any]:
        """The handwritten number in an encoded image, as ``cnnlab read`` reads it: the
        number, and for each digit (left to right) its class, confidence, box in the
        analysed picture and the 28×28 image the model received."""
        from cnnlab.read import find_digits

        if not self.run.preparation.digits:
            raise ApiError(400, "reading numbers needs a digit run; this run classifies photos")
        timing: dict[str, float] = {}
        start = time.perf_counter()
        side = self.run.preparation.shape[1]
        found = self._decode(data, lambda d: find_digits(d, side))
        timing["prepare"] = (time.perf_counter() - start) * 1000
        digits: list[dict[str, Any]] = []
        if found:
            channels = self.run.preparation.shape[0]
            batch = torch.from_numpy(np.stack([d for d, _ in found])[:, None])
            if channels > 1:
                batch = batch.repeat(1, channels, 1, 1)
            with self.model_lock:
                start = time.perf_counter()
                probs = self.run.predictor.probabilities(batch)
                timing["inference"] = (time.perf_counter() - start) * 1000
            for (image, box), p in zip(found, probs, strict=True):
                best = int(p.argmax())
                digits.append(
                    {
                        "digit": self.run.classes[best],
                        "confidence": round(float(p[best]), 6),
                        "box": list(box),
                        "input": image.tolist(),
                    }
                )
        return {
            "number": "".join(d["digit"] for d in digits),
            "digits": digits,
            "timing_ms": timing,
        }

    def _prepare(self, data: bytes) -> np.ndarray:
        """``data`` prepared like the run's images (the run's own preparation)."""
        return self.run.preparation(data)

    def predict(self, image: np.ndarray, features: bool = False) -> dict[str, Any]:
        """Probabilities, top classes and (optionally) feature maps for a (C, H, W) uint8
        image prepared like the run's images (an (H, W) one is one channel).

        For a digit run, an image without ink is answered ``{"prediction": None,
        "blank": True, ...}``, as ``cnnlab predict --json`` does: any class would be a
        guess. ``"input"`` is the image the model received (:func:`input_picture`).
        """
        if image.ndim == 2:
            image = image[None]
        if self.run.preparation.digits and is_blank(image):
            return {
                "prediction": None,
                "blank": True,
                "input": input_picture(image),
                "timing_ms": {},
            }
        batch = torch.from_numpy(np.ascontiguousarray(image))[None]
        predictor = self.run.predictor
        timing: dict[str, float] = {}
        with self.model_lock:
            start = time.perf_counter()
            probs = predictor.probabilities(batch)[0]
            timing["inference"] = (time.perf_counter() - start) * 1000
            maps = None
            if features:
                start = time.perf_counter()
                x = predictor.inputs(batch)
                maps = layer_feature_maps(self.run.model, x, self.limits.max_channels)
                timing["features"] = (time.perf_counter() - start) * 1000
        classes = self.run.classes
        values = [float(v) for v in probs]
        order = sorted(range(len(values)), key=lambda i: -values[i])
        result: dict[str, Any] = {
            "prediction": classes[order[0]],
            "blank": False,
            "confidence": round(values[order[0]], 6),
            "top": [{"class": classes[i], "probability": round(values[i], 6)} for i in order[:3]],
            "probabilities": {c: round(v, 6) for c, v in zip(classes, values, strict=True)},
            "input": input_picture(image),
        }
        if maps is not None:
            result["feature_maps"] = maps
        result["timing_ms"] = timing
        return result

    def info(self) -> dict[str, Any]:
        """The model's description for ``GET /api/model`` (built once)."""
        with self._info_lock:
            if self._info is None:
                self._info = self._build_info()
            return self._info

    def _build_info(self) -> dict[str, Any]:
        run, model = self.run, self.run.model
        shape = run.preparation.shape
        dummy = run.predictor.inputs(torch.zeros(1, *shape, dtype=torch.uint8))
        with self.model_lock:
            layers = layer_rows(model, dummy)
        metrics = run.metrics or {}
        accuracy = metrics.get("test_accuracy")
        return {
            "name": run.spec.name,
            "description": run.spec.description,
            "source": run.spec.source,
            "run": run.path.name,
            "dataset": run.dataset,
            "classes": list(run.classes),
            # How an upload is prepared, and the (C, H, W) image the model then receives:
            # the page offers drawing for digits and a photo upload otherwise.
            "preparation": run.preparation.to_dict(),
            "input_shape": list(shape),
            "input_size": list(run.preprocess.input_size),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "test_accuracy": float(accuracy) if isinstance(accuracy, int | float) else None,
            "epochs": metrics.get("epochs", len(run.history)),
            "layers": layers,
            "conv_layers": [r for r in layers if r["type"].startswith("Conv")],
            "summary": _summary_text(run),
            "limits": asdict(self.limits),
            "json_input": json_image_form(shape)
            + (
                ", white ink on black"
                if run.preparation.digits
                else ", prepared like the run's images"
            ),
        }
