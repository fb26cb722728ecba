"""The explorable page: every layer of the run's network for the current picture.

Routes (added to the app by :func:`add_explore_routes`):

* ``GET /explore`` – the page (``static/explore.html``, ``explore.js``, ``explore.css``):
  each layer a column of its maps, dense layers as bars, a click on any unit explains it,
  the output layer's softmax in numbers, a saliency overlay and a convolution lesson.
* ``GET /api/explore/model`` – the layers the walk finds (name, type, kind, shapes,
  parameters), the classes, the input shape and the lesson's classical kernels.
* ``POST /api/explore`` – one picture (the bodies ``POST /api/predict`` takes) → the
  prepared image, every layer's output (maps quantised per channel, see
  :func:`cnnlab.serve.explain.quantise`), the output explained and, with
  ``?saliency=gradcam|ig``, a saliency map: everything the page redraws, in one answer.
* ``POST /api/explore/unit?layer=&c=&y=&x=`` – one unit's arithmetic for a prepared
  image (JSON, as the page received it): receptive field, kernels, input patch, sums.

Refused requests are answered 4xx with ``{"detail": ...}`` like every route of the app.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, Literal

import anyio
import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from cnnlab.conv.filters import get_kernel, kernel_names
from cnnlab.predict import is_blank
from cnnlab.serve.explain import (
    Step,
    describe_steps,
    explain_output,
    explain_unit,
    layer_outputs,
    picture,
    quantise,
    trace_steps,
)
from cnnlab.serve.inputs import ApiError, parse_json_image, read_image_body
from cnnlab.serve.saliency import saliency_map
from cnnlab.serve.schemas import ERRORS, ExploreResponse, UnitResponse, predict_openapi
from cnnlab.serve.service import ModelService, sample_image

__all__ = ["Explorer", "add_explore_routes", "lesson_kernels"]


def lesson_kernels() -> list[dict[str, Any]]:
    """The classical kernels the convolution lesson offers (:mod:`cnnlab.conv.filters`;
    the Sobel magnitude, two kernels combined, is left out)."""
    out = []
    for name in kernel_names():
        k = get_kernel(name)
        if k.parts:
            continue
        out.append(
            {
                "name": name,
                "label": k.name,
                "matrix": [[round(float(v), 5) for v in row] for row in k.matrix],
                "description": k.description,
                "display": k.display,
            }
        )
    return out


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


class Explorer:
    """The page's model work for one run, under the app's model lock."""

    def __init__(self, service: ModelService) -> None:
        self.service = service
        self.run = service.run
        self._model_info: dict[str, Any] | None = None

    def _steps(self, image: np.ndarray) -> tuple[torch.Tensor, list[Step]]:
        batch = torch.from_numpy(np.ascontiguousarray(image))[None]
        x = self.run.predictor.inputs(batch).contiguous()
        return x, trace_steps(self.run.model, x)

    def model_info(self) -> dict[str, Any]:
        """The layers (walked on a sample picture), classes and lesson kernels (built once)."""
        if self._model_info is None:
            with self.service.model_lock:
                x, steps = self._steps(sample_image(self.run.preparation.shape))
            self._model_info = {
                "name": self.run.spec.name,
                "run": self.run.path.name,
                "classes": list(self.run.classes),
                "preparation": self.run.preparation.to_dict(),
                "input_shape": list(self.run.preparation.shape),
                "model_input_shape": list(x.shape[1:]),
                "layers": describe_steps(steps),
                "kernels": lesson_kernels(),
                "max_channels": self.service.limits.max_channels,
            }
        return self._model_info

    def explore(self, image: np.ndarray, saliency: str | None) -> dict[str, Any]:
        """Every layer's output, the output explained and the optional saliency map."""
        timing: dict[str, float] = {}
        start = time.perf_counter()
        with self.service.model_lock:
            x, steps = self._steps(image)
            timing["forward"] = (time.perf_counter() - start) * 1000
            t = time.perf_counter()
            layers = layer_outputs(steps, self.service.limits.max_channels)
            output = explain_output(steps, steps[-1].output[0], list(self.run.classes))
            timing["encode"] = (time.perf_counter() - t) * 1000
            sal = None
            if saliency:
                t = time.perf_counter()
                black = np.zeros_like(image)
                baseline = self.run.predictor.inputs(torch.from_numpy(black)[None]).contiguous()
                try:
                    values, about = saliency_map(
                        saliency, self.run.model, x, int(output["top"]), baseline
                    )
                except ValueError as exc:  # e.g. Grad-CAM of a model without convolutions
                    raise ApiError(422, str(exc)) from None
                data, lo, hi = quantise(values[None])
                sal = {**about, "data": data, "lo": lo[0], "hi": hi[0]}
                timing["saliency"] = (time.perf_counter() - t) * 1000
        shape, shown = picture(image, x)
        classes = list(self.run.classes)
        return {
            "blank": bool(self.run.preparation.digits and is_blank(image)),
            "prediction": classes[int(output["top"])],
            "image": {"shape": list(image.shape), "data": _b64(image)},
            "picture": {"shape": shape, "data": shown},
            "layers": layers,
            "output": output,
            "saliency": sal,
            "timing_ms": timing,
        }

    def unit(self, image: np.ndarray, layer: int, c: int, y: int, x: int) -> dict[str, Any]:
        """One unit's arithmetic (:func:`cnnlab.serve.explain.explain_unit`)."""
        with self.service.model_lock:
            inp, steps = self._steps(image)
            if not 0 <= layer < len(steps):
                raise ApiError(422, f"layer: {layer} is not a layer id (0..{len(steps) - 1})")
            try:
                return explain_unit(steps, layer, c, y, x, tuple(inp.shape[2:]))
            except ValueError as exc:
                raise ApiError(422, str(exc)) from None


def add_explore_routes(
    app: FastAPI,
    service: ModelService,
    static_dir: Any,
    run_work: Callable[[Callable[[], Any]], Any],
    admission: anyio.CapacityLimiter,
) -> Explorer:
    """The explorable page's routes on ``app``; ``run_work(fn)`` runs model work in the
    app's worker threads; ``admission`` bounds requests read or worked on at once."""
    explorer = Explorer(service)
    shape = service.run.preparation.shape

    @app.get("/explore", include_in_schema=False)
    async def explore_page() -> FileResponse:
        return FileResponse(static_dir / "explore.html", media_type="text/html")

    @app.get("/api/explore/model", summary="The layers the explorable page shows")
    async def explore_model() -> JSONResponse:
        return JSONResponse(await run_work(explorer.model_info))

    @app.post(
        "/api/explore",
        summary="Every layer's output for one picture",
        description="The bodies `POST /api/predict` takes; answers the prepared image, "
        "each layer's output (maps as base64 uint8 levels with each channel's range, "
        "vectors as numbers), the output layer explained and an optional saliency map.",
        response_model=ExploreResponse,
        responses=ERRORS,
        openapi_extra=predict_openapi(shape),
    )
    async def explore(
        request: Request,
        saliency: Literal["none", "gradcam", "ig"] = Query(
            "none", description="saliency map: Grad-CAM or integrated gradients"
        ),
    ) -> JSONResponse:
        async with admission:
            start = time.perf_counter()
            data, is_json = await read_image_body(request)

            def work() -> dict[str, Any]:
                t = time.perf_counter()
                image = parse_json_image(data, shape) if is_json else service.prepare_image(data)
                prepare_ms = (time.perf_counter() - t) * 1000
                result = explorer.explore(image, None if saliency == "none" else saliency)
                result["timing_ms"] = {"prepare": prepare_ms, **result["timing_ms"]}
                return result

            result = await run_work(work)
            result["timing_ms"]["total"] = (time.perf_counter() - start) * 1000
            result["timing_ms"] = {k: round(v, 3) for k, v in result["timing_ms"].items()}
            return JSONResponse(result)

    @app.post(
        "/api/explore/unit",
        summary="One unit's arithmetic for a prepared image",
        description="The body is the prepared image as JSON (as `POST /api/predict` takes "
        "it); `layer` is a layer id from `GET /api/explore/model`, `c` the channel (or "
        "the unit of a dense layer), `y` and `x` the position in the map.",
        response_model=UnitResponse,
        responses=ERRORS,
        openapi_extra=predict_openapi(shape),
    )
    async def explore_unit(
        request: Request,
        layer: int = Query(..., ge=0, le=10_000),
        c: int = Query(..., ge=0, le=1_000_000),
        y: int = Query(0, ge=0, le=100_000),
        x: int = Query(0, ge=0, le=100_000),
    ) -> JSONResponse:
        async with admission:
            data, is_json = await read_image_body(request)

            def work() -> dict[str, Any]:
                image = parse_json_image(data, shape) if is_json else service.prepare_image(data)
                return explorer.unit(image, layer, c, y, x)

            return JSONResponse(await run_work(work))

    return explorer
