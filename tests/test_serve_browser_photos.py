"""The page of a colour photo run in a real browser: headless Chromium driven by Playwright.

A photo run has no drawing pad: the page offers "Upload a photo", shows the probabilities
by class name and the colour image the model received. The browser is the one
:mod:`tests.test_serve_browser` finds; the tests skip without it or Playwright.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PHOTO_COLOURS
from tests.test_serve_browser import browser, chromium_path, open_page  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def base_url(photo_run: Path) -> Iterator[str]:
    """The photo run's app served by uvicorn on a free loopback port."""
    if chromium_path() is None:
        pytest.skip("no Chromium at /usr/bin/chromium (run .ci/install-browser)")
    pytest.importorskip("playwright.sync_api")
    from cnnlab.serve.app import create_app
    from cnnlab.serve.server import background_server

    with background_server(create_app(photo_run)) as url:
        yield url


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:  # noqa: F811 (the imported fixture)
    yield from open_page(browser, base_url)


def test_photo_page_offers_an_upload_not_a_drawing(page: Any) -> None:
    assert page.locator("body").get_attribute("data-kind") == "photos"
    assert not page.locator("#pad").is_visible()
    assert not page.locator("#clear").is_visible()
    assert page.locator("#draw-title").inner_text().strip() == "Upload a photo"
    assert "upload a photo" in page.locator("#tagline").inner_text()
    assert "Upload a photo" in page.locator("#upload-label").inner_text()
    assert "16×16" in page.locator("#seen-caption").inner_text()
    labels = page.locator(".bar-row .bar-label").all_inner_texts()
    assert labels == list(PHOTO_COLOURS)


def test_uploaded_photo_shows_class_names_probabilities_and_colour_input(
    page: Any, base_url: str, tmp_path: Path
) -> None:
    import httpx

    rng = np.random.default_rng(1)
    noise = rng.integers(-20, 21, (90, 120, 3))
    pixels = np.clip(np.array(PHOTO_COLOURS["apples"]) + noise, 0, 255).astype(np.uint8)
    path = tmp_path / "apple.jpg"
    Image.fromarray(pixels).save(path, quality=92)
    page.set_input_files("#upload", str(path))
    page.wait_for_function(
        "() => document.body.dataset.settled === '1' && "
        "Number(document.body.dataset.predictions || 0) >= 1",
        timeout=30_000,
    )
    assert page.locator("#error").inner_text().strip() == ""
    api = httpx.post(
        f"{base_url}/api/predict", files={"file": ("apple.jpg", path.read_bytes(), "image/jpeg")}
    ).json()
    assert api["prediction"] == "apples"
    assert page.locator("#prediction").inner_text().strip() == "apples"
    assert "apple.jpg" in page.locator("#confidence").inner_text()
    assert page.locator(".bar-row.best").get_attribute("data-class") == "apples"
    shown = {}
    for row in page.locator(".bar-row").all():
        value = row.locator(".bar-value").inner_text().strip()
        assert value.endswith("%")
        shown[row.get_attribute("data-class")] = float(value[:-1]) / 100
    assert list(shown) == list(PHOTO_COLOURS)
    assert sum(shown.values()) == pytest.approx(1.0, abs=0.003)
    for name, p in api["probabilities"].items():  # the page shrinks nothing this small
        assert shown[name] == pytest.approx(p, abs=0.0006)
    # the colour image the model received, drawn at its own 16×16 size
    size, centre = page.evaluate(
        "() => { const c = document.getElementById('input28');"
        " const d = c.getContext('2d').getImageData(8, 8, 1, 1).data;"
        " return [[c.width, c.height], Array.from(d.slice(0, 3))]; }"
    )
    assert size == [16, 16]
    assert centre == api["input"][8][8]
    assert centre[0] > 150 and centre[2] < 100
    assert page.locator("#feature-maps .layer").count() == 2
