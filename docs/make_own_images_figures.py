"""Draw the pictures of docs/own-images.md from a trained photo run.

    python docs/make_own_images_figures.py RUN PHOTO [--out docs/images]

Runs ``cnnlab evaluate`` and ``cnnlab visualize`` on RUN and copies the pictures the docs
show (confusion matrix, the top-losses grid, the first layer's kernels in colour) as ``own-*.png``; then serves RUN, uploads PHOTO in headless Chromium (Playwright
with the system browser, as the tests drive it) and keeps a screenshot of the page.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHOWN = {
    "confusion.png": "own-confusion.png",
    "top-losses.png": "own-top-losses.png",
}
#: Widest a picture is kept in the docs (photo grids and page shots are large otherwise).
MAX_WIDTH = 1100


def shrink(path: Path) -> None:
    """Keep ``path`` at most :data:`MAX_WIDTH` pixels wide, in 256 colours: a few hundred
    kB instead of megabytes, still sharp enough to read."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.width > MAX_WIDTH:
            height = round(img.height * MAX_WIDTH / img.width)
            img = img.resize((MAX_WIDTH, height), Image.Resampling.LANCZOS)
        img.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def cnnlab(*args: str) -> None:
    """Run a cnnlab command in a fresh interpreter; stop on failure."""
    subprocess.run([sys.executable, "-m", "cnnlab", *args], check=True)


def screenshot(run: Path, photo: Path, out: Path) -> None:
    """Serve ``run``, upload ``photo`` in Chromium and save the page as ``out``."""
    from playwright.sync_api import sync_playwright

    from cnnlab.serve.app import create_app
    from cnnlab.serve.server import background_server

    with background_server(create_app(run)) as url, sync_playwright() as pw:
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.wait_for_selector("body[data-model='loaded']", timeout=30_000)
        page.set_input_files("#upload", str(photo))
        page.wait_for_function(
            "() => Number(document.body.dataset.predictions || 0) >= 1", timeout=30_000
        )
        page.wait_for_timeout(500)  # the bars' width transition
        out.write_bytes(page.screenshot())  # the viewport: upload, answer, first maps
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("photo", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        reports = Path(tmp) / "reports"
        cnnlab("evaluate", str(args.run), "--out", str(reports))
        for name, target in SHOWN.items():
            shutil.copyfile(reports / name, args.out / target)
        pictures = Path(tmp) / "visualize"
        cnnlab("visualize", str(args.run), "--out", str(pictures))
        shutil.copyfile(pictures / "kernels-rgb.png", args.out / "own-kernels-rgb.png")
    screenshot(args.run, args.photo, args.out / "own-serve.png")
    for target in [*SHOWN.values(), "own-kernels-rgb.png", "own-serve.png"]:
        shrink(args.out / target)
        print(args.out / target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
