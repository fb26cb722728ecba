"""Seconds per training epoch: cnnlab against the tutorials' own Keras code, run by run.

For each model, with its tutorial's batch size, ``--runs`` times:

1. ``python -m cnnlab train --model M --epochs E --batch-size B --json --quiet --out TMP``
   in this interpreter; the per-epoch ``seconds`` come from the run's ``history.json``;
2. ``benchmarks/keras/seedNNN.py --epochs E`` under TensorFlow's interpreter
   (``--keras-python``); the per-epoch seconds from its JSON line.

Runs alternate (cnnlab 1, Keras 1, cnnlab 2, Keras 2, …) so that whatever else the
machine is doing hits both. Both frameworks time the training steps of an epoch only
(validation excluded) with ``time.perf_counter``. Reported per model and framework:
the median of the first epochs (it includes Keras' graph tracing and both frameworks'
warm-up) and, separately, the median of every later epoch of every run; the ratio
cnnlab/Keras is taken on the later epochs (below 1: cnnlab is faster).

``--busy`` runs one CPU-bound competitor (a shell busy loop) beside every
measured process, cnnlab's and Keras' alike: a learner's laptop is never idle.

``--full`` instead trains each tutorial's whole schedule once per framework (5 epochs
for seed000 and seed004, 10 for seed002, 20,000 steps for seed003) and reports the test
accuracy of each next to the timing. ``--limit N`` writes the first N training and test
images to a temporary data folder that both frameworks read (for smoke tests).

    python benchmarks/epoch_time.py --runs 3 --epochs 2 --out epoch_time.json
    python benchmarks/epoch_time.py --runs 3 --epochs 2 --busy --out epoch_time_busy.json
    python benchmarks/epoch_time.py --full --out epoch_time_full.json
    python benchmarks/epoch_time.py --runs 1 --epochs 2 --limit 2000 --models seed000-cnn
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
from typing import Any

import machine

HERE = Path(__file__).resolve().parent

# model id → (Keras script, the tutorial's batch size, its whole schedule for --full)
MODELS: dict[str, tuple[str, int, str]] = {
    "seed000-cnn": ("seed000.py", 64, "5 epochs"),
    "seed002-cnn": ("seed002.py", 200, "10 epochs"),
    "seed003-deep-mnist": ("seed003.py", 50, "20,000 steps"),
    "seed004-lenet-max": ("seed004.py", 64, "5 epochs"),
}
DEFAULT_KERAS_PYTHON = str(HERE.parent / ".tfvenv" / "bin" / "python")  # make keras-venv


def tail(text: str, lines: int = 5) -> str:
    """The last few lines of a process's output, for an error report."""
    return "\n".join(text.strip().splitlines()[-lines:])


def run_process(
    command: list[str], timeout: float | None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``command``; wall time from start to exit, stdout, stderr, status."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        return {
            "ok": False,
            "wall_seconds": time.perf_counter() - start,
            "error": f"timed out after {timeout:g} s",
            "stderr": (exc.stderr or b"").decode(errors="replace")
            if isinstance(exc.stderr, bytes)
            else (exc.stderr or ""),
        }
    wall = time.perf_counter() - start
    result = {"ok": proc.returncode == 0, "wall_seconds": wall, "returncode": proc.returncode}
    result["stdout"], result["stderr"] = proc.stdout, proc.stderr
    if proc.returncode != 0:
        result["error"] = f"exit status {proc.returncode}: {tail(proc.stderr or proc.stdout)}"
    return result


def last_json_line(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_cnnlab(
    model: str, batch: int, args: argparse.Namespace, data_dir: str | None, work: Path
) -> dict[str, Any]:
    """One ``cnnlab train`` run; per-epoch seconds from its history.json."""
    out = Path(tempfile.mkdtemp(prefix=f"{model}-", dir=work))
    command = [sys.executable, "-m", "cnnlab", "train", "--model", model]
    if not args.full:
        command += ["--epochs", str(args.epochs)]
    command += ["--batch-size", str(batch), "--device", args.device, "--seed", str(args.seed)]
    command += ["--json", "--quiet", "--out", str(out / "run")]
    if data_dir:
        command += ["--data-dir", data_dir]
    if args.threads:
        command += ["--threads", str(args.threads)]
    proc = run_process(command, args.timeout)
    result: dict[str, Any] = {"framework": "cnnlab", "wall_seconds": round(proc["wall_seconds"], 3)}
    if not proc["ok"]:
        return {**result, "error": proc["error"]}
    metrics = last_json_line(proc["stdout"])
    try:
        history = json.loads((out / "run" / "history.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {**result, "error": f"no history.json: {exc}"}
    if not metrics:
        return {**result, "error": "no JSON line from cnnlab train"}
    return {
        **result,
        "epoch_seconds": [round(float(row["seconds"]), 4) for row in history],
        "test_accuracy": metrics.get("test_accuracy"),
        "test_loss": metrics.get("test_loss"),
        "steps": metrics.get("steps"),
        "device": metrics.get("device"),
    }


def run_keras(
    model: str, script: str, args: argparse.Namespace, data_dir: str | None
) -> dict[str, Any]:
    """One run of the tutorial's Keras script; its JSON line, plus the process wall time."""
    command = [args.keras_python, str(HERE / "keras" / script), "--seed", str(args.seed)]
    if not args.full:
        command += ["--epochs", str(args.epochs)]
    if data_dir:
        command += ["--data-dir", data_dir]
    if args.threads:
        command += ["--threads", str(args.threads)]
    proc = run_process(command, args.timeout)
    result: dict[str, Any] = {"framework": "keras", "wall_seconds": round(proc["wall_seconds"], 3)}
    if not proc["ok"]:
        return {**result, "error": proc["error"]}
    report = last_json_line(proc["stdout"])
    if not report or "epoch_seconds" not in report:
        return {**result, "error": f"no JSON line from {script}: {tail(proc['stdout'])}"}
    if report.get("model") != model:
        return {**result, "error": f"{script} reported model {report.get('model')!r}"}
    return {**result, **report}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the first epochs and of all later epochs over the successful runs."""
    good = [r for r in runs if "epoch_seconds" in r and r["epoch_seconds"]]
    first = [r["epoch_seconds"][0] for r in good]
    later = [s for r in good for s in r["epoch_seconds"][1:]]
    accuracy = [r["test_accuracy"] for r in good if r.get("test_accuracy") is not None]
    return {
        "runs": len(good),
        "failed": len(runs) - len(good),
        "first_epoch_median_s": machine.median(first),
        "later_epochs_median_s": machine.median(later),
        "later_epochs_n": len(later),
        "all_epochs_median_s": machine.median([s for r in good for s in r["epoch_seconds"]]),
        "process_wall_median_s": machine.median([r["wall_seconds"] for r in good]),
        "test_accuracy": machine.median(accuracy),
    }


def make_data_folder(limit: int, data_dir: str | None, work: Path) -> str:
    """Write the first ``limit`` MNIST train and test images as IDX files under ``work``."""
    from cnnlab.data import load_dataset, write_idx

    folder = work / "data" / "mnist"
    folder.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        data = load_dataset("mnist", split, data_dir)
        n = min(limit, len(data))
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", data.images[:n, 0].numpy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", data.labels[:n].numpy().astype("u1"))
    return str(work / "data")


def table(results: dict[str, Any], full: bool, keras: bool) -> str:
    """The markdown table of the summary."""
    head = ["model", "batch", "cnnlab 1st epoch s", "cnnlab later epochs s"]
    if keras:
        head += ["Keras 1st epoch s", "Keras later epochs s", "cnnlab/Keras (later epochs)"]
    if full:
        head += ["cnnlab test acc"] + (["Keras test acc"] if keras else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, entry in results["models"].items():
        c, k = entry["cnnlab"], entry.get("keras", {})
        row = [model, str(entry["batch_size"])]
        row += [machine.fmt(c["first_epoch_median_s"]), machine.fmt(c["later_epochs_median_s"])]
        if keras:
            row += [machine.fmt(k["first_epoch_median_s"]), machine.fmt(k["later_epochs_median_s"])]
            ratio = machine.fmt(entry.get("ratio_cnnlab_keras"), 3)
            if entry.get("ratio_of") == "all_epochs_median_s" and ratio != "—":
                ratio += " (all epochs)"
            row.append(ratio)
        if full:
            for side in [c] + ([k] if keras else []):
                acc = side["test_accuracy"]
                row.append("—" if acc is None else f"{100 * acc:.2f}%")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per framework (3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timing run (2)")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})"
    )
    parser.add_argument(
        "--keras-python",
        default=os.environ.get("CNNLAB_KERAS_PYTHON", DEFAULT_KERAS_PYTHON),
        help=f"interpreter with TensorFlow (default $CNNLAB_KERAS_PYTHON or {DEFAULT_KERAS_PYTHON})",
    )
    parser.add_argument("--skip-keras", action="store_true", help="time cnnlab only")
    parser.add_argument(
        "--full",
        action="store_true",
        help="train each tutorial's whole schedule once per framework; report test accuracy",
    )
    parser.add_argument("--data-dir", help="folder holding mnist/*.gz (default $CNNLAB_DATA)")
    parser.add_argument("--limit", type=int, help="use only the first N train and test images")
    parser.add_argument("--device", default="cpu", help="cnnlab's --device (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of run 1; run i adds i-1")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for both frameworks (cnnlab's --threads, TensorFlow's intra-op "
        "pool via the Keras scripts' --threads); default: each framework's own (cnnlab: auto)",
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="run a CPU-bound competitor (a shell busy loop) beside every measured process",
    )
    parser.add_argument("--timeout", type=float, help="seconds allowed per training process")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.runs < 1 or args.epochs < 1 or (args.limit is not None and args.limit < 10):
        parser.error("--runs and --epochs must be at least 1, --limit at least 10")
    if args.full:
        args.runs = 1
    keras = not args.skip_keras
    if keras and not Path(args.keras_python).exists():
        parser.error(
            f"no Keras interpreter at {args.keras_python}; give --keras-python or --skip-keras"
        )

    results: dict[str, Any] = {
        **machine.describe("epoch_time.py", argv),
        "settings": {
            "runs": args.runs,
            "epochs": None if args.full else args.epochs,
            "full": args.full,
            "limit": args.limit,
            "device": args.device,
            "threads": args.threads,
            "busy": args.busy,
            "keras_python": args.keras_python if keras else None,
        },
        "timing": "training steps of each epoch only (validation excluded), time.perf_counter; "
        "first epoch reported apart; later = median of epochs 2..E of all runs",
        "models": {},
    }
    failures = 0
    with tempfile.TemporaryDirectory(prefix="epoch-time-") as tmp:
        work = Path(tmp)
        data_dir = (
            make_data_folder(args.limit, args.data_dir, work) if args.limit else args.data_dir
        )
        for model in models:
            script, batch, schedule = MODELS[model]
            entry: dict[str, Any] = {
                "batch_size": batch,
                "schedule": schedule if args.full else None,
            }
            runs: dict[str, list[dict[str, Any]]] = {"cnnlab": [], "keras": []}
            for i in range(args.runs):
                run_args = argparse.Namespace(**{**vars(args), "seed": args.seed + i})
                sides = ["cnnlab", "keras"] if keras else ["cnnlab"]
                for name in sides:
                    with machine.competitor(args.busy):
                        if name == "cnnlab":
                            result = run_cnnlab(model, batch, run_args, data_dir, work)
                        else:
                            result = run_keras(model, script, run_args, data_dir)
                    runs[name].append(result)
                    shown = result.get("epoch_seconds") or result.get("error")
                    print(f"{model} {name} run {i + 1}/{args.runs}: {shown}", file=sys.stderr)
                    failures += "error" in result
            entry["cnnlab"] = summarise(runs["cnnlab"])
            entry["cnnlab"]["per_run"] = runs["cnnlab"]
            if keras:
                entry["keras"] = summarise(runs["keras"])
                entry["keras"]["per_run"] = runs["keras"]
                basis = "later_epochs_median_s"
                if entry["cnnlab"][basis] is None or entry["keras"][basis] is None:
                    basis = "all_epochs_median_s"  # one epoch per run: compare all epochs
                ck, kk = entry["cnnlab"][basis], entry["keras"][basis]
                entry["ratio_cnnlab_keras"] = ck / kk if ck and kk else None
                entry["ratio_of"] = basis
            results["models"][model] = entry
            results["load_average_end"] = machine.load_average()
            if args.out:  # after every model, so an interrupted benchmark keeps what it had
                from cnnlab import atomic

                atomic.write_json(args.out, results)

    results["table"] = table(results, args.full, keras)
    if args.out:
        from cnnlab import atomic

        atomic.write_json(args.out, results)
    hw = results["hardware"]
    print(f"command: {results['command']}")
    print(
        f"machine: {hw['cpu']}, {hw['cores']} cores; torch {results['versions']['torch']}"
        + (f"; Keras {_keras_versions(results)}" if keras else "")
    )
    threads = args.threads or f"torch {results['torch_threads']}, TensorFlow its default"
    print(f"threads: {threads}")
    epochs = "the tutorial's whole schedule" if args.full else f"{args.epochs} epochs"
    print(
        f"{args.runs} run(s) × {epochs} per framework; seconds per epoch, training steps only; "
        "'1st' is the median first epoch, 'later' the median of all later epochs; "
        "cnnlab/Keras below 1 means cnnlab is faster\n"
    )
    print(results["table"])
    if args.out:
        print(f"\nresults: {args.out}")
    if failures:
        print(f"{failures} run(s) failed; see 'error' in the results", file=sys.stderr)
    return 1 if failures else 0


def _keras_versions(results: dict[str, Any]) -> str:
    for entry in results["models"].values():
        for run in entry.get("keras", {}).get("per_run", []):
            if "keras_version" in run:
                return f"{run['keras_version']} on TensorFlow {run['tf_version']}"
    return "(no successful run)"


if __name__ == "__main__":
    sys.exit(main())
