"""Time to accuracy: the whole ``cnnlab train`` process, start to exit, over several seeds.

Runs ``python -m cnnlab train ARGS --seed S --out TMP --quiet --json`` once per seed
(0, 1, …) and measures each process from start to exit with ``time.perf_counter``
around ``subprocess.run``: interpreter start, imports, reading MNIST, training and the
test evaluation all count. The test accuracy is read from the run folder's
``metrics.json``. Prints each seed's wall time, training time and accuracy, the mean
accuracy, the median wall time and whether the mean reached ``--target``; exits 0 when
it did, 1 when it did not or a run failed.

Everything after ``--`` is passed to ``cnnlab train`` (default: ``--recipe speedrun``);
``--seed``, ``--out``, ``--quiet`` and ``--json`` are the benchmark's own.

    python benchmarks/time_to_accuracy.py --seeds 3 --target 0.99 --out tta.json
    python benchmarks/time_to_accuracy.py --seeds 1 -- --model seed000-cnn --epochs 1
    python benchmarks/time_to_accuracy.py --seeds 5 --busy   # beside a CPU-bound program
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import machine

DEFAULT_TRAIN_ARGS = ["--recipe", "speedrun"]
OWN_OPTIONS = ("--seed", "--out", "--resume")


def one_run(train_args: list[str], seed: int, folder: Path, timeout: float | None) -> dict:
    """Train once; wall seconds from process start to exit, and the run's test accuracy."""
    out = folder / f"seed{seed}"
    command = [sys.executable, "-m", "cnnlab", "train", *train_args]
    command += ["--seed", str(seed), "--out", str(out), "--quiet", "--json"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        wall = time.perf_counter() - start
        return {"seed": seed, "wall_seconds": round(wall, 3), "error": f"timed out ({wall:.0f} s)"}
    wall = time.perf_counter() - start
    result: dict[str, Any] = {"seed": seed, "wall_seconds": round(wall, 3)}
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {**result, "error": f"exit {proc.returncode}: {lines[-1] if lines else ''}"}
    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {**result, "error": f"no metrics.json in the run folder ({exc})"}
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        config = {}
    train = config.get("train", {})
    return {
        **result,
        "test_accuracy": metrics.get("test_accuracy"),
        "test_loss": metrics.get("test_loss"),
        "train_seconds": metrics.get("train_seconds"),
        "epochs": metrics.get("epochs"),
        "steps": metrics.get("steps"),
        "device": metrics.get("device"),
        "model": train.get("model"),
        "batch_size": train.get("batch_size"),
        "dataset": metrics.get("dataset"),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, train_args = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s [--seeds N] [--target F] [--busy] [--out FILE] [-- CNNLAB-TRAIN-ARGS ...]",
    )
    parser.add_argument("--seeds", type=int, default=3, help="runs, with seeds 0..N-1 (3)")
    parser.add_argument("--target", type=float, default=0.99, help="test accuracy (0.99)")
    parser.add_argument("--timeout", type=float, help="seconds allowed per run")
    parser.add_argument(
        "--busy",
        action="store_true",
        help="run a CPU-bound competitor (a shell busy loop) beside every run",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(own)
    if args.seeds < 1 or not 0 < args.target <= 1:
        parser.error("--seeds must be at least 1 and --target a fraction in (0, 1]")
    train_args = train_args or list(DEFAULT_TRAIN_ARGS)
    clash = [a for a in train_args if a.split("=", 1)[0] in OWN_OPTIONS]
    if clash:
        parser.error(f"{', '.join(clash)}: set by the benchmark, leave it out after --")

    results: dict[str, Any] = {
        **machine.describe("time_to_accuracy.py", argv),
        "train_command": shlex.join(["cnnlab", "train", *train_args]),
        "target": args.target,
        "busy": args.busy,
        "timing": "whole process, start to exit (time.perf_counter around subprocess.run)",
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="tta-") as tmp:
        for seed in range(args.seeds):
            with machine.competitor(args.busy):
                run = one_run(train_args, seed, Path(tmp), args.timeout)
            results["runs"].append(run)
            if "error" in run:
                print(f"seed {seed}: FAILED after {run['wall_seconds']:.1f} s: {run['error']}")
            else:
                print(
                    f"seed {seed}: {run['wall_seconds']:.2f} s wall ({run['train_seconds']:.2f} s "
                    f"training), test accuracy {100 * run['test_accuracy']:.2f}%"
                )
    good = [r for r in results["runs"] if "error" not in r]
    accuracies = [r["test_accuracy"] for r in good]
    mean_acc = statistics.fmean(accuracies) if accuracies else None
    met = mean_acc is not None and mean_acc >= args.target and len(good) == args.seeds
    results.update(
        mean_accuracy=mean_acc,
        min_accuracy=min(accuracies) if accuracies else None,
        seeds_reaching_target=sum(a >= args.target for a in accuracies),
        median_wall_seconds=machine.median([r["wall_seconds"] for r in good]),
        median_train_seconds=machine.median([r["train_seconds"] for r in good]),
        target_met=met,
        load_average_end=machine.load_average(),
    )
    hw = results["hardware"]
    print(f"command: {results['command']}")
    print(f"train:   {results['train_command']} (--seed 0..{args.seeds - 1})")
    print(
        f"machine: {hw['cpu']}, {hw['cores']} cores; torch {results['versions']['torch']} "
        f"({results['torch_threads']} threads)"
    )
    if good:
        print(
            f"mean test accuracy {100 * mean_acc:.2f}% (min {100 * results['min_accuracy']:.2f}%, "
            f"{results['seeds_reaching_target']}/{len(good)} seeds ≥ {100 * args.target:.2f}%); "
            f"median wall time {results['median_wall_seconds']:.2f} s "
            f"(training {results['median_train_seconds']:.2f} s)"
        )
    failed = len(results["runs"]) - len(good)
    print(
        f"target {100 * args.target:.2f}%: {'MET' if met else 'NOT MET'}"
        + (f" ({failed} run(s) failed)" if failed else "")
    )
    if args.out:
        from cnnlab import atomic

        atomic.write_json(args.out, results)
        print(f"results: {args.out}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
