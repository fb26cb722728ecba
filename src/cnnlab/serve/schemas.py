"""The shapes of the API's answers and of ``POST /api/predict``'s body, for the OpenAPI
document at ``/openapi.json`` (answers are built as plain dicts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cnnlab.serve.inputs import IMAGE_TYPES, JSON_TYPE, MULTIPART_TYPE, SIZE


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
