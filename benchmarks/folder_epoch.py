"""A folder of photos, cnnlab against Keras' ``image_dataset_from_directory``: seconds
for the first epoch, for later epochs and for the whole process.

The same folder (``--data``: ``train/`` and ``test/`` class folders, or class folders),
the same network (cifar-net with ``--widths``), the same batch size and learning-rate
schedule (cifar-net's: batch 1024, ``triangle``), ``--runs`` times
in turn (cnnlab, Keras, cnnlab, ...) so that whatever else the machine does hits every
side:

1. ``python -m cnnlab train --data F --model cifar-net --arg widths=[...] --epochs E
   --batch-size B --schedule triangle --validation-split 0 --json --quiet --out TMP``
   with a *cold* cache:
   ``CNNLAB_CACHE`` is a fresh folder, so cnnlab decodes the folder first (the native
   kernels are copied in, already built, so "cold" means only that this folder was not
   decoded before);
2. ``benchmarks/keras/folder.py`` under TensorFlow's interpreter (``--keras-python``): the
   tutorial's ``image_dataset_from_directory(...).cache().prefetch(AUTOTUNE)`` pipeline,
   which decodes the JPEGs during its first epoch in every process;
3. the same cnnlab command with a *warm* cache: the folder that step 1 filled, so the
   decoded images are read back from disk.

Per-epoch seconds (training steps only, ``time.perf_counter``) come from cnnlab's
``history.json`` and from the Keras script's JSON line; the whole-process wall time is
measured here around each subprocess (interpreter start, imports, decoding, training
and the test evaluation). cnnlab decodes before its first epoch starts, Keras within
it: compare first epochs with that in mind, and the whole process for the total.
Every file of the folder is read once before the runs, so the OS's page cache holds
them for every side alike. By default cnnlab trains without augmentation
(``--augment none``) because the tutorial's pipeline has none; ``--cnnlab-augment
recipe`` keeps cifar-net's own shifts and flips. ``--precision`` passes cnnlab's
(default: cnnlab's own choice, bf16 where the CPU computes it natively; Keras stays in
float32). ``--busy`` runs one CPU-bound competitor beside every measured process, as
``epoch_time.py`` does. ``--limit N`` copies the first N files of every class into a
temporary folder outside the repository, for smoke tests.

    python benchmarks/folder_epoch.py --runs 3 --epochs 3 --out folder_epoch.json
    python benchmarks/folder_epoch.py --runs 3 --epochs 3 --busy --out folder_epoch_busy.json
    python benchmarks/folder_epoch.py --runs 1 --epochs 2 --limit 20   # smoke test

(``--data`` defaults to ``cifar10-jpeg/`` in a ``$CNNLAB_DATA`` folder; default widths
32,64,64, whose epoch on the full folder takes well under a minute on two cores.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import machine
from epoch_time import DEFAULT_KERAS_PYTHON, last_json_line, run_process, summarise, tail

HERE = Path(__file__).resolve().parent
SIDES = ("cnnlab-cold", "keras", "cnnlab-warm")
SPLITS = ("train", "test", "val")
CACHES = {
    "cnnlab-cold": "a fresh CNNLAB_CACHE (native kernels copied in): decodes the folder",
    "keras": "image_dataset_from_directory(...).cache().prefetch(AUTOTUNE): decodes "
    "during its first epoch, in every process",
    "cnnlab-warm": "the cache the cold run filled: reads the decoded folder back",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}  # what both frameworks read
#: cifar-net's recipe (CIFAR_TRAINING): given to both sides, so neither falls back to
#: a default of its own.
BATCH_SIZE, SCHEDULE = 1024, "triangle"


def default_data() -> str | None:
    """``cifar10-jpeg/`` in the first ``$CNNLAB_DATA`` folder that has it."""
    for root in filter(None, os.environ.get("CNNLAB_DATA", "").split(os.pathsep)):
        if (Path(root) / "cifar10-jpeg").is_dir():
            return str(Path(root) / "cifar10-jpeg")
    return None


def class_folders(folder: Path) -> list[tuple[Path, Path]]:
    """(class folder, its path relative to ``folder``) for each split's classes, or for
    the classes directly under ``folder`` when it has no train/ sub-folder."""
    splits = [folder / s for s in SPLITS if (folder / s).is_dir()]
    if not (folder / "train").is_dir():
        splits = [folder]
    return [
        (cls, cls.relative_to(folder))
        for split in splits
        for cls in sorted(p for p in split.iterdir() if p.is_dir())
    ]


def images_in(folder: Path) -> list[Path]:
    """The image files of a class folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def make_limited_folder(folder: Path, limit: int, work: Path) -> Path:
    """Copy the first ``limit`` images of every class (every split) under ``work``."""
    target = work / "limited" / folder.name
    for cls, rel in class_folders(folder):
        (target / rel).mkdir(parents=True)
        for image in images_in(cls)[:limit]:
            shutil.copy2(image, target / rel / image.name)
    return target


def read_all(folder: Path) -> tuple[int, int]:
    """Read every image once (so the page cache holds them); (files, bytes)."""
    files = size = 0
    for cls, _ in class_folders(folder):
        for image in images_in(cls):
            size += len(image.read_bytes())
            files += 1
    return files, size


def fresh_cache(work: Path, run: int) -> Path:
    """An empty ``CNNLAB_CACHE`` holding only the native kernels already built here, so a
    cold run decodes the folder but compiles nothing."""
    from cnnlab.cache import cache_dir

    cache = work / f"cache-{run}"
    cache.mkdir()
    kernels = cache_dir() / "kernels"
    if kernels.is_dir():
        shutil.copytree(kernels, cache / "kernels")
    return cache


def run_cnnlab(
    args: argparse.Namespace, data: Path, cache: Path, work: Path, seed: int
) -> dict[str, Any]:
    """One ``cnnlab train`` on the folder with ``CNNLAB_CACHE=cache``."""
    out = Path(tempfile.mkdtemp(prefix="cnnlab-", dir=work)) / "run"
    command = [sys.executable, "-m", "cnnlab", "train", "--data", str(data)]
    command += ["--model", "cifar-net", "--arg", f"widths=[{args.widths}]"]
    command += ["--image-size", str(args.image_size), "--resize", "squish"]  # Keras' resize
    command += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    command += [
        "--schedule",
        SCHEDULE,
        "--validation-split",
        "0",
        "--seed",
        str(seed),
        "--device",
        "cpu",
    ]
    if args.cnnlab_augment != "recipe":
        command += ["--augment", args.cnnlab_augment]
    if args.precision:
        command += ["--precision", args.precision]
    if args.threads:
        command += ["--threads", str(args.threads)]
    command += ["--json", "--quiet", "--out", str(out)]
    env = {**os.environ, "CNNLAB_CACHE": str(cache)}
    proc = run_process(command, args.timeout, env=env)
    result: dict[str, Any] = {"wall_seconds": round(proc["wall_seconds"], 3)}
    if not proc["ok"]:
        return {**result, "error": proc["error"]}
    metrics = last_json_line(proc["stdout"])
    if not metrics:
        return {**result, "error": f"no JSON line from cnnlab train: {tail(proc['stdout'])}"}
    try:
        history = json.loads((out / "history.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {**result, "error": f"no history.json: {exc}"}
    shutil.rmtree(out.parent, ignore_errors=True)
    return {
        **result,
        "epoch_seconds": [round(float(row["seconds"]), 4) for row in history],
        **{
            key: metrics.get(key)
            for key in ("test_accuracy", "test_loss", "steps", "precision", "native_kernels")
        },
    }


def run_keras(args: argparse.Namespace, data: Path, seed: int) -> dict[str, Any]:
    """One run of ``benchmarks/keras/folder.py``: its JSON line and the process wall time."""
    command = [args.keras_python, str(HERE / "keras" / "folder.py"), "--data", str(data)]
    command += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    command += [
        "--schedule",
        SCHEDULE,
        "--widths",
        args.widths,
        "--image-size",
        str(args.image_size),
    ]
    command += ["--seed", str(seed)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    proc = run_process(command, args.timeout)
    result: dict[str, Any] = {"wall_seconds": round(proc["wall_seconds"], 3)}
    if not proc["ok"]:
        return {**result, "error": proc["error"]}
    report = last_json_line(proc["stdout"])
    if not report or "epoch_seconds" not in report:
        return {**result, "error": f"no JSON line from keras/folder.py: {tail(proc['stdout'])}"}
    return {**result, **report}


def ratios(cnnlab: dict[str, Any], keras: dict[str, Any]) -> dict[str, float | None]:
    """cnnlab's medians over Keras' (below 1: cnnlab is faster)."""
    keys = ("first_epoch_median_s", "later_epochs_median_s", "process_wall_median_s")
    return {
        key.replace("_median_s", ""): (
            cnnlab[key] / keras[key] if cnnlab[key] and keras[key] else None
        )
        for key in keys
    }


def collect(results: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> None:
    """Summaries of the runs so far, cnnlab's ratios to Keras and the table, into
    ``results``."""
    results["sides"] = {
        side: {"cache": CACHES[side], **summarise(runs[side]), "per_run": runs[side]}
        for side in SIDES
    }
    keras = results["sides"]["keras"]
    results["ratios"] = {
        side: ratios(results["sides"][side], keras) for side in ("cnnlab-cold", "cnnlab-warm")
    }
    results["load_average_end"] = machine.load_average()
    results["table"] = table(results)


def table(results: dict[str, Any]) -> str:
    """The markdown table: one row per side, with cnnlab's ratios to Keras."""
    head = ["side", "1st epoch s", "later epochs s", "whole process s", "test acc"]
    head += ["cnnlab/Keras 1st", "later", "process"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = {"cnnlab-cold": "cnnlab, cold cache", "cnnlab-warm": "cnnlab, warm cache"}
    for side, entry in results["sides"].items():
        acc = entry["test_accuracy"]
        row = [names.get(side, "Keras"), machine.fmt(entry["first_epoch_median_s"])]
        row += [machine.fmt(entry["later_epochs_median_s"])]
        row += [machine.fmt(entry["process_wall_median_s"])]
        row.append("—" if acc is None else f"{100 * acc:.2f}%")
        ratio = results["ratios"].get(side, {})
        row += [
            machine.fmt(ratio.get(k), 3) for k in ("first_epoch", "later_epochs", "process_wall")
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; exits with a one-line message on a bad value."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default=default_data(), help="the folder (default $CNNLAB_DATA/cifar10-jpeg)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per side (3)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (3)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"batch size, both sides (default {BATCH_SIZE}, cifar-net's)",
    )
    parser.add_argument(
        "--widths", default="32,64,64", help="cifar-net's three widths, both sides (32,64,64)"
    )
    parser.add_argument("--image-size", type=int, default=32, help="image side, both sides (32)")
    parser.add_argument(
        "--cnnlab-augment",
        default="none",
        help="cnnlab's --augment; 'recipe' keeps cifar-net's own (default none, as Keras)",
    )
    parser.add_argument("--precision", help="cnnlab's --precision (default: cnnlab's auto)")
    parser.add_argument(
        "--keras-python",
        default=os.environ.get("CNNLAB_KERAS_PYTHON", DEFAULT_KERAS_PYTHON),
        help=f"interpreter with TensorFlow (default $CNNLAB_KERAS_PYTHON or {DEFAULT_KERAS_PYTHON})",
    )
    parser.add_argument("--limit", type=int, help="copy only the first N images of each class")
    parser.add_argument("--seed", type=int, default=0, help="seed of run 1; run i adds i-1")
    parser.add_argument("--threads", type=int, help="CPU threads for both (default: their own)")
    parser.add_argument(
        "--busy", action="store_true", help="a CPU-bound competitor beside every measured run"
    )
    parser.add_argument("--timeout", type=float, help="seconds allowed per training process")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for name in ("runs", "epochs", "batch_size", "image_size", "limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    widths = args.widths.split(",")
    if len(widths) != 3 or not all(w.strip().isdigit() and int(w) > 0 for w in widths):
        parser.error(f"--widths must be three whole numbers, got {args.widths!r}")
    args.widths = ",".join(w.strip() for w in widths)
    if not args.data or not Path(args.data).is_dir():
        parser.error(f"--data {args.data}: not a folder (give --data or set CNNLAB_DATA)")
    if not Path(args.keras_python).exists():
        parser.error(f"no Keras interpreter at {args.keras_python}; give --keras-python")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {
        **machine.describe("folder_epoch.py", argv),
        "settings": {
            "data": str(Path(args.data).resolve()),
            "limit": args.limit,
            "runs": args.runs,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "schedule": SCHEDULE,
            "widths": [int(w) for w in args.widths.split(",")],
            "image_size": args.image_size,
            "cnnlab_augment": args.cnnlab_augment,
            "cnnlab_precision": args.precision or "auto",
            "threads": args.threads,
            "busy": args.busy,
            "keras_python": args.keras_python,
        },
        "timing": "epochs: training steps only, time.perf_counter (cnnlab history.json, the "
        "Keras script's callback); process: wall time around each subprocess; first epoch "
        "apart, later = median of epochs 2..E of all runs",
    }
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="folder-epoch-") as tmp:
        work = Path(tmp)
        data = Path(args.data).resolve()
        if args.limit:
            data = make_limited_folder(data, args.limit, work)
        files, size = read_all(data)
        results["settings"]["files"] = files
        print(f"{data}: {files:,} images, {size / 1e6:.1f} MB read once", file=sys.stderr)
        for i in range(args.runs):
            seed = args.seed + i
            cache = fresh_cache(work, i)
            for side in SIDES:
                with machine.competitor(args.busy):
                    if side == "keras":
                        result = run_keras(args, data, seed)
                    else:
                        result = run_cnnlab(args, data, cache, work, seed)
                runs[side].append(result)
                shown = result.get("epoch_seconds") or result.get("error")
                wall = result["wall_seconds"]
                print(f"{side} run {i + 1}/{args.runs}: {shown}, {wall:.1f} s", file=sys.stderr)
                failures += "error" in result
            shutil.rmtree(cache, ignore_errors=True)  # the decoded folder: up to 200 MB
            collect(results, runs)
            if args.out:  # after every run, so an interrupted benchmark keeps what it had
                from cnnlab import atomic

                atomic.write_json(args.out, results)
    print_summary(results, args)
    if failures:
        print(f"{failures} run(s) failed; see 'error' in the results", file=sys.stderr)
    return 1 if failures else 0


def print_summary(results: dict[str, Any], args: argparse.Namespace) -> None:
    """The command, machine, settings and the table."""
    hw, s = results["hardware"], results["settings"]
    keras = next((r for r in results["sides"]["keras"]["per_run"] if "tf_version" in r), {})
    cnnlab = next((r for r in results["sides"]["cnnlab-cold"]["per_run"] if "precision" in r), {})
    print(f"command: {results['command']}")
    print(
        f"machine: {hw['cpu']}, {hw['cores']} cores; torch {results['versions']['torch']}; "
        f"Keras {keras.get('keras_version', '?')} on TensorFlow {keras.get('tf_version', '?')}"
    )
    print(
        f"data: {s['data']}"
        + (f" (first {s['limit']} per class)" if s["limit"] else "")
        + f", {s['files']:,} images; cifar-net widths {s['widths']}, batch {s['batch_size']}"
    )
    print(
        f"cnnlab: augment {s['cnnlab_augment']}, precision {cnnlab.get('precision', '?')}; "
        f"threads: {args.threads or 'each framework its default'}"
        + ("; a busy loop beside every run" if args.busy else "")
    )
    print(
        f"{args.runs} run(s) × {args.epochs} epochs per side; seconds per epoch (training "
        "steps only) and per process; below 1 means cnnlab is faster\n"
    )
    print(results["table"])
    if args.out:
        print(f"\nresults: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
