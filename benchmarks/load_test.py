"""Load test of ``cnnlab serve`` on loopback: N concurrent clients for D seconds.

Starts ``cnnlab serve RUN`` in a subprocess on 127.0.0.1 (a free port), waits until it
answers, then runs ``--clients`` asyncio clients (httpx), each sending one request after
another to ``POST /api/predict`` for ``--seconds``. Reports requests, errors, requests/s
and the latency percentiles; exits 1 if any request failed. Only loopback is targeted.

    python benchmarks/load_test.py --run runs/demo --clients 50 --seconds 30

Without ``--run`` a seed000-cnn is trained briefly on the offline ``digits`` dataset.
The payload is a 280×280 PNG of a drawn digit (what the page sends), ``--payload json``
a 28×28 array; ``--features`` asks for the feature maps too.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def digit_png() -> bytes:
    """A "7" drawn on a black 280×280 canvas with a 20 px round pen, as PNG."""
    img = Image.new("L", (280, 280), 0)
    draw = ImageDraw.Draw(img)
    draw.line([(70, 60), (210, 60), (120, 230)], fill=255, width=20, joint="curve")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def digit_grid() -> list[list[int]]:
    """A "1" as a 28×28 array of grey levels."""
    grid = np.zeros((28, 28), dtype=np.uint8)
    grid[4:24, 13:15] = 255
    return grid.tolist()


def train_small_run(folder: Path) -> Path:
    """seed000-cnn trained for a few seconds on the offline `digits` dataset."""
    from cnnlab.config import TrainConfig
    from cnnlab.runs import train_run

    out = folder / "digits-seed000"
    train_run(TrainConfig(model="seed000-cnn", dataset="digits", epochs=2), out, progress=False)
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation."""
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


async def wait_until_up(base: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll ``/api/health`` until the server answers."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with status {server.returncode}")
            try:
                if (await client.get("/api/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


async def load(
    base: str, clients: int, seconds: float, payload: str, features: bool
) -> tuple[list[float], Counter[str], float]:
    """Run the clients; return latencies (ms) of successful requests, error counts, wall s."""
    if payload == "json":
        body, headers = json.dumps(digit_grid()).encode(), {"Content-Type": "application/json"}
    else:
        body, headers = digit_png(), {"Content-Type": "image/png"}
    url = "/api/predict" + ("?features=1" if features else "")
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        start = time.perf_counter()
        stop = start + seconds

        async def one_client() -> None:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    res = await client.post(url, content=body, headers=headers)
                    ok = res.status_code == 200 and "prediction" in res.json()
                    if not ok:
                        errors[f"HTTP {res.status_code}"] += 1
                except Exception as exc:  # count every failure, keep going
                    errors[type(exc).__name__] += 1
                    continue
                if ok:
                    latencies.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="run folder (default: train a small one)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration (30)")
    parser.add_argument("--payload", choices=("png", "json"), default="png", help="png or json")
    parser.add_argument("--features", action="store_true", help="ask for feature maps too")
    parser.add_argument("--threads", type=int, help="torch threads for the server")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0:
        parser.error("--clients must be at least 1 and --seconds positive")

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or train_small_run(Path(tmp))
        port = free_port()
        command = [sys.executable, "-m", "cnnlab", "serve", str(run), "--host", HOST]
        command += ["--port", str(port), "--log-level", "warning"]
        if args.threads:
            command += ["--threads", str(args.threads)]
        server = subprocess.Popen(command)
        base = f"http://{HOST}:{port}"
        try:
            asyncio.run(wait_until_up(base, server, timeout=60))
            latencies, errors, wall = asyncio.run(
                load(base, args.clients, args.seconds, args.payload, args.features)
            )
            still_up = httpx.get(base + "/api/health", timeout=5).status_code == 200
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()

    import torch

    lat = sorted(latencies)
    total = len(lat) + sum(errors.values())
    shown = ["python", "benchmarks/load_test.py", *(argv if argv is not None else sys.argv[1:])]
    print(f"command:      {shlex.join(shown)}")
    print(
        f"machine:      {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.system()} {platform.release()}"
    )
    print(f"versions:     python {platform.python_version()}, torch {torch.__version__}")
    print(
        f"load:         {args.clients} clients × {args.seconds:g} s, payload {args.payload}"
        + (" + feature maps" if args.features else "")
    )
    print(f"requests:     {total} in {wall:.1f} s = {total / wall:.1f} requests/s")
    print(f"errors:       {sum(errors.values())}" + (f" {dict(errors)}" if errors else ""))
    if lat:
        print(
            f"latency (ms): p50 {percentile(lat, 50):.1f}  p90 {percentile(lat, 90):.1f}  "
            f"p99 {percentile(lat, 99):.1f}  mean {statistics.fmean(lat):.1f}  max {lat[-1]:.1f}"
        )
    print(f"server up after the test: {'yes' if still_up else 'NO'}")
    return 0 if not errors and still_up and lat else 1


if __name__ == "__main__":
    sys.exit(main())
