"""The shapes of the API's answers and of ``POST /api/predict``'s body, for the OpenAPI
document at ``/openapi.json`` (answers are built as plain dicts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cnnlab.serve.inputs import IMAGE_TYPES, JSON_TYPE, MULTIPART_TYPE


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

    prediction: str | None = Field(description="the class; null for a blank image")
    blank: bool = Field(description="true when the image has no ink (nothing is predicted)")
    confidence: float | None = None
    top: list[ClassProbability] | None = None
    probabilities: dict[str, float] | None = None
    input: list[list[Any]] = Field(
        description="the image the model received: H rows of W grey levels (one channel, "
        "e.g. 28×28 for digits) or of W [red, green, blue] triples (colour)"
    )
    feature_maps: list[FeatureMapLayer] | None = None
    timing_ms: dict[str, float]


class ErrorResponse(BaseModel):
    """A refused request."""

    detail: str


def image_schema(shape: tuple[int, int, int]) -> dict[str, Any]:
    """The JSON Schema of a prepared image of ``shape`` (C, H, W) sent as a JSON array."""
    channels, height, width = shape
    level: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 255}
    if channels == 1:
        pixel, words = level, f"{height} rows of {width} grey levels 0..255"
    else:
        pixel = {"type": "array", "minItems": channels, "maxItems": channels, "items": level}
        words = f"{height} rows of {width} [red, green, blue] levels 0..255"
    return {
        "type": "array",
        "minItems": height,
        "maxItems": height,
        "items": {"type": "array", "minItems": width, "maxItems": width, "items": pixel},
        "description": f"{words}, prepared like the run's images (used as is)",
    }


def predict_openapi(shape: tuple[int, int, int]) -> dict[str, Any]:
    """``POST /api/predict``'s request body for a run whose images have ``shape``."""
    grid = image_schema(shape)
    return {
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
                            grid,
                            {
                                "type": "object",
                                "properties": {"image": grid},
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


class ExploreLayer(BaseModel):
    """One layer's output in ``POST /api/explore``'s answer."""

    id: int = Field(description="the layer's id in GET /api/explore/model")
    maps: str | None = Field(
        None,
        description="map stacks: base64 of C×H×W uint8 levels, each channel scaled "
        "between its lo and hi",
    )
    lo: list[float] | None = None
    hi: list[float] | None = None
    values: list[float] | None = Field(None, description="vectors: the values themselves")
    flatten: bool | None = Field(None, description="a Flatten: the maps before it")


class ExploreResponse(BaseModel):
    """What ``POST /api/explore`` answers."""

    blank: bool
    prediction: str
    image: dict[str, Any] = Field(description="the prepared image: shape and base64 bytes")
    picture: dict[str, Any] = Field(description="what the page draws, in model-input pixels")
    layers: list[ExploreLayer]
    output: dict[str, Any] = Field(description="logits, softmax and why the top class won")
    saliency: dict[str, Any] | None = None
    timing_ms: dict[str, float]


class UnitResponse(BaseModel, extra="allow"):
    """What ``POST /api/explore/unit`` answers; the other fields depend on ``kind``."""

    id: int
    name: str
    type: str
    kind: str = Field(description="conv, pool, act, bn, dense or other")
    unit: list[int]
    value: float = Field(description="the unit's output as the layer computed it")
    receptive_field: list[int] = Field(description="[top, left, bottom, right], inclusive")
    z: float | None = Field(None, description="the unit's value as the arithmetic gives it")
