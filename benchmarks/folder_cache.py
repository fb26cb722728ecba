"""Start-up of ``cnnlab train --data FOLDER``: decoding a folder of JPEGs into the cache,
then reading the cache; and, with ``--large``, one epoch on a data set larger than the
memory it is allowed, with its peak resident memory against the cache's size.

Commands (each measured process is a fresh ``python -m cnnlab`` of this checkout's
``src``; results go to ``benchmarks/results/<date>/`` unless ``--out`` says otherwise):

    # folders of 10,000 and 100,000 32×32 JPEGs (generated once under --work, reused)
    python benchmarks/folder_cache.py --runs 3
    # the same with the cache read batch by batch (CNNLAB_STREAM_ABOVE=0)
    python benchmarks/folder_cache.py --runs 3 --stream
    # a quick check of the script itself
    python benchmarks/folder_cache.py --sizes 200 --runs 1 --out /tmp/folder_cache.json
    # another checkout's code, to compare (e.g. before the cache was streamed)
    python benchmarks/folder_cache.py --runs 3 --src /path/to/other/checkout/src
    # CIFAR-10's JPEGs at --image-size 170 (a cache of about 5.2 GB; checks the free disk
    # first), one epoch of seed000-cnn read from the memory-mapped cache, peak RSS
    python benchmarks/folder_cache.py --large
    python benchmarks/folder_cache.py --large --data /tmp/some-folder --image-size 48 --steps 20

Start-up (default mode): for each folder size and each of ``--runs`` repetitions, with no
decoded folder in the cache (``CNNLAB_CACHE`` under ``--work``; an unmeasured warm-up run
first builds the native kernels kept there), the command (``--command train``:
``cnnlab train --data F --model seed000-cnn --image-size 32 --steps 1`` into a temporary
run folder, which also tests on the held-out fifth; ``--command load``: a Python process
that loads the folder's splits and nothing else) runs twice: the first run decodes every
file and writes the cache, the second reads it. Reported: whole-process wall seconds and
peak resident memory (``ru_maxrss`` of the process and the worker processes it waited
for) of each, medians over the repetitions. The JPEGs are generated just before, so the
first run reads them from the page cache: it measures decoding, not a cold disk.
``baseline_tiny_folder`` is the same training process on 40 images: the time and memory
that torch and cnnlab take whatever the data.

``--large``: the first process only loads the folder (decodes it into the cache: its time
and peak memory), the second trains ``--epochs 1`` (or ``--steps N``) with
``CNNLAB_STREAM_ABOVE=0``, so the images are read from the memory-mapped cache batch by
batch whatever the machine's memory, and reports its peak RSS beside the size of the
cache's ``images.npy`` files. ``--keep-cache`` leaves the large cache in place for
another run (it is otherwise removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe, load_average
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
#: Written last in a generated folder: a folder without it is generated again.
COMPLETE = ".complete"
LOAD = (
    "import sys; from cnnlab.data.folders import FolderSettings, load_folder; "
    "s = int(sys.argv[2]); train, test = load_folder(sys.argv[1], FolderSettings(size=(s, s))); "
    "print(len(train), len(test), type(train.images).__name__)"
)


def make_folder(folder: Path, count: int, side: int = 32) -> Path:
    """``count`` JPEGs of ``side`` pixels in ``CLASSES`` class folders (reused when there)."""
    if (folder / COMPLETE).is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    start = time.perf_counter()
    for i in range(count):
        c = i % CLASSES
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        # a smooth colour gradient with noise: a JPEG of a typical photo's size per pixel
        colour = rng.uniform(0, 255, (3, 1, 1)).astype(np.float32)
        slope = rng.uniform(-80, 80, (3, 2, 1, 1)).astype(np.float32)
        x = colour + slope[:, 0] * yy + slope[:, 1] * xx + rng.normal(0, 12, (3, side, side))
        img = np.clip(x, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        Image.fromarray(img).save(folder / f"class{c}" / f"{i:07d}.jpg", quality=90)
    (folder / COMPLETE).write_text(f"{count}\n")
    print(f"generated {count:,} JPEGs in {folder} in {time.perf_counter() - start:.1f} s")
    return folder


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process: its wall seconds, peak RSS and exit status."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(cmd)} exited with {code}:\n{tail}")
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return {"seconds": round(seconds, 3), "peak_rss_bytes": usage.ru_maxrss * scale}


def child_env(cache: Path, stream: bool, src: Path) -> dict[str, str]:
    """``src`` (this checkout's, or ``--src``) first on the path, ``cache`` as the user
    cache, and the images read batch by batch when ``stream``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    env["CNNLAB_CACHE"] = str(cache)
    if stream:
        env["CNNLAB_STREAM_ABOVE"] = "0"
    else:
        env.pop("CNNLAB_STREAM_ABOVE", None)
    return env


def command(kind: str, folder: Path, size: int, run_dir: Path, threads: int | None) -> list[str]:
    """The measured command line."""
    if kind == "load":
        return [sys.executable, "-c", LOAD, str(folder), str(size)]
    cmd = [sys.executable, "-m", "cnnlab", "train", "--data", str(folder)]
    cmd += ["--model", "seed000-cnn", "--image-size", str(size), "--steps", "1", "--quiet"]
    cmd += ["--out", str(run_dir)]
    return cmd + (["--threads", str(threads)] if threads else [])


def warm_up(work: Path, cache: Path, src: Path, threads: int | None) -> dict[str, Any]:
    """One run on a tiny folder, so that the native kernels (built into the user cache on
    first use) are built before anything is timed; its entry is removed. Then a second
    one, whose peak RSS is the baseline of a training process (torch and all)."""
    folder = make_folder(work / "jpeg-warm-up", 4 * CLASSES)
    env = child_env(cache, False, src)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        measure(command("train", folder, 32, Path(tmp) / "r0", threads), env, Path(tmp) / "log")
        base = measure(
            command("train", folder, 32, Path(tmp) / "r1", threads), env, Path(tmp) / "log"
        )
    clear_entries(cache)
    return {"images": 4 * CLASSES, **base}


def clear_entries(cache: Path) -> None:
    """Remove every decoded folder from ``cache`` (the kernels stay)."""
    shutil.rmtree(cache / "folders", ignore_errors=True)


def cache_bytes(cache: Path) -> int:
    """The size of the decoded images in the cache (every entry's ``images.npy``)."""
    return sum(p.stat().st_size for p in (cache / "folders").glob("*/images.npy"))


def startup(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """First (decoding) and second (cache) runs for each folder size."""
    sizes: dict[str, Any] = {}
    cache = work / "cache"
    baseline = warm_up(work, cache, args.src, args.threads)
    env = child_env(cache, args.stream, args.src)
    for count in args.sizes:
        folder = make_folder(work / f"jpeg-{count}", count)
        first: list[dict[str, Any]] = []
        second: list[dict[str, Any]] = []
        rows_bytes = 0
        for i in range(args.runs):
            clear_entries(cache)
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                for n, rows in enumerate((first, second)):
                    cmd = command(args.command, folder, 32, Path(tmp) / f"run{n}", args.threads)
                    rows.append(measure(cmd, env, Path(tmp) / "log.txt"))
            rows_bytes = cache_bytes(cache)
            clear_entries(cache)
            print(
                f"{count:>7,} JPEGs, run {i + 1}: first {first[-1]['seconds']:.2f} s, "
                f"second {second[-1]['seconds']:.2f} s"
            )
        sizes[str(count)] = {
            "folder": str(folder),
            "cache_bytes": rows_bytes,
            "first": first,
            "second": second,
            "first_median_seconds": statistics.median(r["seconds"] for r in first),
            "second_median_seconds": statistics.median(r["seconds"] for r in second),
            "first_median_peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in first),
            "second_median_peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in second),
        }
    return {
        "mode": "startup",
        "command_kind": args.command,
        "stream": args.stream,
        "baseline_tiny_folder": baseline,
        "sizes": sizes,
    }


def image_count(folder: Path) -> int:
    """Files below ``folder`` (an upper bound of its images, for the disk estimate)."""
    return sum(len(files) for _, _, files in os.walk(folder))


def large(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Decode a large folder into the cache, then train from the memory-mapped cache."""
    folder = Path(args.data).expanduser().resolve()
    if not folder.is_dir():
        raise SystemExit(f"--data {folder}: no such folder")
    cache = work / "cache-large"
    baseline = warm_up(work, cache, args.src, args.threads)
    files = image_count(folder)
    need = files * 3 * args.image_size**2
    free = shutil.disk_usage(work).free
    print(f"{files:,} files: a cache of about {need / 1e9:.1f} GB; {free / 1e9:.1f} GB free")
    have = cache_bytes(cache) if cache.is_dir() else 0
    if free + have < 1.2 * need + (2 << 30):
        raise SystemExit(f"not enough free disk under {work} for a {need / 1e9:.1f} GB cache")
    env = child_env(cache, True, args.src)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        decode = measure(
            [sys.executable, "-c", LOAD, str(folder), str(args.image_size)],
            env,
            Path(tmp) / "decode.txt",
        )
        size = cache_bytes(cache)
        print(f"decoded into {size / 1e9:.2f} GB in {decode['seconds']:.0f} s")
        cmd = [sys.executable, "-m", "cnnlab", "train", "--data", str(folder)]
        cmd += ["--model", args.model, "--image-size", str(args.image_size), "--quiet"]
        cmd += ["--steps", str(args.steps)] if args.steps else ["--epochs", "1"]
        cmd += ["--out", str(Path(tmp) / "run")]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        train = measure(cmd, env, Path(tmp) / "train.txt")
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    if not args.keep_cache:
        clear_entries(cache)
    print(
        f"trained in {train['seconds']:.0f} s, peak RSS {train['peak_rss_bytes'] / 1e9:.2f} GB "
        f"for a {size / 1e9:.2f} GB cache"
    )
    return {
        "mode": "large",
        "folder": str(folder),
        "image_size": args.image_size,
        "model": args.model,
        "length": {"steps": args.steps} if args.steps else {"epochs": 1},
        "files": files,
        "cache_bytes": size,
        "baseline_tiny_folder": baseline,
        "decode": decode,
        "train": train,
        "train_peak_rss_fraction_of_cache": round(train["peak_rss_bytes"] / max(size, 1), 4),
        "train_steps": metrics.get("steps"),
        "train_seconds": metrics.get("train_seconds"),
        "test_accuracy": metrics.get("test_accuracy"),
        "test_samples": metrics.get("test_samples"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--command", choices=("train", "load"), default="train")
    parser.add_argument("--stream", action="store_true", help="read the cache batch by batch")
    parser.add_argument("--threads", type=int, help="--threads of the measured runs")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "cnnlab-folder-cache",
        help="where the generated folders and the caches go (outside the repository)",
    )
    parser.add_argument("--large", action="store_true", help="the larger-than-memory run")
    parser.add_argument("--data", default="/work/shared/datasets/cifar10-jpeg")
    parser.add_argument("--image-size", type=int, default=170)
    parser.add_argument("--model", default="seed000-cnn")
    parser.add_argument("--steps", type=int, help="train this many steps, not an epoch")
    parser.add_argument("--keep-cache", action="store_true")
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="the cnnlab sources measured (another checkout's src/, to compare)",
    )
    parser.add_argument("--out", type=Path, help="the JSON file (default: results/<date>/)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.src = args.src.expanduser().resolve()
    work = args.work.expanduser().resolve()
    if work == ROOT or ROOT in work.parents:
        raise SystemExit(f"--work {work}: keep generated data outside the repository")
    work.mkdir(parents=True, exist_ok=True)
    results = describe("folder_cache.py")
    results["runs"] = 1 if args.large else args.runs
    results["measured_src"] = str(args.src)
    results.update(large(args, work) if args.large else startup(args, work))
    results["load_average_end"] = load_average()
    name = "folder_cache_large.json" if args.large else "folder_cache.json"
    out = args.out or ROOT / "benchmarks" / "results" / date.today().isoformat() / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
