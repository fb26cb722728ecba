"""Peak memory of ``cnnlab serve`` for large images: what one hostile request can cost.

Starts ``cnnlab serve RUN`` in a subprocess on 127.0.0.1 (a free port) and, for each case,
resets the server process's peak RSS (``/proc/PID/clear_refs``), sends the requests and
reads the new peak (``VmHWM`` in ``/proc/PID/status``). Linux only. The cases:

* ``png-4096``: one 4096×4096 RGBA PNG (one colour with a digit drawn on it, ~100 KB);
* ``jpeg-40mp``: one 7300×5480 JPEG (40 megapixels);
* ``png-4096-x8``: eight of the PNG at once;

and, because the server refuses those by their header, the same at the largest size it
accepts (``png-largest``, ``jpeg-largest``, ``png-largest-x8``); and ``max-body-x99``:
99 clients at once (one fewer than the connection cap) each sending a PNG of random grey
noise as large as the body limit allows (the bodies, not the decoding, are the cost). Each case records the
answers' status codes, the RSS before and the peak during it, in MB.

    python benchmarks/serve_memory.py --out benchmarks/results/DATE/serve_memory.json

Without ``--run`` a seed000-cnn is trained briefly on the offline ``digits`` dataset.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from load_test import HOST, free_port, train_small_run
from machine import describe
from PIL import Image, ImageDraw

#: The figure no server process may exceed.
TARGET_MB = 500.0


def digit_image(width: int, height: int, mode: str) -> Image.Image:
    """A light canvas of ``width``×``height`` with a dark "7" drawn across its middle."""
    background = (235, 235, 230, 255) if mode == "RGBA" else (235, 235, 230)
    img = Image.new(mode, (width, height), background)
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    ink = (20, 20, 20, 255) if mode == "RGBA" else (20, 20, 20)
    ImageDraw.Draw(img).line(
        [
            (x0 + side * 0.25, y0 + side * 0.2),
            (x0 + side * 0.75, y0 + side * 0.2),
            (x0 + side * 0.45, y0 + side * 0.8),
        ],
        fill=ink,
        width=max(2, side // 14),
    )
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    """The image as a PNG (most compression) or JPEG (quality 70) file."""
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, format="PNG", optimize=True)
    else:
        img.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def noise_png(side: int) -> bytes:
    """A ``side``×``side`` PNG of random grey levels: about one byte a pixel, incompressible."""
    rng = random.Random(0)
    img = Image.frombytes("L", (side, side), rng.randbytes(side * side))
    return encode(img, "PNG")


def proc_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Start a new peak-RSS window for the process (Linux ≥ 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def wait_until_up(base: str, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Poll ``/api/health`` until the server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def measure(
    base: str, pid: int, name: str, body: bytes, ctype: str, copies: int, size: tuple[int, int]
) -> dict[str, Any]:
    """Send ``copies`` of the body at once; the statuses and the server's RSS around them."""
    time.sleep(0.5)  # let the previous case's memory go back
    before_mb = proc_kb(pid, "VmRSS") / 1024
    reset_peak(pid)

    def send(_: int) -> tuple[int, str]:
        res = httpx.post(
            base + "/api/predict", content=body, headers={"Content-Type": ctype}, timeout=300
        )
        detail = res.json().get("detail", "") if res.status_code != 200 else ""
        return res.status_code, detail

    start = time.perf_counter()
    with ThreadPoolExecutor(copies) as pool:
        answers = list(pool.map(send, range(copies)))
    wall = time.perf_counter() - start
    peak_mb = proc_kb(pid, "VmHWM") / 1024
    return {
        "case": name,
        "size": f"{size[0]}×{size[1]}",
        "megapixels": round(size[0] * size[1] / 1e6, 2),
        "body_bytes": len(body),
        "requests": copies,
        "statuses": sorted({s for s, _ in answers}),
        "detail": next((d for _, d in answers if d), ""),
        "rss_before_mb": round(before_mb, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "peak_over_before_mb": round(peak_mb - before_mb, 1),
        "seconds": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="run folder (default: train a small one)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--max-pixels",
        type=int,
        help="the server's --max-pixels (default: its own default); e.g. 16777216 to "
        "measure a 4096×4096 image decoded instead of refused",
    )
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this benchmark reads /proc: Linux only")

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_small_run(Path(tmp))
        port = free_port()
        base = f"http://{HOST}:{port}"
        cmd = [sys.executable, "-m", "cnnlab", "serve", str(run), "--port", str(port)]
        cmd += ["--log-level", "warning"]
        if args.max_pixels:
            cmd += ["--max-pixels", str(args.max_pixels)]
        server = subprocess.Popen(cmd, env=os.environ.copy())
        try:
            wait_until_up(base, server)
            limits = httpx.get(base + "/api/model", timeout=60).json()["limits"]
            pixels = int(limits["max_pixels"])
            side = math.isqrt(pixels)
            jpeg_w = math.isqrt(pixels * 7300 // 5480)
            jpeg_h = pixels // jpeg_w
            png_big = encode(digit_image(4096, 4096, "RGBA"), "PNG")
            jpeg_big = encode(digit_image(7300, 5480, "RGB"), "JPEG")
            png_top = encode(digit_image(side, side, "RGBA"), "PNG")
            jpeg_top = encode(digit_image(jpeg_w, jpeg_h, "RGB"), "JPEG")
            noise = noise_png(math.isqrt(int(limits["max_body_bytes"] * 0.98)))
            cases = [
                ("png-4096", png_big, "image/png", 1, (4096, 4096)),
                ("jpeg-40mp", jpeg_big, "image/jpeg", 1, (7300, 5480)),
                ("png-4096-x8", png_big, "image/png", 8, (4096, 4096)),
                ("png-largest", png_top, "image/png", 1, (side, side)),
                ("jpeg-largest", jpeg_top, "image/jpeg", 1, (jpeg_w, jpeg_h)),
                ("png-largest-x8", png_top, "image/png", 8, (side, side)),
                ("max-body-x99", noise, "image/png", 99, Image.open(io.BytesIO(noise)).size),
            ]
            results = [measure(base, server.pid, *case) for case in cases]
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(
        f"{'case':<16}{'size':>11}{'MP':>7}{'body KB':>9}{'n':>3}  {'status':<9}"
        f"{'RSS before':>11}{'peak RSS':>10}{'s':>7}"
    )
    for r in results:
        print(
            f"{r['case']:<16}{r['size']:>11}{r['megapixels']:>7}{r['body_bytes'] / 1e3:>9.0f}"
            f"{r['requests']:>3}  {','.join(map(str, r['statuses'])):<9}"
            f"{r['rss_before_mb']:>11.0f}{r['peak_rss_mb']:>10.0f}{r['seconds']:>7.2f}"
        )
    worst = max(r["peak_rss_mb"] for r in results)
    print(f"largest server RSS in any case: {worst:.0f} MB (target: under {TARGET_MB:.0f} MB)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "machine": describe("serve_memory.py", argv),
            "max_pixels": pixels,
            "target_mb": TARGET_MB,
            "worst_peak_rss_mb": round(worst, 1),
            "cases": results,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if worst < TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
