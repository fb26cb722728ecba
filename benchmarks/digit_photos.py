"""Digits in photos: how well runs read MNIST test digits photographed on paper.

MNIST *test* digits are rendered as phone photos (``photo_digits.py``: paper texture
and shading, lighting gradients, shadows, perspective tilt with the table showing, thin
pens and fat markers, blur, noise, JPEG quality 30-90, ruled lines, small digits
off-centre on a big canvas, chalk on a dark board), seeded, and read through the same
path as ``cnnlab predict`` (the picture's JPEG bytes -> ``prepare_digit``). Accuracy is
reported per condition next to the accuracy on *the same digits* in their MNIST form,
for each run given. Five-digit number photos (the same conditions, spacing and baseline
jitter) are read as ``cnnlab read`` does; a number counts only when every digit is right.

    python benchmarks/digit_photos.py /work/runs/seed000-5ep /work/runs/mnist-best-s0 \\
        --seeds 0 1 2 3 --per-condition 40 --numbers 500 --sheet docs/images

The JSON goes to ``benchmarks/results/<date>/digit_photos.json`` unless ``--out`` says.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import machine
import numpy as np
import torch
from photo_digits import CONDITIONS, Photo, photo_set
from PIL import Image, ImageDraw

from cnnlab.data import load_dataset, prepare_digit


def _predict(run: Any, images: np.ndarray) -> np.ndarray:
    """Predicted class indices for N×28×28 uint8 digits."""
    if len(images) == 0:
        return np.zeros(0, dtype=np.int64)
    probs = run.predict(torch.from_numpy(np.ascontiguousarray(images))[:, None])
    return probs.argmax(dim=1).numpy()


def _digit_results(run: Any, prepared: np.ndarray, photos: list[Photo], mnist: np.ndarray):
    """Per-condition accuracy on the photos and on the same digits' MNIST images."""
    labels = np.array([int(p.label) for p in photos])
    indices = np.array([p.indices[0] for p in photos])
    on_photos = _predict(run, prepared) == labels
    on_mnist = _predict(run, mnist[indices]) == labels
    conditions = np.array([p.condition for p in photos])
    rows = {}
    for condition in (*CONDITIONS, "all"):
        pick = conditions == condition if condition != "all" else np.ones(len(photos), bool)
        rows[condition] = {
            "images": int(pick.sum()),
            "photo_accuracy": float(on_photos[pick].mean()),
            "mnist_accuracy": float(on_mnist[pick].mean()),
        }
    return rows


def _number_results(
    run: Any, found: list[list[np.ndarray]], photos: list[Photo], mnist: np.ndarray
):
    """Whole-number accuracy of the number photos, overall and per condition, next to
    the share of numbers whose digits are all read right in their MNIST form."""
    right, plain, counted = {}, {}, {}
    wrong_count = 0
    for digits, photo in zip(found, photos, strict=True):
        read = ""
        if digits:
            read = "".join(run.classes[i] for i in _predict(run, np.stack(digits)))
        wrong_count += len(read) != len(photo.label)
        ok = read == photo.label
        plain_read = "".join(run.classes[i] for i in _predict(run, mnist[list(photo.indices)]))
        for key in (photo.condition, "all"):
            right[key] = right.get(key, 0) + ok
            plain[key] = plain.get(key, 0) + (plain_read == photo.label)
            counted[key] = counted.get(key, 0) + 1
    rows = {
        k: {
            "numbers": counted[k],
            "accuracy": right[k] / counted[k],
            "mnist_form_accuracy": plain[k] / counted[k],
        }
        for k in counted
    }
    rows["all"]["wrong_digit_count"] = wrong_count
    return rows


def _tile(data: bytes, side: int) -> Image.Image:
    img = Image.open(io.BytesIO(data)).convert("L")
    img.thumbnail((side, side))
    tile = Image.new("L", (side, side), 255)
    tile.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return tile


def contact_sheet(photos: list[Photo], prepared: np.ndarray, path: Path, per_row: int = 4) -> None:
    """One row per condition: ``per_row`` photos, each with the 28×28 image prepared."""
    side, label_w = 96, 110
    sheet = Image.new("L", (label_w + per_row * 2 * side, len(CONDITIONS) * side), 255)
    draw = ImageDraw.Draw(sheet)
    for r, condition in enumerate(CONDITIONS):
        draw.text((6, r * side + side // 2 - 6), condition, fill=0)
        picks = [i for i, p in enumerate(photos) if p.condition == condition][:per_row]
        for c, i in enumerate(picks):
            x = label_w + c * 2 * side
            sheet.paste(_tile(photos[i].data, side), (x, r * side))
            big = Image.fromarray(prepared[i]).resize((side, side), Image.Resampling.NEAREST)
            sheet.paste(big, (x + side, r * side))
    sheet.save(path)


def stages_figure(data: bytes, path: Path) -> None:
    """The preparation stages of one photo side by side, with their names."""
    from cnnlab.data.prepare import prepare_steps

    steps = prepare_steps(data)
    side = 150
    names = list(steps.stages)
    sheet = Image.new("L", (len(names) * side, side + 18), 255)
    draw = ImageDraw.Draw(sheet)
    for i, name in enumerate(names):
        img = Image.fromarray(steps.stages[name])
        resample = Image.Resampling.NEAREST if name == "prepared" else Image.Resampling.BILINEAR
        if max(img.size) < side:
            img = img.resize(
                (side * img.width // max(img.size), side * img.height // max(img.size)), resample
            )
        img.thumbnail((side - 4, side - 4))
        sheet.paste(img, (i * side + (side - img.width) // 2, 18 + (side - 18 - img.height) // 2))
        draw.text((i * side + 4, 2), name, fill=0)
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="digit run folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--per-condition", type=int, default=40, help="per condition and seed")
    parser.add_argument("--numbers", type=int, default=500, help="number photos in all")
    parser.add_argument("--out", type=Path, help="JSON file (default: results/<date>/...)")
    parser.add_argument("--sheet", type=Path, help="write the figures (PNG) in this folder")
    args = parser.parse_args(argv)

    from cnnlab.runs import load_run

    test = load_dataset("mnist", "test", download=False)
    mnist = test.images[:, 0].numpy()
    labels = test.labels.numpy()
    photos: list[Photo] = []
    numbers: list[Photo] = []
    per_seed = -(-args.numbers // len(args.seeds))
    start = time.perf_counter()
    for seed in args.seeds:
        d, n = photo_set(mnist, labels, seed, args.per_condition, per_seed)
        photos += d
        numbers += n
    numbers = numbers[: args.numbers]
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    prepared = np.stack([prepare_digit(p.data) for p in photos])
    prepare_ms = (time.perf_counter() - start) * 1000 / len(photos)
    found: list[list[np.ndarray]] = []
    start = time.perf_counter()
    if numbers:
        from cnnlab.read import find_digits

        found = [[digit for digit, _ in find_digits(p.data)] for p in numbers]
    find_ms = (time.perf_counter() - start) * 1000 / max(1, len(numbers))
    print(
        f"{len(photos)} digit photos and {len(numbers)} number photos from seeds {args.seeds} "
        f"(rendered in {render_s:.0f} s); preparation {prepare_ms:.1f} ms per digit photo, "
        f"{find_ms:.1f} ms per number photo",
        file=sys.stderr,
    )
    results: dict[str, Any] = {
        **machine.describe("digit_photos.py", argv),
        "seeds": args.seeds,
        "per_condition": args.per_condition,
        "digit_photos": len(photos),
        "number_photos": len(numbers),
        "prepare_ms_per_digit_photo": round(prepare_ms, 2),
        "find_ms_per_number_photo": round(find_ms, 2),
        "runs": {},
    }
    for folder in args.runs:
        run = load_run(folder)
        entry: dict[str, Any] = {"digits": _digit_results(run, prepared, photos, mnist)}
        if numbers:
            entry["numbers"] = _number_results(run, found, numbers, mnist)
        results["runs"][folder.name] = entry
        print(f"\n{folder.name}: condition   photos  MNIST form  (images)")
        for condition, row in entry["digits"].items():
            print(
                f"  {condition:14s} {100 * row['photo_accuracy']:6.2f}%  "
                f"{100 * row['mnist_accuracy']:6.2f}%  ({row['images']})"
            )
        if numbers:
            row = entry["numbers"]["all"]
            print(
                f"  five-digit numbers read whole: {100 * row['accuracy']:.1f}% of "
                f"{row['numbers']} (all five right in MNIST form: "
                f"{100 * row['mnist_form_accuracy']:.1f}%; wrong digit count: "
                f"{row['wrong_digit_count']})"
            )
    results["load_average_end"] = machine.load_average()
    out = args.out or (
        Path(__file__).parent / "results" / datetime.date.today().isoformat() / "digit_photos.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}", file=sys.stderr)
    if args.sheet:
        args.sheet.mkdir(parents=True, exist_ok=True)
        contact_sheet(photos, prepared, args.sheet / "digit-photos-conditions.png")
        ruled = next(p for p in photos if p.condition == "mixed")
        stages_figure(ruled.data, args.sheet / "digit-photos-stages.png")
        if numbers:
            (args.sheet / "digit-photos-number.jpg").write_bytes(numbers[2].data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
