"""Screenshots of the explorable page (``cnnlab serve RUN``, then ``/explore``) for
docs/explore.md: the overview, a unit of each kind, the output layer, both saliency
overlays, the convolution lesson and a colour run with an uploaded photo.

    PYTHONPATH=src python docs/explore_screenshots.py --run /work/runs/seed000-5ep \\
        --photo-run PHOTO_RUN --photo some.jpg

Needs Playwright and Chromium (``/usr/bin/chromium`` or ``$CNNLAB_CHROMIUM``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cnnlab.serve.app import create_app
from cnnlab.serve.server import background_server

HERE = Path(__file__).parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
#: A 7 drawn in two strokes, as fractions of the pad.
SEVEN = [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)], [(0.35, 0.52), (0.65, 0.52)]]


def wait_redraw(page: Any, n: int) -> None:
    page.wait_for_function(
        "(n) => document.body.dataset.settled === '1' && Number(document.body.dataset.redraws) >= n",
        arg=n,
        timeout=60_000,
    )


def click_unit(page: Any, selector: str, **kwargs: Any) -> None:
    page.evaluate("() => { document.body.dataset.unitSettled = '0'; }")
    page.locator(selector).click(**kwargs)
    page.wait_for_function("() => document.body.dataset.unitSettled === '1'", timeout=60_000)


def strongest(page: Any, layer: int) -> tuple[int, int, int]:
    """The channel with the largest output in ``layer`` and where that output is."""
    return tuple(
        page.evaluate(
            """(id) => {
              const out = window.cnnlabExplore.answer().layers.find((l) => l.id === id);
              const c = out.hi.indexOf(Math.max(...out.hi));
              const s = atob(out.maps);
              const shape = document.querySelector(`.col[data-layer='${id}'] canvas.tile`);
              const n = shape.width * shape.height;
              for (let i = 0; i < n; i++) {
                if (s.charCodeAt(c * n + i) === 255) return [c, Math.floor(i / shape.width), i % shape.width];
              }
              return [c, 0, 0];
            }""",
            layer,
        )
    )


def click_strongest(page: Any, layer: int) -> None:
    """Click the unit with the layer's largest output."""
    c, y, x = strongest(page, layer)
    tile = page.locator(f".col[data-layer='{layer}'] canvas.tile >> nth={c}")
    box = tile.bounding_box()
    width, height = tile.evaluate("(t) => [t.width, t.height]")
    click_unit(
        page,
        f".col[data-layer='{layer}'] canvas.tile >> nth={c}",
        position={"x": (x + 0.5) * box["width"] / width, "y": (y + 0.5) * box["height"] / height},
    )


def digit_views(browser: Any, run: Path, out: Path) -> None:
    with background_server(create_app(run)) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/explore")
        page.wait_for_selector("body[data-model='loaded']")
        box = page.locator("#pad").bounding_box()
        for i, line in enumerate(SEVEN, 1):
            pts = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in line]
            page.mouse.move(*pts[0])
            page.mouse.down()
            for p in pts[1:]:
                page.mouse.move(*p, steps=8)
            page.mouse.up()
            wait_redraw(page, i)
        page.screenshot(path=out / "explore-overview.png")
        click_strongest(page, 3)
        page.locator("#unit").screenshot(path=out / "explore-unit-conv.png")
        click_strongest(page, 2)
        page.locator("#unit").screenshot(path=out / "explore-unit-pool.png")
        click_unit(page, ".col[data-layer='7'] canvas.bars", position={"x": 60, "y": 60})
        page.locator("#unit").screenshot(path=out / "explore-unit-dense.png")
        page.locator("#output").screenshot(path=out / "explore-output.png")
        n = int(page.evaluate("() => Number(document.body.dataset.redraws)"))
        for k, method in enumerate(("gradcam", "ig"), 1):
            page.check(f"input[name=saliency][value={method}]")
            wait_redraw(page, n + k)
            page.locator(".input-card").screenshot(path=out / f"explore-saliency-{method}.png")
        page.select_option("#lesson-kernel", "sobel-x")
        page.select_option("#lesson-stride", "2")
        page.select_option("#lesson-padding", "1")
        page.locator("#lesson").screenshot(path=out / "explore-lesson.png")
        page.close()


def photo_view(browser: Any, run: Path, photo: Path, out: Path) -> None:
    with background_server(create_app(run)) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/explore")
        page.wait_for_selector("body[data-model='loaded']")
        page.check("input[name=saliency][value=gradcam]")
        page.set_input_files("#upload", str(photo))
        wait_redraw(page, 1)
        click_strongest(page, 0)
        page.screenshot(path=out / "explore-colour.png", full_page=True)
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a digit run")
    parser.add_argument("--photo-run", type=Path, help="a colour photo run")
    parser.add_argument("--photo", type=Path, help="the photo to upload to it")
    parser.add_argument("--out", type=Path, default=HERE / "images")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    chromium = os.environ.get("CNNLAB_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        digit_views(browser, args.run, args.out)
        if args.photo_run and args.photo:
            photo_view(browser, args.photo_run, args.photo, args.out)
        browser.close()


if __name__ == "__main__":
    main()
