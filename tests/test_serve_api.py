"""The web app's API: predictions from images and JSON, the model, limits, bad requests."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cnnlab.data import prepare_digit  # noqa: E402
from cnnlab.serve import Limits, create_app  # noqa: E402


def vertical_stroke_png(size: int = 280, fmt: str = "PNG") -> bytes:
    """A white vertical bar on black: a drawn "1"."""
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).line(
        [(size // 2, size // 7), (size // 2, size * 6 // 7)], fill=255, width=20
    )
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width``×``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


GRID = [[0] * 28 for _ in range(28)]
for _r in range(5, 23):
    GRID[_r][13] = GRID[_r][14] = 255


@pytest.fixture(scope="module")
def app(digits_run: Path):  # noqa: ANN201
    return create_app(digits_run, limits=Limits(max_body_bytes=200_000))


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:  # noqa: ANN001
    with TestClient(app) as c:
        yield c


def test_page_and_static_files_are_local(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("base.css", "pad.js", "app.js", "style.css"):
        res = client.get(f"/static/{name}")
        assert res.status_code == 200, name
        assert "http://" not in res.text and "https://" not in res.text, name
    assert "http://" not in page.text and "https://" not in page.text


def test_model_description(client: TestClient) -> None:
    info = client.get("/api/model").json()
    assert info["name"] == "seed000-cnn"
    assert info["classes"] == [str(i) for i in range(10)]
    assert info["parameters"] == 206_922
    assert [layer["name"] for layer in info["conv_layers"]] == ["0", "3"]
    assert info["conv_layers"][0]["output_shape"] == [16, 28, 28]
    assert "Total params" in info["summary"]
    assert info["limits"]["max_body_bytes"] == 200_000


def test_openapi_document(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    predict = doc["paths"]["/api/predict"]["post"]
    content = predict["requestBody"]["content"]
    assert {"image/png", "multipart/form-data", "application/json"} <= set(content)
    assert {"200", "400", "413", "415", "422"} <= set(predict["responses"])
    assert "/api/model" in doc["paths"]
    assert client.get("/docs").status_code == 404  # Swagger UI would load a CDN


def test_predict_png_matches_cnnlab_predict(client: TestClient, digits_run: Path) -> None:
    from cnnlab.runs import load_run

    png = vertical_stroke_png()
    res = client.post("/api/predict", content=png, headers={"Content-Type": "image/png"})
    assert res.status_code == 200, res.text
    data = res.json()
    expected_input = prepare_digit(png)
    assert np.array_equal(np.array(data["input"], dtype=np.uint8), expected_input)
    probs = load_run(digits_run).predict(expected_input[None]).numpy()[0]
    assert data["prediction"] == str(int(probs.argmax()))
    assert sum(data["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert data["probabilities"][data["prediction"]] == pytest.approx(float(probs.max()), abs=1e-5)
    assert data["top"][0] == {"class": data["prediction"], "probability": data["confidence"]}
    assert len(data["top"]) == 3
    assert "feature_maps" not in data
    assert {"read", "prepare", "inference", "total"} <= set(data["timing_ms"])


def test_predict_with_feature_maps(client: TestClient) -> None:
    png = vertical_stroke_png()
    res = client.post("/api/predict?features=1", content=png, headers={"Content-Type": "image/png"})
    assert res.status_code == 200, res.text
    maps = res.json()["feature_maps"]
    assert [(m["layer"], m["type"], m["shape"]) for m in maps] == [
        ("0", "Conv2d", [16, 28, 28]),
        ("3", "Conv2d", [32, 14, 14]),
    ]
    assert len(maps[1]["maps"]) == 32 and len(maps[1]["ranges"]) == 32
    url = maps[0]["maps"][0]
    assert url.startswith("data:image/png;base64,")
    tile = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert tile.size == (28, 28)


def test_multipart_upload_and_formats(client: TestClient) -> None:
    raw = client.post(
        "/api/predict", content=vertical_stroke_png(), headers={"Content-Type": "image/png"}
    ).json()
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("BMP", "image/bmp")):
        files = {"file": (f"digit.{fmt.lower()}", vertical_stroke_png(fmt=fmt), mime)}
        res = client.post("/api/predict", files=files)
        assert res.status_code == 200, (fmt, res.text)
        assert res.json()["prediction"] == raw["prediction"], fmt


def test_json_grid_is_used_as_is(client: TestClient) -> None:
    for body in (GRID, {"image": GRID}, [[float(v) for v in row] for row in GRID]):
        res = client.post("/api/predict", json=body)
        assert res.status_code == 200, res.text
        assert res.json()["input"] == GRID


def _grid_with(number: str) -> bytes:
    """A JSON 28×28 grid of zeros whose last cell is the literal ``number``."""
    rows = ["[" + ",".join(["0"] * 28) + "]"] * 27
    rows.append("[" + ",".join(["0"] * 27 + [number]) + "]")
    return ("[" + ",".join(rows) + "]").encode()


def _bad_requests() -> list[tuple[str, bytes, str, int, str]]:
    png = vertical_stroke_png()
    tiff = io.BytesIO()
    Image.new("L", (20, 20)).save(tiff, format="TIFF")
    grid_27 = json.dumps([[0] * 27] * 28).encode()
    return [
        ("truncated png", png[: len(png) // 2], "image/png", 400, "truncated"),
        ("png signature only", png[:8], "image/png", 400, "image"),
        ("text as png", b"hello, I am not a picture\n", "image/png", 400, "not an image"),
        ("text file", b"hello\n", "text/plain", 415, "not accepted"),
        ("no content type", png, "", 415, "not accepted"),
        ("20000x20000 header", png_header(20000, 20000), "image/png", 413, "too large"),
        ("too wide", png_header(5000, 10), "image/png", 413, "5000×10"),
        ("tiff", tiff.getvalue(), "image/png", 415, "TIFF"),
        ("empty body", b"", "image/png", 400, "empty"),
        ("not json", b"{oops", "application/json", 400, "not valid JSON"),
        ("not utf-8", b"\xff\xfe[", "application/json", 400, "JSON"),
        ("deep json", b"[" * 100_000, "application/json", 400, "nested"),
        ("json too short", b"[[1, 2]]", "application/json", 422, "28×28"),
        ("json 28x27", grid_27, "application/json", 422, "row 0"),
        ("json scalar", b"7", "application/json", 422, "28×28"),
        ("json no image", b'{"pixels": []}', "application/json", 422, "'image'"),
        ("json string", json.dumps([["a"] * 28] * 28).encode(), "application/json", 422, "number"),
        ("json bool", json.dumps([[True] * 28] * 28).encode(), "application/json", 422, "number"),
        ("json 256", json.dumps([[256] * 28] * 28).encode(), "application/json", 422, "0..255"),
        ("json negative", json.dumps([[-1] * 28] * 28).encode(), "application/json", 422, "0..255"),
        (
            "json nan",
            ("[" + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]").encode(),
            "application/json",
            422,
            "0..255",
        ),
        ("json 10**400", _grid_with("1" + "0" * 400), "application/json", 422, "0..255"),
        ("json 5000 digits", _grid_with("7" * 5000), "application/json", 422, "0..255"),
        ("json -10**400", _grid_with("-1" + "0" * 400), "application/json", 422, "0..255"),
        ("json 1e999", _grid_with("1e999"), "application/json", 422, "0..255"),
        ("json Infinity", _grid_with("Infinity"), "application/json", 422, "0..255"),
        (
            "json huge in object",
            b'{"image": ' + _grid_with("9" * 5000) + b"}",
            "application/json",
            422,
            "0..255",
        ),
        ("json huge scalar", b"1" + b"0" * 5000, "application/json", 422, "28×28"),
        ("json huge row", b"[" + b"1" + b"0" * 400 + b"]", "application/json", 422, "28×28"),
        ("multipart no boundary", b"--x\r\n", "multipart/form-data", 400, ""),
        ("too big", b"\0" * 300_000, "image/png", 413, "too large"),
    ]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "words"),
    [case[1:] for case in _bad_requests()],
    ids=[case[0] for case in _bad_requests()],
)
def test_bad_requests_get_a_clear_4xx(
    client: TestClient, body: bytes, ctype: str, status: int, words: str
) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    res = client.post("/api/predict", content=body, headers=headers)
    assert res.status_code == status, res.text
    detail = res.json()["detail"]
    assert isinstance(detail, str) and detail
    assert words in detail
    assert client.get("/api/health").json()["status"] == "ok"


def test_bad_uploads_and_parameters(client: TestClient) -> None:
    cases = [
        ({"file": ("notes.txt", b"hello", "text/plain")}, 415),
        ({"file": ("half.png", vertical_stroke_png()[:300], "image/png")}, 400),
        ({"other": ("big.png", png_header(20000, 20000), "image/png")}, 413),
    ]
    for files, status in cases:
        res = client.post("/api/predict", files=files)
        assert res.status_code == status, res.text
    res = client.post("/api/predict", data={"name": "x"}, files={})
    assert res.status_code in (415, 422), res.text
    res = client.post("/api/predict", data={"file": "not a file"}, files={"x": ("", b"", "")})
    assert 400 <= res.status_code < 500, res.text
    res = client.post("/api/predict?features=perhaps", json=GRID)
    assert res.status_code == 422 and "features" in res.json()["detail"]
    assert client.get("/api/predict").status_code == 405
    assert client.get("/nothing-here").json() == {"detail": "Not Found"}


def test_unexpected_error_is_json_and_server_goes_on(digits_run: Path) -> None:
    app = create_app(digits_run, warm_up=False)
    real = app.state.service.predict

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as c:
        app.state.service.predict = broken
        res = c.post("/api/predict", json=GRID)
        assert res.status_code == 500
        assert res.json() == {"detail": "internal error (RuntimeError)"}
        app.state.service.predict = real
        assert c.post("/api/predict", json=GRID).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_server_survives_malformed_requests(app) -> None:  # noqa: ANN001
    """Over real HTTP: bad bodies, a streamed oversized body, then a good request."""
    uvicorn = pytest.importorskip("uvicorn")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=base, timeout=20) as http:
            for _name, body, ctype, status, _words in _bad_requests():
                headers = {"Content-Type": ctype} if ctype else {}
                assert http.post("/api/predict", content=body, headers=headers).status_code == (
                    status
                )

            def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
                for _ in range(50):
                    yield b"\0" * 10_000

            res = http.post("/api/predict", content=chunks(), headers={"Content-Type": "image/png"})
            assert res.status_code == 413, res.text
        with httpx.Client(base_url=base, timeout=20) as http:
            res = http.post(
                "/api/predict",
                content=vertical_stroke_png(),
                headers={"Content-Type": "image/png"},
            )
            assert res.status_code == 200 and res.json()["input"]
            assert http.get("/api/health").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_cli_serve_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    import sys

    from cnnlab.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", str(tmp_path)]) == 2
    assert "pip install 'cnnlab[serve]'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["serve", "run", "--port", "70000"])
    assert exc.value.code == 2


def test_api_pixel_limit_is_what_a_digit_needs(client: TestClient) -> None:
    """A digit needs a few hundred pixels a side; 16.8 megapixels would cost a gigabyte."""
    limits = Limits()
    assert limits.max_pixels <= 2_000_000
    res = client.post(
        "/api/predict", content=png_header(4096, 4096), headers={"Content-Type": "image/png"}
    )
    assert res.status_code == 413 and "4096×4096" in res.json()["detail"]
    res = client.post(
        "/api/predict", content=png_header(1500, 1500), headers={"Content-Type": "image/png"}
    )
    assert res.status_code == 413, res.text
    res = client.post(
        "/api/predict", content=vertical_stroke_png(1400), headers={"Content-Type": "image/png"}
    )
    assert res.status_code == 200, res.text


def test_header_read_and_decode_share_the_decode_bound(
    digits_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No more images are opened at once than ``max_concurrent_decodes``, header included."""
    from cnnlab.serve import service as service_module

    busy, peak, lock = 0, 0, threading.Lock()

    def counted(real):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            nonlocal busy, peak
            with lock:
                busy += 1
                peak = max(peak, busy)
            try:
                time.sleep(0.05)
                return real(*args, **kwargs)
            finally:
                with lock:
                    busy -= 1

        return wrapper

    monkeypatch.setattr(
        service_module, "check_image_header", counted(service_module.check_image_header)
    )
    app = create_app(digits_run, limits=Limits(max_concurrent_decodes=1), warm_up=False)
    service = app.state.service
    monkeypatch.setattr(service, "_prepare", counted(service._prepare))
    png = vertical_stroke_png()
    threads = [
        threading.Thread(target=app.state.service.prepare_image, args=(png,)) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1


def _plain(fmt: str, level: int, ink: int | None = None) -> bytes:
    """A 200×200 image of one grey level, with a faint stroke of ``ink`` if given."""
    img = Image.new("L", (200, 200), level)
    if ink is not None:
        ImageDraw.Draw(img).line([(100, 30), (100, 170)], fill=ink, width=12)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (_plain("PNG", 255), "image/png"),
        (_plain("PNG", 0), "image/png"),
        (_plain("JPEG", 128), "image/jpeg"),
        (_plain("PNG", 200, ink=190), "image/png"),  # contrast below prepare's threshold
        (json.dumps([[0] * 28] * 28).encode(), "application/json"),
    ],
    ids=["white", "black", "grey jpeg", "faint", "zero grid"],
)
def test_blank_image_is_answered_blank(client: TestClient, body: bytes, ctype: str) -> None:
    res = client.post("/api/predict?features=1", content=body, headers={"Content-Type": ctype})
    assert res.status_code == 200, res.text
    data = res.json()
    assert data["blank"] is True and data["prediction"] is None
    assert "probabilities" not in data and "confidence" not in data
    assert data["input"] == [[0] * 28] * 28


def test_a_digit_is_not_blank(client: TestClient) -> None:
    res = client.post("/api/predict", json=GRID)
    assert res.status_code == 200 and res.json()["blank"] is False


def test_bodies_held_at_once_are_bounded(digits_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond ``max_queued_requests`` a prediction waits before its body is read, so a
    hundred clients sending the largest body do not hold a hundred bodies in memory."""
    import anyio

    from cnnlab.serve import app as app_module

    busy, peak = 0, 0
    real = app_module.read_image_body

    async def counted(request):  # noqa: ANN001, ANN202
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        try:
            await anyio.sleep(0.1)
            return await real(request)
        finally:
            busy -= 1

    monkeypatch.setattr(app_module, "read_image_body", counted)
    app = create_app(digits_run, limits=Limits(max_queued_requests=2), warm_up=False)
    with TestClient(app) as c:
        statuses: list[int] = []

        def post() -> None:
            statuses.append(c.post("/api/predict", json=GRID).status_code)

        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 6
    assert peak == 2
