"""Data-parallel scaling: training images per second with 1 and 2 processes on this CPU,
and with one GPU when there is one.

Each run is ``python -m cnnlab train --steps N`` into a temporary run folder, in a
subprocess:

- 1 process: ``--threads 2`` (the CPU's two cores in one process);
- 2 processes: ``--nproc 2 --threads 1`` (one core each: world size × threads ≤ cores);
- 1 process, ``--threads 1``: a reference (on a busy machine two threads in one process
  can be several times slower than one);
- 1 GPU (only where CUDA is available): ``--device cuda``.

The figure is the global batch's images over the training steps' own time (the
``seconds`` of the run's ``history.json``: steps only, no start-up, validation or test).
The settings alternate (1, 2, 1 thread, 1, 2, …) so that whatever else the machine is
doing hits both; the median over ``--runs`` is reported with every run's figure.

    python benchmarks/scaling.py                       # about 1-2 minutes on 2 idle cores
    python benchmarks/scaling.py --runs 5 --steps 400 --model vgg-bn
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import machine

HERE = Path(__file__).resolve().parent


def train_once(
    args: argparse.Namespace, extra: list[str], out: Path, env: dict[str, str]
) -> dict[str, Any]:
    """One training run; its images per second, or the error."""
    command = [
        sys.executable, "-m", "cnnlab", "train", "--model", args.model,
        "--dataset", args.dataset, "--steps", str(args.steps),
        "--batch-size", str(args.batch_size), "--validation-split", "0",
        "--quiet", "--json", "--out", str(out), *extra,
    ]  # fmt: skip
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"ok": False, "wall_seconds": wall, "error": proc.stderr.strip()[-500:]}
    history = json.loads((out / "history.json").read_text())
    seconds = sum(float(row["seconds"]) for row in history)
    images = args.steps * args.batch_size
    return {
        "ok": True,
        "wall_seconds": round(wall, 2),
        "train_seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, print a table and write the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seed000-cnn")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=os.environ.get("CNNLAB_DATA"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64, help="the global batch")
    p.add_argument("--runs", type=int, default=3, help="runs of each setting, alternating")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/<date>/)")
    args = p.parse_args(argv)

    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    settings: dict[str, list[str]] = {
        "1 process, 2 threads": ["--device", "cpu", "--threads", "2"],
        "2 processes, 1 thread each": ["--device", "cpu", "--nproc", "2", "--threads", "1"],
        # the reference for a busy machine, where two threads in one process wait on
        # each other (see the thread policy's section of docs/benchmarks.md)
        "1 process, 1 thread": ["--device", "cpu", "--threads", "1"],
    }
    import torch

    if torch.cuda.is_available():
        settings["1 GPU"] = ["--device", "cuda"]
    result: dict[str, Any] = {
        **machine.describe("scaling.py", argv),
        "model": args.model,
        "dataset": args.dataset,
        "steps": args.steps,
        "global_batch": args.batch_size,
        "runs": args.runs,
        "gpu_measured": torch.cuda.is_available(),
        "settings": {name: [] for name in settings},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for number, (name, extra) in enumerate(settings.items()):
                out = Path(tmp) / f"run{run}-setting{number}"
                figure = train_once(args, extra, out, env)
                result["settings"][name].append(figure)
                shown = figure.get("images_per_second", figure.get("error"))
                print(f"run {run + 1}/{args.runs}  {name:<28} {shown}", file=sys.stderr)
    summary: dict[str, Any] = {}
    for name, runs in result["settings"].items():
        rates = [r["images_per_second"] for r in runs if r["ok"]]
        summary[name] = round(statistics.median(rates), 1) if rates else None
    one, two = summary["1 process, 2 threads"], summary["2 processes, 1 thread each"]
    result["median_images_per_second"] = summary
    result["two_over_one"] = round(two / one, 3) if one and two else None
    result["load_average_end"] = machine.load_average()
    out = args.out or HERE / "results" / date.today().isoformat() / "scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| setting | images/s (median of {args.runs}) |\n|---|---|")
    for name, rate in summary.items():
        print(f"| {name} | {machine.fmt(rate, 0)} |")
    if not torch.cuda.is_available():
        print("| 1 GPU | no GPU here |")
    print(f"\n2 processes / 1 process: {machine.fmt(result['two_over_one'], 2)}; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
