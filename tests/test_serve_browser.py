"""The drawing page in a real browser: headless Chromium driven by Playwright.

The browser is Debian's Chromium (``/usr/bin/chromium``, or ``$CNNLAB_CHROMIUM``); the
tests skip when it or Playwright is missing. The model is trained once per session on
real MNIST when ``CNNLAB_DATA`` holds it; otherwise on the offline ``digits`` dataset,
and the "drawn 1 is a 1" assertions are skipped. Set ``CNNLAB_SCREENSHOTS`` to a folder
to keep the page's screenshot.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.conftest import real_mnist_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """The system Chromium, or None."""
    for candidate in (os.environ.get("CNNLAB_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@dataclass
class TrainedRun:
    path: Path
    mnist: bool


@pytest.fixture(scope="session")
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """seed000-cnn trained briefly (300 steps) on MNIST, or on `digits` without it."""
    if chromium_path() is None:
        pytest.skip("no Chromium at /usr/bin/chromium (run .ci/install-browser)")
    pytest.importorskip("playwright.sync_api")
    from cnnlab.config import TrainConfig
    from cnnlab.runs import train_run

    data = real_mnist_dir()
    out = tmp_path_factory.mktemp("serve-browser") / "run"
    if data is not None:
        config = TrainConfig(model="seed000-cnn", dataset="mnist", steps=300, validation_split=0.0)
    else:
        config = TrainConfig(model="seed000-cnn", dataset="digits", epochs=3, batch_size=32)
    train_run(config, out, data_dir=data, progress=False)
    return TrainedRun(out, data is not None)


@pytest.fixture(scope="module")
def base_url(browser_run: TrainedRun) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port."""
    from cnnlab.serve.app import create_app
    from cnnlab.serve.server import background_server

    with background_server(create_app(browser_run.path)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium at /usr/bin/chromium")
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        except Exception as exc:  # a browser that cannot start is an environment problem
            pytest.skip(f"Chromium does not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


def open_page(browser: Any, base_url: str) -> Iterator[Any]:
    """A 1280×1000 page of the app, loaded; fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    p.goto(base_url + "/")
    p.wait_for_selector("body[data-model='loaded']", timeout=30_000)
    yield p
    context.close()
    assert not errors, errors


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:
    yield from open_page(browser, base_url)


def stroke(page: Any, points: list[tuple[float, float]]) -> None:
    """Draw one stroke with mouse events; points are fractions of the canvas (0..1)."""
    box = page.locator("#pad").bounding_box()

    def at(p: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + p[0] * box["width"], box["y"] + p[1] * box["height"]

    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*at(p), steps=3)
    page.mouse.up()


def settled(page: Any, at_least: int) -> dict[str, Any]:
    """Wait for the page to show the answer for the current drawing; return what it shows."""
    page.wait_for_function(
        "(n) => document.body.dataset.settled === '1' && "
        "Number(document.body.dataset.predictions || 0) >= n",
        arg=at_least,
        timeout=30_000,
    )
    return {
        "prediction": page.locator("#prediction").inner_text().strip(),
        "count": int(page.evaluate("() => Number(document.body.dataset.predictions)")),
        "top_bar": page.locator(".bar-row.best").get_attribute("data-class"),
        "layers": page.locator("#feature-maps .layer").count(),
        "tiles": page.locator("#feature-maps .tile img").count(),
        "error": page.locator("#error").inner_text().strip(),
    }


ONE = [(0.5, 0.15), (0.5, 0.85)]
ZERO = [
    (0.5 + 0.22 * math.sin(2 * math.pi * t / 40), 0.5 - 0.32 * math.cos(2 * math.pi * t / 40))
    for t in range(42)
]


def test_draw_one_then_zero(page: Any, browser_run: TrainedRun, tmp_path: Path) -> None:
    stroke(page, ONE)
    one = settled(page, 1)
    assert one["error"] == ""
    assert one["top_bar"] == one["prediction"]
    assert one["layers"] == 2 and one["tiles"] == 16 + 32
    page.click("#clear")
    assert page.locator("#prediction").inner_text().strip() == "–"
    assert page.locator("#feature-maps .layer").count() == 0
    stroke(page, ZERO)
    zero = settled(page, one["count"] + 1)
    assert zero["layers"] == 2 and zero["top_bar"] == zero["prediction"]
    page.wait_for_timeout(400)  # let the bars' width transition finish
    shot = page.screenshot(full_page=True)
    (tmp_path / "page.png").write_bytes(shot)
    keep = os.environ.get("CNNLAB_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "serve-page.png").write_bytes(shot)
    assert Image.open(io.BytesIO(shot)).size[0] == 1280
    if not browser_run.mnist:
        pytest.skip("trained on `digits` (no MNIST): recognition not asserted")
    assert one["prediction"] == "1"
    assert zero["prediction"] == "0"


def test_upload_png(page: Any, browser_run: TrainedRun, base_url: str, tmp_path: Path) -> None:
    import httpx

    img = Image.new("RGB", (400, 300), "white")  # dark ink on light paper, off-centre
    ImageDraw.Draw(img).line([(250, 40), (250, 260)], fill=(20, 20, 60), width=24)
    path = tmp_path / "one.png"
    img.save(path)
    page.set_input_files("#upload", str(path))
    shown = settled(page, 1)
    assert shown["error"] == ""
    assert "one.png" in page.locator("#confidence").inner_text()
    api = httpx.post(
        f"{base_url}/api/predict", files={"file": ("one.png", path.read_bytes(), "image/png")}
    ).json()
    assert shown["prediction"] == api["prediction"]
    assert shown["layers"] == 2
    page.set_input_files(
        "#upload", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"hello"}]
    )
    page.wait_for_function("() => document.getElementById('error').textContent.length > 0")
    assert "not an image" in page.locator("#error").inner_text()
    if browser_run.mnist:
        assert shown["prediction"] == "1"


def test_upload_of_a_big_photo_is_shrunk_by_the_page(
    page: Any, base_url: str, tmp_path: Path
) -> None:
    """A photo over the API's pixel limit is refused by the API, but the page shrinks it
    first and shows the same answer as a small copy of the photo gets."""
    import httpx

    img = Image.new("RGB", (3000, 2400), (230, 228, 220))
    ImageDraw.Draw(img).line([(1500, 300), (1500, 2100)], fill=(25, 25, 40), width=160)
    path = tmp_path / "photo.png"
    img.save(path)
    direct = httpx.post(
        f"{base_url}/api/predict", files={"file": ("photo.png", path.read_bytes(), "image/png")}
    )
    assert direct.status_code == 413
    page.set_input_files("#upload", str(path))
    shown = settled(page, 1)
    assert shown["error"] == ""
    assert "photo.png" in page.locator("#confidence").inner_text()
    small = io.BytesIO()
    img.resize((1024, 819), Image.Resampling.BOX).save(small, format="PNG")
    api = httpx.post(
        f"{base_url}/api/predict", files={"file": ("small.png", small.getvalue(), "image/png")}
    ).json()
    assert shown["prediction"] == api["prediction"]


def test_blank_upload_says_blank(page: Any, tmp_path: Path) -> None:
    path = tmp_path / "white.png"
    Image.new("L", (200, 200), 255).save(path)
    page.set_input_files("#upload", str(path))
    page.wait_for_selector("body[data-prediction='blank'][data-settled='1']", timeout=30_000)
    assert page.locator("#prediction").inner_text().strip() == "–"
    assert "blank: no ink found" in page.locator("#confidence").inner_text()


def test_model_panel(page: Any) -> None:
    assert "seed000-cnn" in page.locator("#model-line").inner_text()
    assert page.locator("#layers tbody tr").count() >= 8
    assert "Total params" in page.locator("#summary").text_content()
    assert page.locator(".bar-row").count() == 10


def test_read_a_number(page: Any, base_url: str, tmp_path: Path) -> None:
    import httpx

    img = Image.new("RGB", (520, 200), (225, 222, 215))  # three strokes: "1", "1", "1"
    draw = ImageDraw.Draw(img)
    for x in (120, 260, 400):
        draw.line([(x, 40), (x - 8, 160)], fill=(25, 25, 50), width=12)
    path = tmp_path / "number.png"
    img.save(path)
    page.set_input_files("#read-upload", str(path))
    page.wait_for_selector("body[data-number]:not([data-number=''])", timeout=30_000)
    shown = page.locator("#number").inner_text()
    api = httpx.post(
        f"{base_url}/api/read", files={"file": ("number.png", path.read_bytes(), "image/png")}
    ).json()
    assert shown == api["number"] and len(shown) == 3
    assert page.locator("#number-digits figure").count() == 3
    assert "3 digits found in number.png" in page.locator("#number-note").inner_text()
    assert page.locator("#error").inner_text() == ""
