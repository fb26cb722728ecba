"""Peak memory and time of preparing one big image, before and after reduced decoding.

Each case runs in a fresh Python process, so peaks never mix: the process imports the
preparation code, records its resident memory, prepares the file once, and reports its
high-water mark (VmHWM) minus that baseline. "before" is prepare.py as a git revision
had it (default ``faebbed``, the last before reduced decoding), loaded from ``git show``
into a temporary module; "after" is the working tree's.

    python benchmarks/image_memory.py --out benchmarks/results/<date>/image_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import importlib.util, json, sys, time
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
module_path, image_path = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("prepare_under_test", module_path)
prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare)
import numpy, PIL.Image, PIL.PngImagePlugin, PIL.JpegImagePlugin  # noqa: imports in baseline
baseline = rss("VmRSS")
t = time.perf_counter()
out = prepare.prepare_digit(image_path)
seconds = time.perf_counter() - t
print(json.dumps({"peak_bytes": rss("VmHWM") - baseline, "baseline_bytes": baseline,
                  "seconds": seconds, "ink_pixels": int((out > 0).sum())}))
"""


def _paper_digit(width: int, height: int, mode: str) -> Image.Image:
    """A dark "4" drawn on slightly noisy, uneven paper, like a photo of a page."""
    rng = np.random.default_rng(0)
    shade = np.linspace(225, 245, width, dtype=np.float32)[None, :]
    paper = np.clip(shade + rng.normal(0, 4, (height, 1)).astype(np.float32), 0, 255)
    grey = Image.fromarray(np.broadcast_to(paper, (height, width)).astype(np.uint8), "L")
    img = grey.convert(mode)
    draw = ImageDraw.Draw(img)
    s = min(width, height) / 100
    ink = (30, 30, 40, 255)[: len(mode)] if mode != "L" else 30
    x0, y0 = (width - 60 * s) / 2, 15 * s
    for line in [[(60, 0), (20, 45), (75, 45)], [(60, 0), (60, 70)]]:
        draw.line([(x0 + x * s, y0 + y * s) for x, y in line], fill=ink, width=round(9 * s))
    return img


def make_cases(folder: Path) -> dict[str, Path]:
    """The three files the figures are about."""
    cases = {
        "png-4096x4096-rgba": (4096, 4096, "RGBA", "PNG"),
        "jpeg-7296x5472-rgb": (7296, 5472, "RGB", "JPEG"),
        "png-7280x5456-rgb": (7280, 5456, "RGB", "PNG"),
    }
    paths = {}
    for name, (w, h, mode, fmt) in cases.items():
        path = folder / f"{name}.{fmt.lower()}"
        kwargs = {"quality": 90} if fmt == "JPEG" else {"compress_level": 6}
        _paper_digit(w, h, mode).save(path, format=fmt, **kwargs)
        paths[name] = path
    return paths


def measure(module: Path, image: Path) -> dict[str, float]:
    """One fresh process preparing ``image`` with the prepare.py at ``module``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(module), str(image)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{image.name} with {module.name}: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure every case with both versions and write the JSON and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference",
        default="faebbed",
        help="git revision for 'before' (default: the last one before reduced decoding)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="processes per case")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    parser.add_argument("--skip-before", action="store_true", help="measure only 'after'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        old = folder / "prepare_before.py"
        old.write_text(
            subprocess.run(
                ["git", "show", f"{args.reference}:src/cnnlab/data/prepare.py"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        versions = {"after": ROOT / "src" / "cnnlab" / "data" / "prepare.py"}
        if not args.skip_before:
            versions = {"before": old, **versions}
        files = make_cases(folder)
        rows = []
        for name, path in files.items():
            for version, module in versions.items():
                runs = [measure(module, path) for _ in range(args.repeats)]
                row = {
                    "case": name,
                    "version": version,
                    "file_bytes": path.stat().st_size,
                    "peak_mib_max": max(r["peak_bytes"] for r in runs) / 2**20,
                    "seconds_median": float(np.median([r["seconds"] for r in runs])),
                    "runs": runs,
                }
                rows.append(row)
                print(
                    f"{name:22} {version:6} file {row['file_bytes'] / 1e3:8.0f} kB  "
                    f"peak +{row['peak_mib_max']:7.0f} MiB  {row['seconds_median']:6.2f} s",
                    flush=True,
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": describe("image_memory.py"),
            "command": " ".join(sys.argv),
            "reference": args.reference,
            "repeats": args.repeats,
            "python": sys.version.split()[0],
            "pillow": Image.__version__,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "rows": rows,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
