"""Train every tutorial model with its tutorial's recipe and report accuracy and time.

Each model of the tutorials (docs/tutorials.md, "The models at a glance") is trained
by the real command line, ``cnnlab train --model ID --json`` in a fresh process, with
the recipe the registry holds for it (batch size, epochs or steps, optimizer, labels,
validation split). ``seed004-lenet-max`` is trained as its tutorial does: 5 epochs, then
resumed for 2 more. The script prints a markdown table (test accuracy, the tutorial's reported
figure, wall time of the whole process, training time) and writes JSON.

    python benchmarks/reproduce_tutorials.py --out results/reproduce.json
    python benchmarks/reproduce_tutorials.py --models seed000-cnn seed002-cnn

Needs MNIST (``CNNLAB_DATA`` or ``--data-dir``). AlexNet on 227×227 inputs is far too
big for a CPU epoch; it is trained for ``--alexnet-steps`` steps (default 100) to show
that it learns, and marked as such.
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

import machine

#: model id -> accuracy the tutorial reports (None: it reports none).
REPORTED = {
    "seed000-cnn": "98.86%",
    "seed001-lenet5": None,
    "seed001-alexnet": None,
    "seed002-cnn": "99.15%",
    "seed002-mlp": None,
    "seed003-deep-mnist": "~99.2%",
    "seed004-lenet": None,
    "seed004-lenet-max": "98.26% (5 epochs), 98.40% (+2 resumed)",
}


def cnnlab(*args: str, env: dict[str, str]) -> tuple[dict, float]:
    """Run ``cnnlab ARGS --json --quiet``; return its JSON line and the wall seconds."""
    cmd = [sys.executable, "-m", "cnnlab", *args, "--json", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(REPORTED), help="model ids")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: $CNNLAB_DATA)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--alexnet-steps", type=int, default=100, help="AlexNet training steps (default 100)"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    env = dict(os.environ)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            run = str(Path(tmp) / model)
            extra: list[str] = []
            if model == "seed001-alexnet":
                extra = ["--steps", str(args.alexnet_steps)]
            if model == "seed004-lenet-max":
                extra = ["--epochs", "5"]
            common = ["--seed", str(args.seed), *data]
            m, wall = cnnlab("train", "--model", model, *extra, *common, "--out", run, env=env)
            row = {
                "model": model,
                "test_accuracy": m["test_accuracy"],
                "test_loss": m["test_loss"],
                "epochs": m["epochs"],
                "steps": m["steps"],
                "train_seconds": m["train_seconds"],
                "wall_seconds": round(wall, 1),
                "reported": REPORTED.get(model),
                "native_kernels": m.get("native_kernels"),
            }
            if model == "seed004-lenet-max":
                m2, wall2 = cnnlab("train", "--resume", run, "--epochs", "2", *data, env=env)
                row["resumed"] = {
                    "test_accuracy": m2["test_accuracy"],
                    "epochs": m2["epochs"],
                    "train_seconds": m2["train_seconds"],
                    "wall_seconds": round(wall2, 1),
                }
            rows.append(row)
            print(json.dumps(row), flush=True)

    print()
    print("| model | epochs (steps) | test accuracy | tutorial reports | train s | wall s |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for r in rows:
        acc = f"{100 * r['test_accuracy']:.2f}%"
        length = f"{r['epochs']} ({r['steps']:,})"
        train_s, wall_s = f"{r['train_seconds']:.0f}", f"{r['wall_seconds']:.0f}"
        if "resumed" in r:
            rs = r["resumed"]
            acc += f" → {100 * rs['test_accuracy']:.2f}% (+2 resumed)"
            length = f"{r['epochs']} + 2"
            train_s += f" + {rs['train_seconds']:.0f}"
            wall_s += f" + {rs['wall_seconds']:.0f}"
        print(
            f"| `{r['model']}` | {length} | {acc} | {r['reported'] or '—'} | {train_s} | {wall_s} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {**machine.describe("reproduce_tutorials.py"), "rows": rows}
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
