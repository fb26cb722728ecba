"""The FastAPI application behind ``cnnlab serve``: the drawing page and a prediction API.

Routes:

* ``GET /`` – the page: draw a digit, see the probabilities, the 28×28 image the model
  received and every convolution layer's feature maps (plain HTML/CSS/JS in ``static/``).
* ``POST /api/predict`` – classify one digit. The body is an image file (PNG, JPEG, GIF,
  BMP or WebP; raw with its ``Content-Type``, or as the ``file`` field of a
  ``multipart/form-data`` upload), which goes through :func:`cnnlab.data.prepare_digit`
  exactly as in ``cnnlab predict``; or JSON: a 28×28 array of grey levels 0..255 (white
  ink on black, already MNIST-style, used as is), bare or as ``{"image": [[...], ...]}``.
  ``?features=1`` adds each convolution layer's feature maps.
* ``GET /api/model`` – the model: name, classes, layers with output shapes, parameters,
  the summary table, test accuracy, and the request limits.
* ``GET /api/health`` and the OpenAPI document at ``/openapi.json``.

Every refused request gets a 4xx JSON answer ``{"detail": "..."}``: 400 for an unreadable
body, 413 for too many bytes or pixels, 415 for an unaccepted content type or image
format, 422 for JSON of the wrong shape or range. Image headers are checked before any
pixel is decoded, and the body size both from ``Content-Length`` and while reading.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from torch import nn

from cnnlab.data.prepare import prepare_digit
from cnnlab.errors import CnnlabError
from cnnlab.runs import Run, load_run

__all__ = ["ApiError", "Limits", "Predictor", "create_app", "layer_feature_maps"]

log = logging.getLogger("cnnlab.serve")

STATIC_DIR = Path(__file__).with_name("static")
#: Side of the MNIST-style image every request is turned into.
SIZE = 28
#: Accepted image content types and the decoder (PIL format) each one may hold.
IMAGE_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/webp": "WEBP",
}
IMAGE_FORMATS = frozenset(IMAGE_TYPES.values())
JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"
ACCEPTED_TYPES = (*IMAGE_TYPES, JSON_TYPE, MULTIPART_TYPE)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'self'",
    ),
]


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    #: Request body, in bytes (checked from Content-Length and while reading).
    max_body_bytes: int = 2_000_000
    #: Longest image side, in pixels (read from the header before decoding).
    max_side: int = 4096
    #: Image area, in pixels (read from the header before decoding).
    max_pixels: int = 4096 * 4096
    #: Feature-map channels returned per layer.
    max_channels: int = 64
    #: Images decoded at the same time (decoding a large image takes memory).
    max_concurrent_decodes: int = 2
    #: Requests prepared and classified at the same time (worker threads); more wait in line.
    max_concurrent_work: int = 2


class ApiError(Exception):
    """A refused request: an HTTP status and a one-line message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = " ".join(str(detail).split())


# ---------------------------------------------------------------------------------------
# Response schemas (for the OpenAPI document; responses are built as plain dicts)


class ClassProbability(BaseModel):
    """One class and its probability."""

    class_: str = Field(alias="class")
    probability: float


class FeatureMapLayer(BaseModel):
    """One convolution layer's output for the request's image."""

    layer: str = Field(description="the layer's name in the model, e.g. '0' or 'features.3'")
    index: int = Field(description="1 for the first convolution layer, 2 for the second, …")
    type: str
    title: str
    shape: list[int] = Field(description="[channels, height, width]")
    maps: list[str] = Field(description="one PNG data URL per channel (viridis, own range)")
    ranges: list[list[float]] = Field(description="each channel's [min, max]")


class PredictResponse(BaseModel):
    """What ``POST /api/predict`` answers."""

    prediction: str
    confidence: float
    top: list[ClassProbability]
    probabilities: dict[str, float]
    input: list[list[int]] = Field(description="the 28×28 uint8 image the model received")
    feature_maps: list[FeatureMapLayer] | None = None
    timing_ms: dict[str, float]


class ErrorResponse(BaseModel):
    """A refused request."""

    detail: str


GRID_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": SIZE,
    "maxItems": SIZE,
    "items": {
        "type": "array",
        "minItems": SIZE,
        "maxItems": SIZE,
        "items": {"type": "number", "minimum": 0, "maximum": 255},
    },
    "description": "28 rows of 28 grey levels 0..255, white ink on black (MNIST-style)",
}
PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            **{t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
            MULTIPART_TYPE: {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            JSON_TYPE: {
                "schema": {
                    "oneOf": [
                        GRID_SCHEMA,
                        {
                            "type": "object",
                            "properties": {"image": GRID_SCHEMA},
                            "required": ["image"],
                        },
                    ]
                }
            },
        },
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "unreadable body: not an image, truncated, not JSON"),
        (413, "body or image too large"),
        (415, "content type or image format not accepted"),
        (422, "JSON of the wrong shape or range, or a bad query parameter"),
    )
}


# ---------------------------------------------------------------------------------------
# Input checks


def check_image_header(data: bytes, limits: Limits) -> tuple[str, int, int]:
    """The format, width and height of an encoded image, read from its header only.

    Raises :class:`ApiError` for a body that is no image, a format outside
    :data:`IMAGE_FORMATS`, or dimensions over ``limits``; no pixel is decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = str(img.format), img.size
    except Image.DecompressionBombError:
        raise ApiError(
            413,
            f"image too large: over {limits.max_pixels / 1e6:.1f} megapixels "
            f"(at most {limits.max_side} pixels a side)",
        ) from None
    except Image.UnidentifiedImageError:
        raise ApiError(400, "the body is not an image (unrecognised file format)") from None
    except Exception as exc:  # PIL's header parsers raise many types on broken input
        raise ApiError(400, f"cannot read the image header ({type(exc).__name__})") from None
    if fmt not in IMAGE_FORMATS:
        raise ApiError(415, f"image format {fmt} is not accepted; send PNG, JPEG, GIF, BMP or WebP")
    if width < 1 or height < 1:
        raise ApiError(400, f"image has no pixels ({width}×{height})")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ApiError(
            413,
            f"image is {width}×{height} pixels; the limit is {limits.max_side} pixels a side "
            f"and {limits.max_pixels / 1e6:.1f} megapixels",
        )
    return fmt, width, height


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return f"{type(value).__name__} {str(value)[:20]!r}"


def parse_json_image(data: bytes) -> np.ndarray:
    """A 28×28 uint8 image from a JSON body: ``[[...] * 28]`` or ``{"image": [[...] * 28]}``.

    Values are grey levels 0..255 (integers or decimals, rounded), white ink on black.
    """
    try:
        obj = json.loads(data)
    except UnicodeDecodeError:
        raise ApiError(400, "the JSON body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"the body is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    except RecursionError:
        raise ApiError(400, "the JSON body is nested too deeply") from None
    if isinstance(obj, dict):
        if "image" not in obj:
            raise ApiError(422, "a JSON object needs an 'image' field holding a 28×28 array")
        obj = obj["image"]
    if not isinstance(obj, list) or len(obj) != SIZE:
        raise ApiError(422, f"expected a 28×28 array (28 rows of 28 numbers), got {_describe(obj)}")
    for i, row in enumerate(obj):
        if not isinstance(row, list) or len(row) != SIZE:
            raise ApiError(422, f"row {i}: expected 28 numbers, got {_describe(row)}")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ApiError(422, f"row {i}, column {j}: expected a number, got {_describe(v)}")
            if not (math.isfinite(v) and 0 <= v <= 255):
                raise ApiError(422, f"row {i}, column {j}: {v} is outside the grey levels 0..255")
    return np.rint(np.asarray(obj, dtype=np.float64)).astype(np.uint8)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------
# Feature maps and the model's description


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


def layer_feature_maps(model: nn.Module, x: torch.Tensor, max_channels: int = 64) -> list[dict]:
    """Each convolution layer's output for ``x`` (one image), as JSON-ready dicts.

    Wraps :func:`cnnlab.viz.features.feature_maps` (forward hooks, outputs before the
    activation); each channel becomes a small viridis PNG scaled to its own range.
    """
    from cnnlab.viz.features import feature_maps

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


def _layer_table(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """The model's leaf layers in run order with output shapes and parameter counts."""
    rows: list[dict[str, Any]] = []
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        shape = list(output.shape[1:]) if isinstance(output, torch.Tensor) else []
        rows.append(
            {
                "name": names.get(id(module), ""),
                "type": type(module).__name__,
                "output_shape": shape,
                "parameters": sum(p.numel() for p in module.parameters(recurse=False)),
            }
        )

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return rows


def _summary_text(run: Run) -> str:
    try:
        from cnnlab.summary import summary

        return summary(run.model, tuple(run.spec.input_size))
    except Exception as exc:  # the summary is a nicety; the page works without it
        log.warning("no summary table: %s", exc)
        return str(run.model)


# ---------------------------------------------------------------------------------------
# The predictor: preparation and inference, shared by the page and the API


class Predictor:
    """One loaded run, its lock, and the request → prediction pipeline."""

    def __init__(self, run: Run, limits: Limits) -> None:
        self.run = run
        self.limits = limits
        self.model_lock = threading.Lock()
        self.decode_slots = threading.BoundedSemaphore(max(1, limits.max_concurrent_decodes))
        self.device = next(run.model.parameters()).device
        run.model.eval()
        self._info: dict[str, Any] | None = None
        self._info_lock = threading.Lock()

    def prepare_image(self, data: bytes) -> np.ndarray:
        """Check an encoded image's header, then prepare it as ``cnnlab predict`` does."""
        check_image_header(data, self.limits)
        with self.decode_slots:
            try:
                return prepare_digit(data, SIZE)
            except CnnlabError as exc:
                message = str(exc)
                if message.startswith("bytes: "):
                    message = "the image: " + message[len("bytes: ") :]
                raise ApiError(400, message) from None
            except Exception as exc:  # a decoder failing on hostile input is the client's
                log.warning("image decoding failed: %r", exc)
                raise ApiError(400, f"cannot decode the image ({type(exc).__name__})") from None

    def predict(self, image: np.ndarray, features: bool = False) -> dict[str, Any]:
        """Probabilities, top classes and (optionally) feature maps for a 28×28 uint8 image."""
        x = self.run.preprocess(torch.from_numpy(np.ascontiguousarray(image))[None, None])
        x = x.to(self.device)
        timing: dict[str, float] = {}
        with self.model_lock, torch.inference_mode():
            start = time.perf_counter()
            probs = self.run.model(x).float().softmax(1)[0].cpu()
            timing["inference"] = (time.perf_counter() - start) * 1000
            maps = None
            if features:
                start = time.perf_counter()
                maps = layer_feature_maps(self.run.model, x, self.limits.max_channels)
                timing["features"] = (time.perf_counter() - start) * 1000
        classes = self.run.classes
        values = [float(v) for v in probs]
        order = sorted(range(len(values)), key=lambda i: -values[i])
        result: dict[str, Any] = {
            "prediction": classes[order[0]],
            "confidence": round(values[order[0]], 6),
            "top": [{"class": classes[i], "probability": round(values[i], 6)} for i in order[:3]],
            "probabilities": {c: round(v, 6) for c, v in zip(classes, values, strict=True)},
            "input": image.tolist(),
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
        dummy = run.preprocess(torch.zeros(1, 1, SIZE, SIZE, dtype=torch.uint8)).to(self.device)
        with self.model_lock:
            layers = _layer_table(model, dummy)
        metrics = run.metrics or {}
        accuracy = metrics.get("test_accuracy")
        return {
            "name": run.spec.name,
            "description": run.spec.description,
            "source": run.spec.source,
            "run": run.path.name,
            "dataset": run.dataset,
            "classes": list(run.classes),
            "input_size": list(run.spec.input_size),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "test_accuracy": float(accuracy) if isinstance(accuracy, int | float) else None,
            "epochs": metrics.get("epochs", len(run.history)),
            "layers": layers,
            "conv_layers": [r for r in layers if r["type"].startswith("Conv")],
            "summary": _summary_text(run),
            "limits": asdict(self.limits),
            "json_input": "a 28×28 array of grey levels 0..255, white ink on black",
        }


# ---------------------------------------------------------------------------------------
# ASGI guard: body size limit and security headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Guard:
    """Refuse bodies over ``max_bytes`` (by Content-Length, and while reading); add headers."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0:
                    await self._refuse(scope, receive, send_with_headers, 400, "bad Content-Length")
                    return
                if length > self.max_bytes:
                    await self._refuse(scope, receive, send_with_headers, 413, self._too_big())
                    return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(413, self._too_big())
            return message

        await self.app(scope, limited_receive, send_with_headers)

    def _too_big(self) -> str:
        return f"request body too large: the limit is {self.max_bytes:,} bytes"

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        response = JSONResponse({"detail": detail}, status_code=status)
        response.headers["connection"] = "close"
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------
# The application


def create_app(
    run: Run | str | Path, *, limits: Limits | None = None, warm_up: bool = True
) -> FastAPI:
    """The web app for one trained run (a :class:`~cnnlab.runs.Run` or its folder).

    With ``warm_up``, one blank image is classified (with feature maps) and the model's
    description built before the app is returned, so the first visitor does not wait.
    """
    if not isinstance(run, Run):
        run = load_run(run)
    limits = limits or Limits()
    predictor = Predictor(run, limits)
    if warm_up:
        predictor.predict(np.zeros((SIZE, SIZE), dtype=np.uint8), features=True)
        predictor.info()
    app = FastAPI(
        title="cnnlab",
        summary=f"Digit recognition with {run.spec.name}",
        description="Draw a digit and watch the network think; a small prediction API.",
        docs_url=None,  # the bundled Swagger/ReDoc pages load scripts from a CDN
        redoc_url=None,
    )
    app.state.predictor = predictor
    work_slots = anyio.CapacityLimiter(max(1, limits.max_concurrent_work))
    app.add_middleware(Guard, max_bytes=limits.max_body_bytes)  # type: ignore[arg-type]

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg"))
        return JSONResponse({"detail": "; ".join(map(str, parts)) or "invalid request"}, 422)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, 500)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/health", summary="Liveness check")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": run.spec.name}

    @app.get("/api/model", summary="The model: layers, shapes, parameters, summary")
    async def model_info() -> JSONResponse:
        return JSONResponse(await anyio.to_thread.run_sync(predictor.info, limiter=work_slots))

    @app.post(
        "/api/predict",
        summary="Classify one digit",
        description=(
            "Send an image file (raw, with its Content-Type, or as the `file` field of a "
            "multipart upload; prepared MNIST-style like `cnnlab predict`), or JSON: a 28×28 "
            "array of grey levels 0..255, white ink on black, used as is (bare or as "
            '`{"image": [...]}`). `features=1` adds each convolution layer\'s feature maps.'
        ),
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra=PREDICT_OPENAPI,
    )
    async def predict(
        request: Request,
        features: bool = Query(False, description="include each conv layer's feature maps"),
    ) -> JSONResponse:
        start = time.perf_counter()
        media = _media_type(request)
        if media not in ACCEPTED_TYPES:
            raise ApiError(
                415,
                f"content type {media or '(none)'!r} is not accepted; send an image "
                "(image/png, image/jpeg, image/gif, image/bmp, image/webp), a multipart "
                "upload with a 'file' field, or application/json",
            )
        if media == MULTIPART_TYPE:
            data = await _read_upload(request)
            is_json = False
        else:
            data = await request.body()
            is_json = media == JSON_TYPE
        if not data:
            raise ApiError(400, "the request body is empty")
        read_ms = (time.perf_counter() - start) * 1000

        def work() -> dict[str, Any]:
            t = time.perf_counter()
            image = parse_json_image(data) if is_json else predictor.prepare_image(data)
            prepare_ms = (time.perf_counter() - t) * 1000
            result = predictor.predict(image, features)
            result["timing_ms"] = {"read": read_ms, "prepare": prepare_ms, **result["timing_ms"]}
            return result

        result = await anyio.to_thread.run_sync(work, limiter=work_slots)
        result["timing_ms"]["total"] = (time.perf_counter() - start) * 1000
        result["timing_ms"] = {k: round(v, 3) for k, v in result["timing_ms"].items()}
        return JSONResponse(result)

    return app


async def _read_upload(request: Request) -> bytes:
    """The bytes of the multipart body's image file (field ``file``, or its only file)."""
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            upload = files[0] if files else None
        if upload is None:
            raise ApiError(422, "the multipart upload needs an image file in a field named 'file'")
        part = (upload.content_type or "").split(";", 1)[0].strip().lower()
        if part and part not in IMAGE_TYPES and part != "application/octet-stream":
            raise ApiError(
                415,
                f"the uploaded file's type {part!r} is not accepted; "
                "upload a PNG, JPEG, GIF, BMP or WebP image",
            )
        return await upload.read()
    finally:
        await form.close()
