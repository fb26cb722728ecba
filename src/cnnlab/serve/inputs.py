"""What a request may hold, and reading it: content types, image headers, JSON images.

Every refused request becomes an :class:`ApiError`, a 4xx status with a one-line message:
400 for an unreadable body, 413 for too many bytes or pixels, 415 for an unaccepted
content type or image format, 422 for JSON of the wrong shape or range. Image headers
are checked before any pixel is decoded.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile

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


@dataclass(frozen=True)
class Limits:
    """What one request may hold."""

    #: Request body, in bytes (checked from Content-Length and while reading).
    max_body_bytes: int = 2_000_000
    #: Longest image side, in pixels (read from the header before decoding).
    max_side: int = 4096
    #: Image area, in pixels (read from the header before decoding). The model sees
    #: 28×28 and the page sends 280×280; decoding costs tens of bytes a pixel, so the
    #: library's 40-megapixel limit would let one request take gigabytes.
    max_pixels: int = 2_000_000
    #: Feature-map channels returned per layer.
    max_channels: int = 64
    #: Images opened and decoded at the same time (header read included): the peak
    #: decoding memory is about this many times that of the largest accepted image.
    max_concurrent_decodes: int = 1
    #: Requests prepared and classified at the same time (worker threads); more wait in line.
    max_concurrent_work: int = 2
    #: Prediction requests being read, waiting or worked on at once; more wait before
    #: their body is read (it stays with the client), so that many clients sending the
    #: largest body do not hold that many bodies in memory.
    max_queued_requests: int = 16
    #: Seconds a connection may take to send a request head (from connecting, or from
    #: the previous answer); then it is closed.
    header_timeout: float = 10.0
    #: Seconds a request may take to send its body once the server starts reading it;
    #: then 408 and the connection is closed.
    body_timeout: float = 30.0
    #: Seconds an idle keep-alive connection stays open after an answer.
    keep_alive_timeout: int = 5
    #: Open connections at once; beyond this a new one is answered 503 and closed.
    max_connections: int = 100


class ApiError(Exception):
    """A refused request: an HTTP status and a one-line message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = " ".join(str(detail).split())


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


def _check_number(v: Any, where: str, levels: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ApiError(422, f"{where}: expected a number, got {_describe(v)}")
    if not (math.isfinite(v) and 0 <= v <= 255):
        raise ApiError(422, f"{where}: {v} is outside the {levels} 0..255")


def json_image_form(shape: tuple[int, int, int]) -> str:
    """The JSON array a run of image ``shape`` (C, H, W) takes, in words."""
    channels, height, width = shape
    if channels == 1:
        return f"a {height}×{width} array of grey levels 0..255"
    return f"a {height}×{width}×3 array of [red, green, blue] levels 0..255"


def parse_json_image(data: bytes, shape: tuple[int, int, int] = (1, SIZE, SIZE)) -> np.ndarray:
    """A (C, H, W) uint8 image of ``shape`` from a JSON body: the array bare or as
    ``{"image": [...]}``.

    A one-channel ``shape`` takes H rows of W grey levels; a three-channel one H rows of W
    ``[red, green, blue]`` triples (H×W×3, as images are usually held). Values are levels
    0..255 (integers or decimals, rounded), already prepared like the run's images: the
    array is used as is.
    """
    channels, height, width = shape
    try:
        # Integers are read as floats: a 400-digit integer would overflow the range check
        # and one over 4,300 digits would not convert at all; as floats they are just inf.
        obj = json.loads(data, parse_int=float)
    except UnicodeDecodeError:
        raise ApiError(400, "the JSON body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"the body is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    except RecursionError:
        raise ApiError(400, "the JSON body is nested too deeply") from None
    except ValueError as exc:  # any other refusal of the parser is still the body's fault
        raise ApiError(400, f"the body is not valid JSON ({exc})") from None
    form = json_image_form(shape)
    if isinstance(obj, dict):
        if "image" not in obj:
            raise ApiError(422, f"a JSON object needs an 'image' field holding {form}")
        obj = obj["image"]
    item = "numbers" if channels == 1 else "[red, green, blue] triples"
    if not isinstance(obj, list) or len(obj) != height:
        raise ApiError(
            422, f"expected {form} ({height} rows of {width} {item}), got {_describe(obj)}"
        )
    for i, row in enumerate(obj):
        if not isinstance(row, list) or len(row) != width:
            raise ApiError(422, f"row {i}: expected {width} {item}, got {_describe(row)}")
        for j, v in enumerate(row):
            where = f"row {i}, column {j}"
            if channels == 1:
                _check_number(v, where, "grey levels")
                continue
            if not isinstance(v, list) or len(v) != channels:
                raise ApiError(
                    422, f"{where}: expected [red, green, blue] levels, got {_describe(v)}"
                )
            for value in v:
                _check_number(value, where, "colour levels")
    pixels = np.rint(np.asarray(obj, dtype=np.float64)).astype(np.uint8)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower-case."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_upload(request: Request) -> bytes:
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


async def read_image_body(request: Request) -> tuple[bytes, bool]:
    """The bytes of ``POST /api/predict``'s image and whether they are JSON; an
    unaccepted content type is a 415, an empty body a 400."""
    media = media_type(request)
    if media not in ACCEPTED_TYPES:
        raise ApiError(
            415,
            f"content type {media or '(none)'!r} is not accepted; send an image "
            "(image/png, image/jpeg, image/gif, image/bmp, image/webp), a multipart "
            "upload with a 'file' field, or application/json",
        )
    if media == MULTIPART_TYPE:
        data = await read_upload(request)
    else:
        data = await request.body()
    if not data:
        raise ApiError(400, "the request body is empty")
    return data, media == JSON_TYPE
