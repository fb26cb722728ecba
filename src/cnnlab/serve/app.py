"""The FastAPI application behind ``cnnlab serve``: the page and a prediction API.

Routes:

* ``GET /`` – the page: draw a digit (digit runs) or upload a photo (photo runs), see the
  probabilities by class name, the image the model received and every convolution
  layer's feature maps (plain HTML/CSS/JS in ``static/``).
* ``POST /api/predict`` – classify one picture. The body is an image file (PNG, JPEG, GIF,
  BMP or WebP; raw with its ``Content-Type``, or as the ``file`` field of a
  ``multipart/form-data`` upload), prepared with the run's
  :class:`~cnnlab.data.preparation.ImagePreparation` exactly as in ``cnnlab predict``
  (MNIST-style for digit runs, decoded and resized like the training images for photo
  runs); or JSON: an image already prepared, used as is, bare or as ``{"image": [...]}``
  (H rows of W grey levels 0..255 for a one-channel run, e.g. 28×28 white ink on black;
  H rows of W ``[red, green, blue]`` triples for a colour run).
  ``?features=1`` adds each convolution layer's feature maps.
* ``POST /api/read`` – read a handwritten number (digit runs): the body is an image
  file, as for ``/api/predict``; the answer is the number and, for each digit left to
  right, its class, confidence, box and the 28×28 image the model received (as
  ``cnnlab read``).
* ``GET /api/model`` – the model: name, classes, how pictures are prepared and the input
  shape, layers with output shapes, parameters, the summary table, test accuracy, and
  the request limits.
* ``GET /explore`` and ``/api/explore…`` – the explorable page: every layer, any unit's
  arithmetic, the softmax, saliency and a convolution lesson (:mod:`.explore`).
* ``GET /api/health`` and the OpenAPI document at ``/openapi.json``.

Every refused request gets a 4xx JSON answer ``{"detail": "..."}`` (:mod:`.inputs`); the
Host, the body's size and time are checked and security headers added in front of every
route (:mod:`.middleware`); the model work runs in worker threads (:mod:`.service`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnlab.runs import Run, load_run
from cnnlab.serve.explore import add_explore_routes
from cnnlab.serve.inputs import ApiError, Limits, parse_json_image, read_image_body
from cnnlab.serve.middleware import Guard
from cnnlab.serve.schemas import ERRORS, PredictResponse, predict_openapi
from cnnlab.serve.service import ModelService, sample_image

__all__ = ["create_app"]

STATIC_DIR = Path(__file__).with_name("static")

PREDICT_DESCRIPTION = (
    "Send an image file (raw, with its Content-Type, or as the `file` field of a "
    "multipart upload; prepared like the run's images, as `cnnlab predict` does: "
    "MNIST-style for digits, decoded and resized for photos), or JSON: the prepared "
    'image used as is (bare or as `{"image": [...]}`): H rows of W grey levels 0..255 '
    "for a one-channel run, H rows of W [red, green, blue] triples for a colour run "
    "(`GET /api/model` gives `input_shape`). `features=1` adds each convolution layer's "
    "feature maps."
)


def create_app(
    run: Run | str | Path,
    *,
    limits: Limits | None = None,
    warm_up: bool = True,
    allowed_hosts: frozenset[str] | None = None,
) -> FastAPI:
    """The web app for one trained run (a :class:`~cnnlab.runs.Run` or its folder).

    With ``warm_up``, one stroke (an image of the run's shape) is classified (with feature maps) and the model's
    description built before the app is returned, so the first visitor does not wait.
    With ``allowed_hosts`` (see :func:`cnnlab.serve.hosts.allowed_hosts`), a request
    whose ``Host`` is not one of them, nor the address it reached, is refused with 400.
    """
    if not isinstance(run, Run):
        run = load_run(run)
    limits = limits or Limits()
    service = ModelService(run, limits)
    if warm_up:
        service.predict(sample_image(run.preparation.shape), features=True)
        service.info()
    what = "Digit recognition" if run.preparation.digits else "Photo classification"
    app = FastAPI(
        title="cnnlab",
        summary=f"{what} with {run.spec.name}",
        description="Draw a digit or upload a photo and watch the network think; "
        "a small prediction API.",
        docs_url=None,  # the bundled Swagger/ReDoc pages load scripts from a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(
        Guard,  # type: ignore[arg-type]
        max_bytes=limits.max_body_bytes,
        body_timeout=limits.body_timeout,
        allowed_hosts=allowed_hosts,
    )
    _add_error_handlers(app)
    _add_routes(
        app,
        service,
        anyio.CapacityLimiter(max(1, limits.max_concurrent_work)),
        anyio.CapacityLimiter(max(1, limits.max_queued_requests)),
    )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error becomes ``{"detail": "one line"}`` with its status."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        # After a body deadline the rest of the body may still arrive: not a new request.
        headers = {"connection": "close"} if exc.status == 408 else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

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

    # Any other exception reaches the Guard middleware, which logs it once and answers 500;
    # a handler for Exception here would be re-raised by Starlette and logged twice.


def _add_routes(
    app: FastAPI,
    service: ModelService,
    work_slots: anyio.CapacityLimiter,
    admission: anyio.CapacityLimiter,
) -> None:
    """The page, its static files and the API; model work runs in ``work_slots`` threads,
    and at most ``admission`` predictions are read, waiting or worked on at once."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    async def run_work(fn: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, limiter=work_slots)

    add_explore_routes(app, service, STATIC_DIR, run_work, admission)

    @app.get("/api/health", summary="Liveness check")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": service.run.spec.name}

    @app.get("/api/model", summary="The model: layers, shapes, parameters, summary")
    async def model_info() -> JSONResponse:
        return JSONResponse(await anyio.to_thread.run_sync(service.info, limiter=work_slots))

    @app.post(
        "/api/predict",
        summary="Classify one picture",
        description=PREDICT_DESCRIPTION,
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra=predict_openapi(service.run.preparation.shape),
    )
    async def predict(
        request: Request,
        features: bool = Query(False, description="include each conv layer's feature maps"),
    ) -> JSONResponse:
        async with admission:  # before the body is read: a waiting body stays unread
            return await _predict(request, features)

    async def _predict(request: Request, features: bool) -> JSONResponse:
        start = time.perf_counter()
        data, is_json = await read_image_body(request)
        read_ms = (time.perf_counter() - start) * 1000

        def work() -> dict[str, Any]:
            t = time.perf_counter()
            if is_json:
                image = parse_json_image(data, service.run.preparation.shape)
            else:
                image = service.prepare_image(data)
            prepare_ms = (time.perf_counter() - t) * 1000
            result = service.predict(image, features)
            result["timing_ms"] = {"read": read_ms, "prepare": prepare_ms, **result["timing_ms"]}
            return result

        result = await anyio.to_thread.run_sync(work, limiter=work_slots)
        result["timing_ms"]["total"] = (time.perf_counter() - start) * 1000
        result["timing_ms"] = {k: round(v, 3) for k, v in result["timing_ms"].items()}
        return JSONResponse(result)

    @app.post(
        "/api/read",
        summary="Read a handwritten number",
        description="Send a photo of a handwritten number as an image file (raw, with its "
        "Content-Type, or as the `file` field of a multipart upload). Every digit is found, "
        "prepared MNIST-style and read left to right, as `cnnlab read` does. Digit runs only.",
        responses=ERRORS,
    )
    async def read(request: Request) -> JSONResponse:
        async with admission:
            start = time.perf_counter()
            data, is_json = await read_image_body(request)
            if is_json:
                raise ApiError(415, "send the photo as an image file, not JSON")
            result = await anyio.to_thread.run_sync(service.read, data, limiter=work_slots)
            result["timing_ms"]["total"] = (time.perf_counter() - start) * 1000
            result["timing_ms"] = {k: round(v, 3) for k, v in result["timing_ms"].items()}
            return JSONResponse(result)
